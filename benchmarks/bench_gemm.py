"""Benchmark graphc's gemm kernel against numpy (OpenBLAS), both on one thread.

    python benchmarks/bench_gemm.py [--seconds S] [--clock thread|wall] [--big]

Prints a markdown table: shape, variant, graphc GFLOP/s, numpy GFLOP/s, ratio, % of peak, and
the time of one call of each.

- Both run on the calling thread: numpy's BLAS is limited to one thread (threadpoolctl when
  installed, else OPENBLAS_NUM_THREADS=1 and friends, set before numpy is imported).
- Each kernel is timed in short batches that alternate with numpy's, for --seconds per shape,
  and the best batch counts. The default clock is the calling thread's CPU time, so time the OS
  gives to other processes on a busy machine does not count against either side.
- Peak: the GFLOP/s of a JIT-compiled loop of independent FMAs as wide as the kernels' vectors
  (codegen.target.vector_unit: 8 f32 lanes on AVX2, 16 on AVX-512), measured in the same run;
  with two FMA pipes that is 32 (AVX2) or 64 (AVX-512 with two 512-bit FMA units) FLOP per
  cycle. The kernels are built for the host's vector unit, as a compiled model's are.
- graphc is called through ctypes with the array addresses computed once, as the runtime does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # limit BLAS threads through the environment, before numpy is loaded
    threadpool_limits = None
    if any(os.environ.get(v) != "1" for v in _THREAD_VARS):
        if "numpy" in sys.modules:  # too late for this process: run again in a fresh one
            env = dict(os.environ, **{v: "1" for v in _THREAD_VARS})
            sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
        os.environ.update({v: "1" for v in _THREAD_VARS})

import contextlib
import ctypes
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import llvmlite
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from graphc.codegen.gemm import JitGemms, host_target_machine, optimize
from graphc.codegen.target import vector_unit

UNIT = vector_unit("native")  # the lanes and registers a compiled model's kernels use here


@dataclass(frozen=True)
class Case:
    m: int
    n: int
    k: int
    op: str  # nn, nt or tn
    what: str  # the product it stands for
    epilogue: bool = False

    @property
    def trans_a(self) -> bool:
        return self.op[0] == "t"

    @property
    def trans_b(self) -> bool:
        return self.op[1] == "t"

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k


def mlp_cases(batch: int, fan_in: int, fan_out: int) -> list[Case]:
    """The three products of a dense layer y = x @ w, x [batch, fan_in], w [fan_in, fan_out]."""
    return [
        Case(batch, fan_out, fan_in, "nn", "X.W"),
        Case(batch, fan_in, fan_out, "nt", "dY.W^T"),
        Case(fan_in, fan_out, batch, "tn", "X^T.dY"),
    ]


def cases(big: bool) -> list[Case]:
    out = []
    for n in (256, 512, 1024) + ((2048,) if big else ()):
        out += [Case(n, n, n, op, "square") for op in ("nn", "nt", "tn")]
    for fan_in, fan_out in ((784, 256), (256, 128), (128, 10)):
        out += mlp_cases(128, fan_in, fan_out)
    out.append(Case(128, 256, 784, "nn", "X.W + bias, relu", epilogue=True))
    out += mlp_cases(1, 784, 256)
    out.append(Case(4, 8, 2, "nn", "tiny"))
    return out


BIAS = np.linspace(-1.0, 1.0, 4096).astype(np.float32)


def bias_relu(b: ir.IRBuilder, acc: ir.Value, i: ir.Value, j: ir.Value) -> ir.Value:
    """max(0, acc + bias[j:j+W]), the bias loaded as a vector (or a scalar at the edge)."""
    elem = acc.type.element if isinstance(acc.type, ir.VectorType) else acc.type
    base = b.inttoptr(ir.Constant(ir.IntType(64), BIAS.ctypes.data), ir.PointerType())
    ptr = b.gep(base, [j], inbounds=True, source_etype=elem)
    x = b.fadd(acc, b.load(ptr, typ=acc.type, align=4))
    zero = ir.Constant(acc.type, None)
    return b.select(b.fcmp_ordered(">", x, zero), x, zero)


def config(case: Case) -> dict:
    epilogue = bias_relu if case.epilogue else None
    return {
        "trans_a": case.trans_a,
        "trans_b": case.trans_b,
        "epilogue": epilogue,
        "vector_width": UNIT.lanes,
        "registers": UNIT.registers,
        "fixed": {"N": case.n},  # as a model's layer has: the register tile follows N
    }


def clock(kind: str):
    return time.thread_time if kind == "thread" else time.perf_counter


def race(fns: list, seconds: float, now) -> list[float]:
    """Best seconds per call of each fn, timed in batches that alternate between them."""
    for f in fns:
        f()
    t0 = now()
    fns[0]()
    once = max(now() - t0, 1e-7)
    per_batch = max(1, int(0.01 / once))
    best = [float("inf")] * len(fns)
    deadline = time.perf_counter() + seconds
    while True:
        for n, f in enumerate(fns):
            t0 = now()
            for _ in range(per_batch):
                f()
            best[n] = min(best[n], (now() - t0) / per_batch)
        if time.perf_counter() > deadline:
            return best


def fma_peak(seconds: float, now, lanes: int | None = None) -> float:
    """GFLOP/s of 12 independent chains of `lanes`-lane f32 FMAs (default: the host's vector
    unit): the FMA pipes' throughput."""
    lanes = lanes or max(UNIT.lanes, 1)
    tm = host_target_machine()
    module = ir.Module(name="peak")
    module.triple, module.data_layout = tm.triple, str(tm.target_data)
    f32, i64 = ir.FloatType(), ir.IntType(64)
    v8 = ir.VectorType(f32, lanes)
    fma = ir.Function(module, ir.FunctionType(v8, [v8] * 3), name=f"llvm.fma.v{lanes}f32")
    fn = ir.Function(module, ir.FunctionType(f32, [i64, f32]), name="peak")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n, x = fn.args
    xv = b.insert_element(ir.Constant(v8, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    xv = b.shuffle_vector(
        xv, ir.Constant(v8, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes), None)
    )
    entry, head = b.block, fn.append_basic_block("head")
    body, done = fn.append_basic_block("body"), fn.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    accs = [b.phi(v8) for _ in range(12)]
    for a in accs:
        a.add_incoming(ir.Constant(v8, [1.0] * lanes), entry)
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    new = list(accs)
    for _ in range(4):  # 48 FMAs per trip
        new = [b.call(fma, [a, xv, xv]) for a in new]
    for a, v in zip(accs, new, strict=True):
        a.add_incoming(v, body)
    i.add_incoming(b.add(i, ir.Constant(i64, 1)), body)
    b.branch(head)
    b.position_at_end(done)
    total = accs[0]
    for a in accs[1:]:
        total = b.fadd(total, a)
    b.ret(b.extract_element(total, ir.Constant(ir.IntType(32), 0)))
    ref = optimize(module, tm)
    engine = llvm.create_mcjit_compiler(ref, tm)
    engine.finalize_object()
    peak = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float)(
        engine.get_function_address("peak")
    )
    trips = 200_000
    (best,) = race([lambda: peak(trips, 0.5)], seconds, now)
    return trips * 48 * lanes * 2 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per shape")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    parser.add_argument("--big", action="store_true", help="also 2048 x 2048 x 2048")
    args = parser.parse_args()
    now = clock(args.clock)
    limit = threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()
    with limit:
        run(cases(args.big), args.seconds, now, args.clock)


def calls(
    c: Case, fn: Callable[..., None], rng: np.random.Generator, work: int
) -> tuple[Callable, Callable]:
    """graphc's kernel (`work`: its work buffer's address) and numpy's equivalent on the same
    fresh operands (C written in place)."""
    a = rng.standard_normal((c.k, c.m) if c.trans_a else (c.m, c.k)).astype(np.float32)
    b = rng.standard_normal((c.n, c.k) if c.trans_b else (c.k, c.n)).astype(np.float32)
    out = np.zeros((c.m, c.n), np.float32)
    a_op, b_op = (a.T if c.trans_a else a), (b.T if c.trans_b else b)
    args = (c.m, c.n, c.k, a.ctypes.data, b.ctypes.data, out.ctypes.data, work)
    bias = BIAS[: c.n]

    def graphc_call() -> None:
        fn(*args)  # a, b and out stay alive in this closure

    def numpy_call() -> None:
        np.matmul(a_op, b_op, out=out)
        if c.epilogue:
            np.add(out, bias, out=out)
            np.maximum(out, 0.0, out=out)

    return graphc_call, numpy_call


def run(todo: list[Case], seconds: float, now, clock_name: str) -> None:
    peak = fma_peak(max(seconds, 0.5), now)
    t0 = time.perf_counter()
    names = {c: f"g{n}" for n, c in enumerate(todo)}
    kernels = JitGemms({names[c]: config(c) for c in todo})
    compile_s = time.perf_counter() - t0
    print(
        f"# graphc gemm vs numpy, f32, one thread ({platform.processor() or platform.machine()}, "
        f"{llvm.get_host_cpu_name()})\n"
    )
    print(
        f"- llvmlite {llvmlite.__version__}, numpy {np.__version__}; BLAS threads: "
        f"{'threadpoolctl' if threadpool_limits else 'OPENBLAS_NUM_THREADS=1'}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    print(
        f"- peak: {peak:.1f} GFLOP/s, measured with a loop of independent {UNIT.lanes}-lane FMAs "
        f"(the kernels' vectors: {UNIT.lanes} f32 lanes, {UNIT.registers} registers)"
    )
    print(
        f"- {clock_name} clock, best batch of {seconds:g} s per shape; compiling {len(todo)} "
        f"kernels took {compile_s:.1f} s\n"
    )
    print(
        "| shape (M x N x K) | variant | graphc GFLOP/s | numpy GFLOP/s | ratio | % of peak "
        "| graphc µs | numpy µs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for c in todo:
        g = kernels[names[c]]
        graphc_call, numpy_call = calls(c, g.fn, rng, g.work)
        t_graphc, t_numpy = race([graphc_call, numpy_call], seconds, now)
        g, n = c.flops / t_graphc / 1e9, c.flops / t_numpy / 1e9
        print(
            f"| {c.m} x {c.n} x {c.k} | {c.op} {c.what} | {g:.1f} | {n:.1f} | {g / n:.2f} | "
            f"{100 * g / peak:.0f}% | {t_graphc * 1e6:.1f} | {t_numpy * 1e6:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
