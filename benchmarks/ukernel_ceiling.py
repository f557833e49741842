"""How fast the GEMM's register-tile loop can run on this core: the ceiling of the microkernel.

    python benchmarks/ukernel_ceiling.py [--seconds S] [--kc KC]

For each register tile MR x NR (NR = NV vectors of the host's lanes), a JIT-compiled loop does
what codegen.gemm's microkernel does per k-step (NV vector loads of a packed B sliver, MR
broadcasts of A, MR * NV fused multiply-adds into register accumulators, two k-steps per trip)
over operands that stay in L1 (a KC x NR sliver of B, MR rows of KC values of A), then adds the
tile to a C tile, and repeats. Nothing is packed and nothing misses the L1, so the GFLOP/s
printed bound what any product with that tile can reach here; the peak column is
bench_gemm.fma_peak's loop of FMAs on registers alone, measured in the same run.

Two probes on the default tile say which loads cost: "B in registers" loads B's vectors once
(LLVM hoists the loop-invariant loads; only the broadcasts remain), "A in registers" the same
for A's values. Tiles that need more than the target's vector registers (MR * NV accumulators,
NV vectors of B, one broadcast) are skipped.

Measured (2-core Xeon, AVX-512, KVM, 1 thread, load 1.5-1.9, 2026-12-06 19:27-19:35 UTC; the
FMA-only peak 207-222 GFLOP/s within one run): with all loads, 6 x 64 (the default tile) runs at
174-191 GFLOP/s (79-86 % of that run's peak), 12 x 32 at 172-196, 8 x 48 at 169-187, 4 x 64 at
153-175, 12 x 16 (the 10-column tile) at 152-159 (72-74 %); the same 6 x 64 loop without B's
vector loads reaches 195-206 (93-96 %), without A's broadcasts 193-205 (92-94 %). So the loads
themselves, not the caches, hold the loop some 15 % under the FMA peak here, for every tile
and KC (128 and 384 alike). PyTorch's MKL sgemm on the same core: 160 GFLOP/s at 1024^3 (72 %
of 221.8). See benchmarks/README.md (the microkernel's ceiling).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
from llvmlite import ir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gemm import UNIT, fma_peak

from graphc.codegen.gemm import host_target_machine, optimize

F32, I64, I32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
PTR = ir.PointerType()
UNROLL = 2  # k-steps per trip, as the 6 x 64 microkernel


class _Loop:
    """for iv in 0..count (i64), carrying values through phis; body(iv, carried) -> carried."""

    def __init__(self, b: ir.IRBuilder, fn: ir.Function) -> None:
        self.b, self.fn = b, fn

    def run(self, count: ir.Value, carried: list[ir.Value], body) -> list[ir.Value]:
        b = self.b
        pre = b.block
        head, step, done = (self.fn.append_basic_block() for _ in range(3))
        b.branch(head)
        b.position_at_end(head)
        iv = b.phi(I64)
        iv.add_incoming(ir.Constant(I64, 0), pre)
        phis = [b.phi(c.type) for c in carried]
        for phi, c in zip(phis, carried, strict=True):
            phi.add_incoming(c, pre)
        b.cbranch(b.icmp_signed("<", iv, count), step, done)
        b.position_at_end(step)
        out = body(iv, phis)
        iv.add_incoming(b.add(iv, ir.Constant(I64, 1)), b.block)
        for phi, o in zip(phis, out, strict=True):
            phi.add_incoming(o, b.block)
        b.branch(head)
        b.position_at_end(done)
        return phis


def tile_loop(mr: int, nv: int, lanes: int, kc: int, hoist: str = "") -> tuple[object, object]:
    """JIT-compile `void ceiling(i64 reps, ptr A, ptr B, ptr C)`: reps times, an mr x nv*lanes
    tile accumulates kc rank-1 updates (A: mr rows of kc + 16 values, B: kc rows of nv*lanes)
    and is added to C. hoist "B" or "A": that operand's loads do not move with k."""
    tm = host_target_machine()
    module = ir.Module(name="ceiling")
    module.triple, module.data_layout = tm.triple, str(tm.target_data)
    vt = ir.VectorType(F32, lanes)
    fma = ir.Function(module, ir.FunctionType(vt, [vt] * 3), name=f"llvm.fmuladd.v{lanes}f32")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, PTR, PTR, PTR]), name="ceiling")
    reps, a_ptr, b_ptr, c_ptr = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    loop = _Loop(b, fn)
    c64 = lambda v: ir.Constant(I64, v)  # noqa: E731
    splat_mask = ir.Constant(ir.VectorType(I32, lanes), [0] * lanes)
    zero = ir.Constant(vt, [0.0] * lanes)

    def k_trip(trip: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
        acc = list(acc)
        for u in range(UNROLL):
            k = b.add(b.mul(trip, c64(UNROLL)), c64(u))
            kb = c64(0) if hoist == "B" else k
            ka = c64(0) if hoist == "A" else k
            bv = [
                b.load(
                    b.gep(
                        b_ptr, [b.add(b.mul(kb, c64(nv * lanes)), c64(v * lanes))], source_etype=F32
                    ),
                    typ=vt,
                    align=64,
                )
                for v in range(nv)
            ]
            for r in range(mr):
                s = b.load(
                    b.gep(a_ptr, [b.add(c64(r * (kc + 16)), ka)], source_etype=F32),
                    typ=F32,
                    align=4,
                )
                sv = b.insert_element(ir.Constant(vt, ir.Undefined), s, ir.Constant(I32, 0))
                sv = b.shuffle_vector(sv, ir.Constant(vt, ir.Undefined), splat_mask)
                for v in range(nv):
                    acc[r * nv + v] = b.call(fma, [sv, bv[v], acc[r * nv + v]])
        return acc

    def rep(_iv: ir.Value, _carried: list[ir.Value]) -> list[ir.Value]:
        acc = loop.run(c64(kc // UNROLL), [zero] * (mr * nv), k_trip)
        for n, v in enumerate(acc):
            p = b.gep(c_ptr, [c64(n * lanes)], source_etype=F32)
            b.store(b.fadd(v, b.load(p, typ=vt, align=64)), p, align=64)
        return []

    loop.run(reps, [], rep)
    b.ret_void()
    import llvmlite.binding as llvm

    ref = optimize(module, tm)
    engine = llvm.create_mcjit_compiler(ref, tm)
    engine.finalize_object()
    cfn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    return cfn(engine.get_function_address("ceiling")), engine


def gflops(mr: int, nv: int, lanes: int, kc: int, seconds: float, hoist: str = "") -> float:
    """Best GFLOP/s of 5 timed batches (wall clock) of the tile loop."""
    fn, _engine = tile_loop(mr, nv, lanes, kc, hoist)

    def aligned(n: int) -> tuple[np.ndarray, int]:
        buf = np.ones(n + 64, np.float32)
        return buf, buf.ctypes.data + (-buf.ctypes.data) % 64

    (a, ap), (bb, bp), (c, cp) = (
        aligned(mr * (kc + 16)),
        aligned(kc * nv * lanes),
        aligned(mr * nv * lanes),
    )
    flop = 2.0 * mr * nv * lanes * kc
    fn(10, ap, bp, cp)
    t0 = time.perf_counter()
    fn(10, ap, bp, cp)
    reps = max(1, int(seconds / 5 / max(time.perf_counter() - t0, 1e-7) * 10))
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        fn(reps, ap, bp, cp)
        best = max(best, flop * reps / (time.perf_counter() - t0) / 1e9)
    del a, bb, c
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="per tile (default 0.5)")
    ap.add_argument("--kc", type=int, default=128, help="k-steps per tile (default 128)")
    args = ap.parse_args()
    lanes, regs = max(UNIT.lanes, 1), UNIT.registers
    peak = fma_peak(args.seconds, time.perf_counter)
    print(
        f"# microkernel ceiling, 1 thread, {lanes} f32 lanes, {regs} vector registers, KC = {args.kc}"
    )
    print(f"# FMA-only peak (bench_gemm.fma_peak): {peak:.1f} GFLOP/s\n")
    print("| tile MR x NR | operands | GFLOP/s | % of peak |")
    print("|---|---|---|---|")
    tiles = [(6, 4), (12, 2), (8, 3), (4, 4), (6, 2), (12, 1)]
    for mr, nv in tiles:
        if mr * nv + nv + 1 > regs:
            continue
        g = gflops(mr, nv, lanes, args.kc, args.seconds)
        print(f"| {mr} x {nv * lanes} | A and B from L1 | {g:.1f} | {g / peak:.0%} |")
    mr, nv = (6, 4) if regs >= 6 * 4 + 5 else (6, 2)
    for hoist, what in (
        ("B", "B in registers (broadcasts only)"),
        ("A", "A in registers (B loads only)"),
    ):
        g = gflops(mr, nv, lanes, args.kc, args.seconds, hoist)
        print(f"| {mr} x {nv * lanes} | {what} | {g:.1f} | {g / peak:.0%} |")
    peak2 = fma_peak(args.seconds, time.perf_counter)
    print(f"\n# FMA-only peak again: {peak2:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
