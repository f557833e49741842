"""graphc.codegen.gemm: the matmul kernel C (=|+=) op(A) @ op(B), with a fused epilogue.

The packed path follows GotoBLAS and BLIS:

- K. Goto, R. van de Geijn, "Anatomy of high-performance matrix multiplication", ACM TOMS 34(3),
  2008.
- F. Van Zee, R. van de Geijn, "BLIS: a framework for rapidly instantiating BLAS functionality",
  ACM TOMS 41(3), 2015; T. M. Low et al., "Analytical modeling is enough for high-performance
  BLIS", ACM TOMS 43(2), 2016 (how MR, NR, KC, MC, NC follow from registers and caches).

```
for jc in 0..N step NC:                  # B panel, KC x NC, packed once: 256 KiB, in L2
  for pc in 0..K step KC:                #   pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide slivers
    for ic in 0..M step MC:              #   pack op(A)[ic:ic+MC, pc:pc+KC] into MR-tall slivers
      for jr in 0..NC step NR:           #     one KC x NR sliver of B stays in L1
        for ir in 0..MC step MR:         #       microkernel: an MR x NR tile of C in registers,
          C[ir:ir+MR, jr:jr+NR] (+)= A~B~ #       KC rank-1 updates with fused multiply-adds
```

- The register tile is MR x (NV * LANES) with MR = 6 and NV = 2: 12 accumulators, two B vectors
  and one broadcast A value fit the 16 vector registers of AVX2 (6 x 16 for f32) or SSE (6 x 8).
  On AVX-512's 32 registers the tile follows N (Blocking.for_dtype): 6 x 64 for wide products,
  12 x 16 for a 10-column output layer.
- Transposes cost nothing in the loop nest: they change only how the packing routines read A
  and B (a contiguous copy along x, or LANES x LANES in-register transposes along k). Packing
  pads edge slivers with zeros, so along N the microkernel always computes a whole tile and
  only the store looks at the edges (masked loads in packing, scalar columns at the right edge
  of C). Along M, a panel's last mc % MR rows run a tile of their own height (edge_heights:
  2 or 4 rows of a 6-row tile), not MR rows of which the rest would be thrown away (a batch
  of 32 = 5 * 6 + 2 rows computed 36).
- The microkernel is a function of its own per register tile (and per way of reading A: rows
  contiguous along k, or columns), shared by every product of a module, with M, N, K, the
  strides and the edges as arguments; it runs a whole panel (MC rows of C, one sliver of B) per
  call, so the call costs little. It stores plain sums (+ C_old); the epilogue is a helper of
  each GEMM that runs on the panel just stored (in L1), once, after the last KC block. The C
  tile is prefetched when the microkernel starts it, so the read-modify-write between KC
  blocks does not stall.
- When N spans at most A_IN_PLACE_MAX_SLIVERS slivers, packing A would not pay (each value is
  used once or twice): the microkernel reads A where it lies. So it does for A stored [K, M]
  with K at most A_IN_PLACE_SHALLOW_K (a weight gradient at a small batch) up to
  A_IN_PLACE_SHALLOW_SLIVERS slivers: its K rows stay in L1.

Small M skips packing altogether (the direct path, M <= Blocking.direct_max_m):

- nn and tn: 2-row register tiles read A and B where they lie, over all of K; a single row
  (batch-1 inference, a GEMV) keeps up to 16 vectors of C's row in registers over all of K
  when N and K are built in and the row fits one register tile (gemv_tiles_take: N <=
  GEMV_TILES_MAX_N, 256 f32 columns with AVX-512, 64 with AVX2's 16 registers; emit_gemv_tiles:
  B read once, in the order it lies), else streams B row after row into C's row in memory
  (emit_gemv).
- nt: each C element is a dot product of two rows that are contiguous in K.

f64 uses only the direct path by default: it serves checks, not speed, and compiles in a third of
the time (pass blocking=Blocking(4) for the packed path). The kernel is split into
never-inlined helper functions to keep LLVM's work small: what depends only on the tile, the
transposes and the element type (microkernels, packing, the direct paths, which store plain
products) is shared by all GEMMs of a module; each GEMM adds its loop nest, its epilogue and,
for M = 1 with N and K built in, its own GEMV. Compile time follows the code's size and how
much of it LLVM optimizes: with one GEMM per shape and everything inlined, the 784-256-128-10
Adam step's six products took 0.66 s of LLVM time (1,163 KB of IR); with the shared helpers
0.40 s (487 KB); with the loop nests and drivers compiled unoptimized (glue: optnone, fast
instruction selection), a short pass list instead of O1 for the rest (codegen.module) and no
loop strength reduction in x86-64 code generation (codegen.target), 0.16 s, most of it the
machine code of the four microkernels (6 x 64 and 12 x 16, rows and columns: about 0.012 s
each) and the transposing packer (0.02 s) (benchmarks/compile_time.py, 1 thread). The edge
tiles along M (edge_heights) add 70 KB of IR to the GEMM module and 0.02 s of LLVM time: the
whole cold compile went 0.38 -> 0.41 s idle (0.45 -> 0.49 s at load 1.9). Every loop
is marked against LLVM's own vectorizing and unrolling, which the kernel does itself.

The packed path's blocks (B's panel, then A's block: at most 384 KiB for f32) live in a work
buffer the caller passes as the function's last argument (the entry's workspace: see
scratch_bytes), never on the calling thread's stack, which may be small (128 KiB for musl's
threads, 256 KiB or less for a thread the user started with a small stack). A product split
between the pool's threads gives that buffer to the blocks the calling thread runs; a worker
thread packs its blocks into a dynamic alloca on its own stack (the pool starts its workers with
WORKER_STACK_BYTES, codegen/threads.py), so no two threads share one. Nothing is allocated on the
heap and the only library call is pthread_self (which thread runs a block); the stack holds
only a tile of C (MR x NR) and, for a GEMM whose C only its epilogue reads (c_unread), a few
tiles (C_SCRATCH_TILES: 6 KiB for f32 at 6 x 64). llvm.fmuladd,
llvm.prefetch and llvm.masked.load are the only intrinsics.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir

from graphc.ir.errors import CodegenError
from graphc.ir.types import DTYPE_INFO

from .lltypes import I1, I8, I32, I64, LL, PTR, VOID, glue, vconst
from .loops import counted_loop as _loop
from .threads import (
    ThreadPool,
    dispatch_ns_env,
    pool_call,
    split_pays,
    task_function,
)

Epilogue = Callable[[ir.IRBuilder, ir.Value, ir.Value, ir.Value], ir.Value]
"""epilogue(b, acc, i, j) -> value of acc's type, applied to C[i, j:j+W] before it is stored."""

C_SCRATCH_TILES = 4  # tiles of C per pass through the stack buffer of c_unread (6 KiB at 6 x 64)
A_IN_PLACE_MAX_SLIVERS = 2  # N <= this many NR-wide slivers: the microkernel reads A unpacked
# ... and A stored [K, M] (a weight gradient X^T @ dY, K the batch) for N of up to
# A_IN_PLACE_SHALLOW_SLIVERS slivers when K is at most A_IN_PLACE_SHALLOW_K: its in-place block
# (K rows of MC values: 24 KiB of f32 at 48 x 120) stays in L1 across the slivers, where
# packing it cost as much as the strided reads.
# Measured (Zen 5, 1 thread, against packing X^T; 9 alternating rounds of separate processes
# under the CPU lock, load 1.8-5.0): the public SGD step of 784-256-128-10 at b32 (dW1: X^T
# [32, 784], N = 256, 4 slivers) 0.93-1.01 of its time, median 0.978; Adam b32 median 0.987.
# The same steps exported (gradients not kept, as the JIT) in a C loop, 7 rounds: 0.975 and
# 0.983. With no bound on K, SGD b128 ran 0.99-1.03 (3 rounds) and b512 0.96-1.06: not taken.
A_IN_PLACE_SHALLOW_SLIVERS = 4
A_IN_PLACE_SHALLOW_K = 48
PACK_PREFETCH_ROWS = 8  # packing a [K, M] or [K, N] source asks for the row this far ahead
GEMV_ROWS = 8  # a GEMV (M = 1) adds this many rows of B to C's row per pass
# A GEMV with N and K built in and N at most this keeps C's row in registers instead
# (emit_gemv_tiles): tiles of up to GEMV_TILE_VECTORS vectors, each over all of K. Measured at
# N <= 256 only (one tile on AVX-512: B read in the order it lies); wider rows would walk B
# in strided runs, left to emit_gemv until measured. Only where the row also fits the widest
# tile (gemv_tiles_take): with 16 registers (AVX2: tiles of at most 8 vectors, 64 f32 columns)
# N = 256 took 4 passes over K, each reading 256 B of every 1 KB row of B. Measured there
# (784-256-128-10 at batch 1, compiled for x86-64-v3 on the Zen 5 host, public predict, 7
# alternating rounds of separate processes, load 2.6-2.9): streaming the 256- and 128-column
# layers instead ran 0.90-1.02 of the time, median 0.972 (9.9 -> 9.7 us)
GEMV_TILES_MAX_N = 256
GEMV_TILE_VECTORS = 16
DIRECT_ROWS = 2  # direct path tile: DIRECT_ROWS x DIRECT_NV vectors (8 accumulators)
DIRECT_NV = 4
# nt direct path: dot products of this many columns at once (each a vector of partial sums
# along K, summed at the end). The loads of B bound it: 4 columns run as fast as 16 (which
# cost 3x the code: 16 horizontal sums)
DOT_COLS = 4
PARALLEL_MIN_MACS = 1 << 18  # smaller products (about 6 us on one core) stay on one thread
# The small-M path splits its columns when B holds this many values. Measured with
# benchmarks/dispatch.py (GEMV at batch 1, K = 256, 2 threads against 1, 2-core Zen 3 under
# load): 1.22x slower at 2^16 values of B, 0.78x at 2^17, 0.54x at 2^18; a dispatch that waits
# for the other core costs some 10-40 us, which a GEMV below 2^17 values does not earn back.
DIRECT_PARALLEL_MIN = 1 << 17
BLOCKS_PER_THREAD = 4  # a split product has at most this many blocks of C per thread ...
# nn products (B stored [K, N]) with at most this many rows of C, and N whole NR-wide slivers
# (a sliver never reads past B's rows), read B where it lies instead of packing it: a packed
# sliver would serve only M / MR tiles (6 at M = 32), and packing W1 took 9.8 % of the SGD b32
# step (perf, Zen 5). The microkernel is the same with B's row stride as an argument (an
# unaligned load per vector; the packed path keeps its own, aligned), in the same k order: the
# bits do not change. Measured (public API, 1 thread, 6 alternating rounds of separate
# processes, load 2.0-3.7, against packing): SGD step of 784-256-128-10 at b32 0.89-0.93
# (median 160 us against 175), Adam b32 0.80-0.94; predict at 16 / 32 / 48 rows 0.66-0.68 /
# 0.82-0.88 / 0.84-0.89; b128 and b512 (packed as before) 0.96-1.00. Larger M not measured.
B_IN_PLACE_MAX_M = 48
# ... and for any number of rows when B's rows are this narrow (N x element size, bytes) and A
# is not transposed (a forward product, B a weight: packing W1 of 784-256-128-10, 784 x 256,
# took ~3 % of the b128 step, perf cpu-clock, Zen 5). A sliver's rows then lie at most 2 KiB
# apart and the strided loads of B cost less than packing B on every call. Measured (public
# train_step, 1 thread pinned, 3 alternating rounds of separate processes, Zen 5, load 1.2-1.3,
# against packing above 48 rows; medians): SGD b128 542 us against 566, Adam b128 567 / 582,
# SGD b512 2,116 / 2,141, Adam b512 2,120 / 2,227, b32 unchanged (155 / 156). Weight gradients
# (A^T B: B's panel is K = batch rows of dZ, a small copy) lost at b32 in place (~4 %, 4 rounds)
# and keep packing. Wider rows lose too: GEMM predict n = 2048 (rows 8 KiB apart, a sliver's
# rows in the same L1 sets) ran 1.10x the packed time in place (n = 128 / 256 / 512: 0.97 /
# 0.96 / 0.99, one round, load 2-3.7).
B_IN_PLACE_MAX_ROW_BYTES = 2048
BLOCK_MIN = 512  # ... each of at least this many rows (split along M) or columns (along N):
# every block packs all of the other operand, and packing a value costs some 30 multiply-adds
DTYPES = {k: LL[k] for k, d in DTYPE_INFO.items() if d.is_float}  # the GEMM's element types


@dataclass(frozen=True)
class Blocking:
    """Register tile MR x NR (NR = NV vectors of LANES) and cache blocks KC, MC, NC (elements)."""

    lanes: int
    mr: int = 6
    nv: int = 2
    kc: int = 256  # a KC x NR sliver of B (16 KiB for f32 on AVX2) stays in the 32 KiB L1
    mc: int = 120  # the MC x KC block of A (120 KiB) stays in the 512 KiB L2
    nc: int = 256  # the KC x NC panel of B (256 KiB); bounded by the stack, not by the L3
    direct_max_m: int = 5  # M at or below this skips packing (nn, tn and nt)
    packed: bool = True  # False: the direct path serves every shape (small, quick to compile)
    # True: op(A) stored [M, K] is never packed; the microkernel broadcasts from MR rows where
    # they lie, whatever N (trans_a still packs above A_IN_PLACE_MAX_SLIVERS slivers of N)
    rows_of_a_in_place: bool = False
    kc_rows_in_place: int = 0  # KC when rows of A are read in place (no A block): 0 = kc

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    @staticmethod
    def for_dtype(
        dtype: str, vector_width: int, registers: int = 16, n: int | None = None
    ) -> Blocking:
        """`vector_width` counts f32 lanes (the register width); f64 gets half as many lanes.
        `registers`: the target's vector registers, which the register tile fills. `n`: C's
        column count when every call has the same (a layer's width), else None.

        The tile MR x NV needs MR * NV accumulators, NV vectors of B and one broadcast A value:
        6 x 2 (15 registers) on 16 (SSE, AVX2); 8 x 3 (28) on 32 registers of at most 4 lanes
        (NEON: BLIS's 8 x 12 for ARMv8-A, or scalar code on 32 floating-point registers).
        On 32 wide registers (AVX-512: 16 f32 lanes) the tile follows N, so that little of it
        is spent on the right edge of C: 12 x 1 (25 registers) for N up to one vector (a
        10-class output layer), 6 x 2 up to two vectors, else 6 x 4 (29 registers: 24 FMAs
        for 10 loads per k). Measured on a 2-core Xeon (AVX-512, two FMA units) with
        benchmarks/bench_gemm.py's product shapes: 6 x 4 ran N >= 128 products 5-25 % faster
        than 6 x 2, and 12 x 1 ran N = 10 products 1.5x faster than 6 x 2 (6 x 4: 2x slower).
        With 6 x 4, KC = 256 (a 64 KiB sliver of B, streamed from L2 with the A block) beat
        KC = 128 by some 5 %. There, A stored [M, K] is read in place (rows_of_a_in_place): six
        row streams per tile, no packing; nn and nt products with N = 256..1024 ran 3-12 %
        faster than with A packed (A stored [K, M] ran 5 % slower in place, so it is packed).
        Without an A block on the stack, KC is 384 there (kc_rows_in_place; the B panel then
        takes 384 KiB): 2048^3 ran 147 -> 161 GFLOP/s, the training products the same.
        Re-measured on the exported 784-256-128-10 SGD step (C driver, 1 thread, each variant
        its own library and process, 5-7 interleaved rounds, medians, load 1.1-2.8; identical
        code moves +-2 %), time against this default at b512 / b128: KC 128 / 192 / 256 in
        place of 384 (a B sliver of 32 / 48 / 64 KiB; the 32 KiB one stays in L1) 0.99 / 1.01
        / 1.00 and 1.04 / 1.03 / 1.02; prefetching the sliver 8 or 16 k-steps ahead inside the
        k loop 1.02 / 1.06; 12 x 32 tiles 1.01 / 1.05 (Adam 1.07 / 1.04); 8 x 48 1.18 / 1.20
        (an edge sliver at N = 256); two broadcast registers (rows emitted in pairs) 0.98-1.01;
        4 k-steps per trip 1.03 / 1.01; KC 384 / 512 for packed A (the dW products) 1.01 / 1.05
        at b512. The k loop holds 95 % of the microkernels' samples (perf) and runs at about 78 %
        of the FMA peak there, against 80-86 % with every operand in L1
        (benchmarks/ukernel_ceiling.py): where B streams from costs little; the loads bound it.
        On the AMD EPYC (Zen 5, LLVM znver5) host of Dec 7 (FMA-only peak 274-288 GFLOP/s) the 6 x 64 loop
        runs at 97 % of the peak with its operands in L1 (94-95 % with B's or A's loads taken
        out: there the loads no longer bound it); the public SGD step of 784-256-128-10 at
        85-89 % of it at b512 (2,100 us) and 81-85 % at b128 (550 us), the microkernels 85 %
        of the exported step's samples at b128 (W1's packing 3.0 %, dW1's update epilogue
        2.3 %, X^T's packing 1.2 %). Not kept there (public API, separate processes, 6-8
        alternating rounds, load 1.7-3.2): a last K block of at most KC / 8 joined to the one
        before (K = 784: 384 + 400, not 384 + 384 + 16: one pass less over C), 0.99 at SGD
        b128 and inference b256, 1.00 at SGD / Adam b512; on top of it one 784-deep block
        (KC 800 for rows in place) 0.99-1.00.
        """
        size = DTYPE_INFO[dtype].itemsize
        lanes = max(1, vector_width * 4 // size)
        mr, nv = (8, 3) if registers >= 32 and vector_width <= 4 else (6, 2)
        wide = registers >= 32 and vector_width >= 16 and size == 4
        if wide:
            vectors = 4 if n is None else -(-n // lanes)
            mr, nv = (12, 1) if vectors <= 1 else (6, 2) if vectors <= 2 else (6, 4)
        nr = nv * lanes
        kc = min(256, 8192 * nv // (nr * size))  # the KC x NR sliver of B: 16 KiB of L1 (NV=2)
        if wide:
            kc = 256
        nc = nr * max(1, 256 // nr)  # a multiple of NR near 256
        mc = mr * max(1, 120 // mr)  # a multiple of MR near 120
        if wide:
            return Blocking(
                lanes,
                mr=mr,
                nv=nv,
                kc=kc,
                mc=mc,
                nc=nc,
                rows_of_a_in_place=True,
                kc_rows_in_place=384,
            )
        if size == 8:
            # f64 serves checks, not speed: the direct path alone is a third of the code (and
            # of the compile time). blocking=Blocking(lanes) makes it fast.
            return Blocking(lanes, mr=mr, nv=nv, kc=kc, mc=mc, nc=nc, packed=False)
        return Blocking(lanes, mr=mr, nv=nv, kc=kc, mc=mc, nc=nc)


def gemv_tile_vectors(blk: Blocking) -> int:
    """Vectors in emit_gemv_tiles' widest tile: the largest power of two at most
    GEMV_TILE_VECTORS and the accumulators of the register tile (MR x NV): 16 with AVX-512's
    32 registers (6 x 64), 8 with 16 registers (AVX2 or SSE: 6 x 2 vectors)."""
    most = min(GEMV_TILE_VECTORS, blk.mr * blk.nv)
    return 1 << (most.bit_length() - 1)


def gemv_tiles_take(blk: Blocking, n: int) -> bool:
    """Whether a GEMV (M = 1) with N = ``n`` columns and K built in keeps C's row in registers
    (emit_gemv_tiles) rather than streaming it (emit_gemv): N at most GEMV_TILES_MAX_N and
    at most the widest tile's columns (gemv_tile_vectors x LANES), so that B is read in one
    pass over K, in the order it lies."""
    return n <= min(GEMV_TILES_MAX_N, gemv_tile_vectors(blk) * blk.lanes)


def edge_heights(mr: int) -> tuple[int, ...]:
    """Heights of the microkernel's edge tiles below MR (ascending): a panel's last mc % MR
    rows run the lowest that holds them, not MR rows of which the rest repeat the last row.
    Two, at a third and two thirds of MR: 2 and 4 for MR = 6 hold exactly the mc % 6 of
    every power-of-two batch (2**k % 6 is 2 or 4: 32, 128, 512 leave 2, 64 and 256 leave 4)
    and the layer widths of the 784-256-128-10 network (784, 256: 4); 4 and 8 for MR = 12.
    Their k loops take one step per trip (they run once per panel): half the compile time
    that unrolled ones add (0.04 s of a cold compile against 0.08 s), the same step times. Measured on the exported 784-256-128-10
    step (1 thread, 8-10 interleaved rounds, medians, load 1.3-2.0; identical code moves
    +-2 %): SGD 0.96 / 0.98 / 0.98 of the time without them at batch 32 / 128 / 512, Adam
    0.99 / 1.00 / 1.00 (one height, 2 of 6, instead: 0.96 / 1.00 / 1.00 SGD)."""
    return tuple(sorted({h for h in (mr // 3, 2 * mr // 3) if 0 < h < mr}))


WORK_ALIGN = 64  # the work buffer and each block in it start on a 64-byte boundary
# The vector units a target can give emit_gemm (f32 lanes, registers): scratch_bound covers all
VECTOR_UNITS = tuple((lanes, regs) for lanes in (1, 2, 4, 8, 16) for regs in (16, 32))


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def packed_scratch_bytes(
    blk: Blocking,
    itemsize: int,
    trans_a: bool,
    trans_b: bool,
    m: int | None = None,
    n: int | None = None,
    k: int | None = None,
) -> int:
    """Bytes of the work buffer the packed path of a product op(A)[M, K] @ op(B)[K, N] writes
    with blocking `blk`: B's packed panel (at most NC x KC), then A's packed block (at most
    MC x KC; none where A is read in place), each rounded up to WORK_ALIGN bytes. A dimension
    given as an int bounds the blocks by it; None stands for any value. 0 when the product
    never takes the packed path (small M has a direct path, except for A^T @ B^T). The code
    computes the same offsets at run time (emit_packed)."""
    direct = m is not None and m <= blk.direct_max_m and not (trans_a and trans_b)
    if not blk.packed or direct:
        return 0
    rows_in_place = blk.rows_of_a_in_place and not trans_a
    kc = (blk.kc_rows_in_place or blk.kc) if rows_in_place else blk.kc
    kk = kc if k is None else min(max(k, 0), kc)
    nn = blk.nc if n is None else _round_up(min(n, blk.nc), blk.nr)
    total = _round_up(nn * kk * itemsize, WORK_ALIGN)
    if not rows_in_place and (n is None or n > blk.nr * A_IN_PLACE_MAX_SLIVERS):
        mm = blk.mc if m is None else _round_up(min(m, blk.mc), blk.mr)
        total += _round_up(mm * kk * itemsize, WORK_ALIGN)
    return total


def scratch_bound(
    dtype: str, trans_a: bool, trans_b: bool, m: int | None, n: int | None, k: int | None
) -> int:
    """packed_scratch_bytes of a product with the default blocking (Blocking.for_dtype) of
    every vector unit in VECTOR_UNITS: what a plan reserves before its target is known (the
    same schedule serves the JIT and every export target). At most 384 KiB for f32 (0 for
    f64, which takes the direct path by default)."""
    size = DTYPE_INFO[dtype].itemsize
    return max(
        packed_scratch_bytes(
            Blocking.for_dtype(dtype, lanes, regs, n), size, trans_a, trans_b, m, n, k
        )
        for lanes, regs in VECTOR_UNITS
    )


def scratch_bytes(
    dtype: str = "f32",
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    vector_width: int = 8,
    registers: int = 16,
    blocking: Blocking | None = None,
    fixed: Mapping[str, int] | None = None,
    **_other: object,
) -> int:
    """Bytes of the work buffer (WORK_ALIGN-aligned) that emit_gemm's function, emitted with
    these same arguments, needs for any call: its last argument."""
    fixed = dict(fixed or {})
    blk = blocking or Blocking.for_dtype(dtype, vector_width, registers, fixed.get("N"))
    size = DTYPE_INFO[dtype].itemsize
    return packed_scratch_bytes(
        blk, size, trans_a, trans_b, fixed.get("M"), fixed.get("N"), fixed.get("K")
    )


def emit_gemm(
    module: ir.Module,
    name: str,
    *,
    dtype: str = "f32",
    trans_a: bool = False,
    trans_b: bool = False,
    accumulate: bool = False,
    epilogue: Epilogue | None = None,
    vector_width: int = 8,
    registers: int = 16,
    blocking: Blocking | None = None,
    extra_types: Sequence[ir.Type] = (),
    pool: ThreadPool | None = None,
    fixed: Mapping[str, int] | None = None,
    c_unread: bool = False,
) -> ir.Function:
    """Emit `void name(i64 M, i64 N, i64 K, ptr A, ptr B, ptr C, ptr work)`: C (+)= op(A) @ op(B).

    Arrays are row-major and contiguous: A is [M,K] ([K,M] if trans_a), B is [K,N] ([N,K] if
    trans_b), C is [M,N]. Any M, N, K >= 0 works; K == 0 gives C = epilogue(0) (or C_old).
    `work`: a WORK_ALIGN-aligned buffer of scratch_bytes(same arguments) bytes (or of
    packed_scratch_bytes for this call's M, N, K) that no other running call uses: the packed
    path's blocks. Its contents do not matter before the call and are garbage after it.

    Args:
        module: the module that receives the function (and the intrinsics it declares).
        name: the function's name.
        dtype: "f32" or "f64".
        trans_a: A is stored [K,M], i.e. C = A^T @ B.
        trans_b: B is stored [N,K], i.e. C = A @ B^T.
        accumulate: C += op(A) @ op(B) instead of C = ...
        epilogue: applied once to every finished element (after the old C is added), before the
            store: `epilogue(b, acc, i, j)` gets row i, first column j (both i64) and acc, a vector
            of W lanes (columns j..j+W-1) or a scalar at the right edge of C.
        vector_width: the SIMD register width counted in f32 lanes (8 for AVX2, 4 for SSE, 1 for
            scalar code); f64 uses half as many lanes. The code is correct for any target, and
            fast when this matches the target's registers.
        registers: the target's vector registers (16 on SSE/AVX2, 32 on NEON and AVX-512):
            with vector_width, they size the register tile (Blocking.for_dtype).
        blocking: tile and cache block sizes; the default (Blocking.for_dtype, from the
            target's registers and a fixed N) was tuned on AVX2 (Zen 3) and AVX-512 (Xeon).
        extra_types: more parameters after C (say, a bias pointer). With any, the function is
            `name(M, N, K, A, B, C, *extras, work)` and the epilogue is called as
            `epilogue(b, acc, i, j, extras)`, with the extras as values it may use. An
            epilogue with a true attribute ``needs_dims`` also gets ``dims=(M, N)`` (i64
            values: the row stride of C and of operands shaped like C, symbolic or not).
        pool: the module's thread pool (codegen/threads.py): products of at least
            PARALLEL_MIN_MACS multiply-adds on the packed path split C into 1 to
            BLOCKS_PER_THREAD blocks per thread, along M when M >= N (each block packs all of
            B) else along N (each packs all of A), at multiples of MR or NR. Every element of C is computed
            exactly as by one thread, so results do not depend on the thread count.

        fixed: dimensions known when the code is generated ("M", "N", "K" -> value; every call
            must pass that value): the code uses the constants, and drops the paths they rule
            out (edge tiles, the direct path, K blocks). "min_M": a lower bound of M in every
            call (above Blocking.direct_max_m, the direct path is left out). Threads' blocks reach the code through
            memory, where LLVM could not propagate constants from the callers.
        c_unread: nothing reads C after the call but the epilogue (with an epilogue that
            stores values of its own, such as an optimizer update, and not `accumulate`):
            where the packed path's K fits one block, each panel goes C_SCRATCH_TILES tiles
            at a time through a buffer on the stack (at most 6 KiB for f32) to the epilogue,
            and C is left as it was; otherwise (several K blocks, the direct path) C holds
            the plain product, which the epilogue reads there (its value is not stored back).
            Either way the GEMM has one epilogue function, reading from a buffer and its row
            stride. Measured on the 784-256-128-10 SGD step (its three
            weight gradients' GEMMs; exported library built with it against without, edge
            tiles in both, 1 thread, 8 interleaved rounds, load 1.6-1.9): 0.89x the time at
            batch 32, 0.96x at 128, 1.00x at 512 (K = 512: two K blocks). With the edge tiles,
            through the public train_step against the commit before both: 0.86 / 0.95 / 0.99.

    Returns:
        The new function.

    Raises:
        CodegenError: an unknown dtype, a vector width that is not a power of two, or a
            blocking whose MC or NC is not a multiple of MR or NR.
    """
    if dtype not in DTYPES:
        raise CodegenError(
            f"emit_gemm {name}: dtype must be one of {sorted(DTYPES)}, got {dtype!r}"
        )
    if vector_width < 1 or vector_width & (vector_width - 1):
        raise CodegenError(
            f"emit_gemm {name}: vector_width must be a power of two, got {vector_width}"
        )
    fixed_n = (fixed or {}).get("N")
    blk = blocking or Blocking.for_dtype(dtype, vector_width, registers, fixed_n)
    if blk.mc % blk.mr or blk.nc % blk.nr or blk.lanes & (blk.lanes - 1):
        raise CodegenError(f"emit_gemm {name}: MC, NC must be multiples of MR, NR in {blk}")
    gen = _GemmEmitter(
        module,
        name,
        dtype,
        trans_a,
        trans_b,
        accumulate,
        epilogue,
        blk,
        tuple(extra_types),
        pool,
        dict(fixed or {}),
        c_unread,
    )
    return gen.emit()


def _block_range(
    b: ir.IRBuilder, extent: ir.Value, unit: int, t: ir.Value, count: ir.Value
) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of 0..extent for task t of count: near-equal runs of whole `unit`s."""
    u, one = ir.Constant(I64, unit), ir.Constant(I64, 1)
    units = b.sdiv(b.add(extent, ir.Constant(I64, unit - 1)), u)
    per = b.sdiv(b.add(units, b.sub(count, one)), count)
    lo = b.mul(b.mul(t, per), u)
    hi = b.add(lo, b.mul(per, u))
    clamp = lambda v: b.select(b.icmp_signed("<", v, extent), v, extent)  # noqa: E731
    return clamp(lo), clamp(hi)


# --------------------------------------------------------------------------------------------------
# The emitter


class _GemmEmitter:
    def __init__(
        self,
        module: ir.Module,
        name: str,
        dtype: str,
        trans_a: bool,
        trans_b: bool,
        accumulate: bool,
        epilogue: Epilogue | None,
        blk: Blocking,
        extra_types: tuple[ir.Type, ...],
        pool: ThreadPool | None = None,
        fixed: dict[str, int] | None = None,
        c_unread: bool = False,
    ) -> None:
        self.module, self.name, self.blk, self.pool = module, name, blk, pool
        # C's values are read by the epilogue only: panels of one K block go through a small
        # buffer (C_SCRATCH_TILES tiles), not C
        self.c_unread = c_unread and epilogue is not None and not accumulate
        self.fixed = dict(fixed or {})
        self.min_m = self.fixed.pop("min_M", self.fixed.get("M", 0))
        if set(self.fixed) - {"M", "N", "K"}:
            raise CodegenError(
                f"emit_gemm {name}: fixed takes M, N, K, min_M, got {sorted(self.fixed)}"
            )
        self.extra_types = extra_types
        self.takes_extras: set[str] = set()  # helpers that get the caller's extras
        self.trans_a, self.trans_b = trans_a, trans_b
        self.accumulate, self.epilogue = accumulate, epilogue
        self.dtype, self.elem = dtype, DTYPES[dtype]
        self.size = DTYPE_INFO[dtype].itemsize
        fnty = ir.FunctionType(VOID, [I64, I64, I64, PTR, PTR, PTR, *extra_types, PTR])
        self.fn = ir.Function(module, fnty, name=name)
        names = ["M", "N", "K", "A", "B", "C", *(f"extra{n}" for n in range(len(extra_types)))]
        for arg, arg_name in zip(self.fn.args, [*names, "work"], strict=True):
            arg.name = arg_name
        for arg in (*self.fn.args[3:6], self.fn.args[-1]):
            arg.add_attribute("noalias")
        self.work = self.fn.args[-1]  # the packed path's blocks (see emit_packed)
        self.fn.attributes.add("nounwind")
        glue(self.fn)  # chooses a path and calls it
        self.use_args(self.fn, with_extras=True)
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))

    def use_args(self, fn: ir.Function, with_extras: bool, fixed: bool = True) -> None:
        """Point M, N, K, A, B, C (and the caller's extras) at fn's arguments, or M, N, K at
        their fixed values (not in shared helpers: their code serves other GEMMs too)."""
        self.M, self.N, self.K, self.A, self.B, self.C = fn.args[:6]
        for dim, value in self.fixed.items() if fixed else ():
            setattr(self, dim, self.const(value))
        n = len(self.extra_types) if with_extras else 0
        self.extras = list(fn.args[6 : 6 + n])

    # -- small helpers ---------------------------------------------------------------------------

    def const(self, v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def vtype(self, lanes: int) -> ir.Type:
        return self.elem if lanes == 1 else ir.VectorType(self.elem, lanes)

    def zero(self, lanes: int) -> ir.Constant:
        if lanes == 1:
            return ir.Constant(self.elem, 0.0)
        return vconst(self.vtype(lanes), 0.0)

    def at(self, base: ir.Value, idx: ir.Value, name: str = "") -> ir.Value:
        return self.b.gep(base, [idx], inbounds=True, source_etype=self.elem, name=name)

    def load(
        self, ptr: ir.Value, lanes: int = 1, align: int | None = None, name: str = ""
    ) -> ir.Value:
        return self.b.load(ptr, typ=self.vtype(lanes), align=align or self.size, name=name)

    def store(self, v: ir.Value, ptr: ir.Value, align: int | None = None) -> None:
        self.b.store(v, ptr, align=align or self.size)

    def splat(self, s: ir.Value, lanes: int, name: str = "") -> ir.Value:
        if lanes == 1:
            return s
        vt = self.vtype(lanes)
        v = self.b.insert_element(vconst(vt, ir.Undefined), s, ir.Constant(I32, 0))
        mask = vconst(ir.VectorType(I32, lanes), 0)
        return self.b.shuffle_vector(v, vconst(vt, ir.Undefined), mask, name=name)

    def fma(self, x: ir.Value, y: ir.Value, acc: ir.Value, name: str = "") -> ir.Value:
        # llvm.fmuladd, not llvm.fma: it fuses where the target has FMA (vfmadd231ps on AVX2) and
        # becomes mul + add elsewhere, where llvm.fma would turn into calls to libm's fmaf.
        ty = x.type
        suffix = (
            f"v{ty.count}{ty.element.intrinsic_name}" if isinstance(ty, ir.VectorType) else None
        )
        fname = f"llvm.fmuladd.{suffix or ty.intrinsic_name}"
        fn = self.module.globals.get(fname)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ty, [ty, ty, ty]), name=fname)
        return self.b.call(fn, [x, y, acc], name=name)

    def imin(self, x: ir.Value, y: ir.Value, name: str = "") -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", x, y), x, y, name=name)

    def mul(self, x: ir.Value, y: ir.Value | int, name: str = "") -> ir.Value:
        y = self.const(y) if isinstance(y, int) else y
        return self.b.mul(x, y, name=name, flags=["nsw"])

    def add(self, x: ir.Value, y: ir.Value | int, name: str = "") -> ir.Value:
        y = self.const(y) if isinstance(y, int) else y
        return self.b.add(x, y, name=name, flags=["nsw"])

    def sub(self, x: ir.Value, y: ir.Value | int, name: str = "") -> ir.Value:
        y = self.const(y) if isinstance(y, int) else y
        return self.b.sub(x, y, name=name, flags=["nsw"])

    def hsum(self, v: ir.Value) -> ir.Value:
        """Sum of a vector's lanes by halving (a fixed, documented order, no reassoc flag)."""
        n = v.type.count if isinstance(v.type, ir.VectorType) else 1
        while n > 1:
            half = n // 2
            lo_mask = ir.Constant(ir.VectorType(I32, half), list(range(half)))
            hi_mask = ir.Constant(ir.VectorType(I32, half), list(range(half, n)))
            lo = self.b.shuffle_vector(v, v, lo_mask)
            hi = self.b.shuffle_vector(v, v, hi_mask)
            v, n = self.b.fadd(lo, hi), half
            if n == 1:
                v = self.b.extract_element(v, ir.Constant(I32, 0))
        return v

    def transpose(self, rows: list[ir.Value]) -> list[ir.Value]:
        """Transpose an n x n block held as n vectors of n lanes (n a power of two).

        Swapping the off-diagonal d x d blocks inside every 2d x 2d block, for d = n/2, ..., 1,
        transposes the whole block; each swap is one two-input shufflevector per output row.
        """
        n, d = len(rows), len(rows) // 2
        while d >= 1:
            lo = ir.Constant(
                ir.VectorType(I32, n), [k if not k & d else n + k - d for k in range(n)]
            )
            hi = ir.Constant(
                ir.VectorType(I32, n), [k + d if not k & d else n + k for k in range(n)]
            )
            out = list(rows)
            for i in range(n):
                if not i & d:
                    out[i] = self.b.shuffle_vector(rows[i], rows[i + d], lo)
                    out[i + d] = self.b.shuffle_vector(rows[i], rows[i + d], hi)
            rows, d = out, d // 2
        return rows

    def when(self, conds: Sequence[ir.Value | bool], emit: Callable[..., None]) -> None:
        """Call emit(*flags) with Python bools, branching at run time on the conds that are i1."""
        for n, c in enumerate(conds):
            if not isinstance(c, bool):
                with self.b.if_else(c) as (then, otherwise):
                    with then:
                        self.when([*conds[:n], True, *conds[n + 1 :]], emit)
                    with otherwise:
                        self.when([*conds[:n], False, *conds[n + 1 :]], emit)
                return
        emit(*conds)

    # -- element access --------------------------------------------------------------------------

    def a_index(self, i: ir.Value, k: ir.Value) -> ir.Value:
        """Offset of op(A)[i, k]."""
        if self.trans_a:
            return self.add(self.mul(k, self.M), i)
        return self.add(self.mul(i, self.K), k)

    def b_index(self, k: ir.Value, j: ir.Value) -> ir.Value:
        """Offset of op(B)[k, j]."""
        if self.trans_b:
            return self.add(self.mul(j, self.K), k)
        return self.add(self.mul(k, self.N), j)

    # -- finishing C -------------------------------------------------------------------------------

    def finish(
        self,
        acc: ir.Value,
        i: ir.Value,
        j: ir.Value,
        load_old: ir.Value | bool,
        last: ir.Value | bool,
        store: bool = True,
    ) -> None:
        """C[i, j:j+W] = epilogue(acc (+ C_old)) when last, else acc (+ C_old) (without
        `store`: the epilogue's stores only).

        The flags are Python bools, or i1 values tested at run time (edge tiles, where code size
        matters more than a predictable branch).
        """
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 1
        ptr = self.at(self.C, self.add(self.mul(i, self.N), j), name="c.ptr")

        def add_old(acc: ir.Value) -> ir.Value:
            return self.b.fadd(acc, self.load(ptr, lanes, name="c.old"), name="c.sum")

        def apply_epilogue(acc: ir.Value) -> ir.Value:
            kw = {"dims": (self.M, self.N)} if getattr(self.epilogue, "needs_dims", False) else {}
            epilogue: Any = self.epilogue
            if self.extra_types:
                out = epilogue(self.b, acc, i, j, self.extras, **kw)
            else:
                out = epilogue(self.b, acc, i, j, **kw)
            if out.type != acc.type:
                raise CodegenError(
                    f"emit_gemm {self.name}: the epilogue returned {out.type} for {acc.type}"
                )
            return out

        acc = self.maybe(load_old, add_old, acc)
        if self.epilogue is not None:
            acc = self.maybe(last, apply_epilogue, acc)
        if store:
            self.store(acc, ptr)

    def maybe(
        self, cond: ir.Value | bool, f: Callable[[ir.Value], ir.Value], x: ir.Value
    ) -> ir.Value:
        """f(x) if cond else x, decided now for a bool and at run time for an i1."""
        if isinstance(cond, bool):
            return f(x) if cond else x
        before = self.b.block
        with self.b.if_then(cond):
            fx = f(x)
            then = self.b.block
        phi = self.b.phi(x.type)
        phi.add_incoming(fx, then)
        phi.add_incoming(x, before)
        return phi

    # -- the function ------------------------------------------------------------------------------

    def define(
        self,
        suffix: str,
        extra: Sequence[tuple[str, ir.Type]],
        body: Callable[..., None],
        shared: str | None = None,
    ) -> ir.Function:
        """An internal, never-inlined helper `name.suffix(M, N, K, A, B, C, *extra)`.

        Splitting the kernel into a few functions keeps each one small for LLVM (compile time,
        register allocation); the calls happen once per panel, not per tile. A helper with a
        `shared` name depends only on what that name spells, so the gemms of one module
        share it (a training step's forward and backward products pack the same ways).
        """
        if shared is not None and shared in self.module.globals:
            return self.module.globals[shared]
        saved = self.fn, self.b, self.extras
        user = [] if shared else [(f"extra{n}", t) for n, t in enumerate(self.extra_types)]
        params = [*user, *extra]
        fnty = ir.FunctionType(VOID, [I64] * 3 + [PTR] * 3 + [t for _, t in params])
        fn = ir.Function(self.module, fnty, name=shared or f"{self.name}.{suffix}")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        names = ["M", "N", "K", "A", "B", "C", *(n for n, _ in params)]
        for arg, arg_name in zip(fn.args, names, strict=True):
            arg.name = arg_name
            if isinstance(arg.type, ir.PointerType) and not arg_name.startswith("extra"):
                arg.add_attribute("noalias")
        self.fn, self.b = fn, ir.IRBuilder(fn.append_basic_block("entry"))
        if user:
            self.takes_extras.add(fn.name)
        self.use_args(fn, with_extras=not shared, fixed=not shared)
        body(*fn.args[6 + len(user) :])
        self.b.ret_void()
        self.fn, self.b, extras = saved
        self.use_args(self.fn, with_extras=True)
        self.extras = extras
        return fn

    def call(self, fn: ir.Function, *extra: ir.Value) -> None:
        """Call a helper made by define(), passing the caller's extras when it takes them."""
        user = self.extras if fn.name in self.takes_extras else []
        self.b.call(fn, [self.M, self.N, self.K, self.A, self.B, self.C, *user, *extra])

    def emit(self) -> ir.Function:
        b, blk = self.b, self.blk
        block = [(n, I64) for n in ("m0", "m1", "n0", "n1")]
        cols = [(n, I64) for n in ("n0", "n1")]
        fixed_m = self.fixed.get("M")
        use_packed = blk.packed and (fixed_m is None or fixed_m > blk.direct_max_m)
        # The epilogue, once, as a helper over a rectangle of finished C: the paths store
        # plain products (no copy of the epilogue in every store), then call it
        if self.epilogue is not None:
            # c_unread: the epilogue reads its values from a buffer given with its row stride
            # (C's own rows, or the stack buffer of scratch_panel) and stores nothing to C
            source = [("src", PTR), ("lds", I64)] if self.c_unread else []
            self.epilogue_fn = self.define("epilogue", block + source, self.emit_epilogue)
        work = [("work", PTR)]
        packed = self.define("packed", block + work, self.emit_packed) if use_packed else None
        if packed is not None:
            glue(packed)  # the loop nest: calls the packers and the microkernel per panel
        # The direct paths compute C (+)= op(A) @ op(B) only: one per kind, shared by the module
        kind = f"{'t' if self.trans_a else 'n'}{'t' if self.trans_b else 'n'}"
        kind += f".{'acc' if self.accumulate else 'set'}.{self.elem}.x{blk.lanes}"
        if packed is not None and self.min_m > blk.direct_max_m:
            direct = None  # every call has M above direct_max_m: the small-M code would be dead
        elif self.trans_a and self.trans_b:
            # tt: no training product needs it; scalar direct code only when nothing else exists.
            direct = (
                None
                if packed
                else self.define("direct", cols, self.emit_direct, f"graphc.gemm.direct.{kind}")
            )
        elif self.trans_b:
            direct = self.define("direct", cols, self.emit_direct_dot, f"graphc.gemm.dot.{kind}")
        else:
            direct = self.define("direct", cols, self.emit_direct, f"graphc.gemm.direct.{kind}")
        self.gemv_fn = None
        if direct is not None and not self.trans_b:
            # M = 1 streams B (emit_gemv). With N and K built in (a layer's forward product,
            # batch-1 inference) a GEMV of this GEMM's own: some 5-10 % faster than the shared
            # one for about 0.015 s of compile time each
            own = {"N", "K"} <= set(self.fixed)
            shared = None if own else f"graphc.gemm.gemv.{kind}"
            body = self.emit_gemv_cols
            if own and gemv_tiles_take(self.blk, self.fixed["N"]):
                body = self.emit_gemv_tiles
            self.gemv_fn = self.define("gemv", cols, body, shared)
        zero = self.const(0)
        empty = b.or_(b.icmp_signed("<=", self.M, zero), b.icmp_signed("<=", self.N, zero))
        with b.if_then(empty, likely=False):
            b.ret_void()
        if packed is None:
            self.call_direct(direct)
        elif direct is None:
            self.call_packed(packed)
        else:
            small = b.icmp_signed("<=", self.M, self.const(blk.direct_max_m))
            with b.if_else(small) as (then, otherwise):
                with then:
                    self.call_direct(direct)
                with otherwise:
                    self.call_packed(packed)
        b.ret_void()
        return self.fn

    def finish_rect(
        self,
        b: ir.IRBuilder,
        args: Sequence[ir.Value],
        user: Sequence[ir.Value],
        i0: ir.Value,
        i1: ir.Value,
        j0: ir.Value,
        j1: ir.Value,
    ) -> None:
        """Apply the epilogue (if any) to C[i0:i1, j0:j1] with builder b (args: M..C)."""
        if self.epilogue is None:
            return
        extras = list(user) if self.epilogue_fn.name in self.takes_extras else []
        source = []
        if self.c_unread:  # the epilogue reads C where it lies
            n, c = args[1], args[5]
            first = b.add(b.mul(i0, n, flags=["nsw"]), j0, flags=["nsw"])
            source = [b.gep(c, [first], inbounds=True, source_etype=self.elem), n]
        b.call(self.epilogue_fn, [*args[:6], *extras, i0, i1, j0, j1, *source])

    def emit_epilogue(
        self,
        i0: ir.Value,
        i1: ir.Value,
        j0: ir.Value,
        j1: ir.Value,
        src: ir.Value | None = None,
        lds: ir.Value | None = None,
    ) -> None:
        """C[i, j] = epilogue(C[i, j]) over rows i0..i1, columns j0..j1: vectors, then scalars.

        The paths call it on C they have just stored (a panel of the packed path, in L1), after
        the last K block. With `src` (c_unread: nothing reads C but the epilogue) it applies
        epilogue(src[i - i0, j - j0]) instead (src's row stride lds: C's own rows, or the
        stack buffer of scratch_panel) and stores nothing to C: what the epilogue stores
        besides C it stores."""
        b, L = self.b, self.blk.lanes
        with _loop(b, i0, i1, 1, name="ei") as il:
            if src is not None:
                row = self.at(src, self.mul(self.sub(il.iv, i0), lds))
            start = j0
            for lanes in (L, 1) if L > 1 else (1,):
                with _loop(b, start, self.sub(j1, lanes - 1), lanes, name=f"ej{lanes}") as jl:
                    if src is None:
                        ptr = self.at(self.C, self.add(self.mul(il.iv, self.N), jl.iv))
                        self.finish(self.load(ptr, lanes), il.iv, jl.iv, False, True)
                    else:
                        acc = self.load(self.at(row, self.sub(jl.iv, j0)), lanes)
                        self.finish(acc, il.iv, jl.iv, False, True, store=False)
                start = jl.iv

    def call_packed(self, packed: ir.Function) -> None:
        """The packed path over all of C, split between the pool's threads when it pays."""
        b, zero = self.b, self.const(0)
        if self.pool is None:
            self.call(packed, zero, self.M, zero, self.N, self.work)
            return
        macs = self.mul(self.mul(self.M, self.N), self.K)
        threads, split = split_pays(b, self.pool, macs, PARALLEL_MIN_MACS)
        with b.if_else(split, likely=True) as (then, otherwise):
            with then:
                # the calling thread's blocks use the work buffer; the workers' their stacks
                caller = b.call(self.pthread_self(), [], name="caller")
                ctx, ctx_type = self.task_context(self.work, caller)
                task = self.emit_task(packed, ctx_type)
                # Up to BLOCKS_PER_THREAD blocks a thread, each >= BLOCK_MIN rows (columns): a
                # thread that runs late (a busy core) leaves blocks to the others, and each
                # block's copy of the other operand's packing stays cheap.
                extent = b.select(self.split_along_m(b, self.M, self.N), self.M, self.N)
                per = b.sdiv(extent, b.mul(threads, self.const(BLOCK_MIN)))
                per = b.select(b.icmp_signed("<", per, self.const(1)), self.const(1), per)
                per = self.imin(per, self.const(BLOCKS_PER_THREAD))
                b.call(self.pool.run, [task, ctx, b.mul(threads, per, name="blocks")])
            with otherwise:
                self.call(packed, zero, self.M, zero, self.N, self.work)

    def pthread_self(self) -> ir.Function:
        """The declaration of POSIX's pthread_self (pthread_t as i64, as codegen/threads.py)."""
        fn = self.module.globals.get("pthread_self")
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(I64, []), name="pthread_self")
            fn.attributes.add("nounwind")
        return fn

    def task_context(self, *more: ir.Value) -> tuple[ir.Value, ir.LiteralStructType]:
        """A stack struct {M, N, K, A, B, C, extras..., more...} filled with this call's
        arguments (and `more`)."""
        b = self.b
        fields = [self.M, self.N, self.K, self.A, self.B, self.C, *self.extras, *more]
        ctx_type = ir.LiteralStructType([f.type for f in fields])
        here = b.block
        b.position_at_start(self.fn.entry_basic_block)  # a static alloca
        ctx = b.alloca(ctx_type, name="task.ctx")
        ctx.type = PTR  # llvmlite still types an alloca as `{...}*`; LLVM has only `ptr`
        b.position_at_end(here)
        for n, f in enumerate(fields):
            b.store(
                f,
                b.gep(
                    ctx,
                    [ir.Constant(I32, 0), ir.Constant(I32, n)],
                    inbounds=True,
                    source_etype=ctx_type,
                ),
            )
        return ctx, ctx_type

    def call_direct(self, direct: ir.Function) -> None:
        """The small-M path over all of C, its columns split between the pool's threads when B
        holds at least DIRECT_PARALLEL_MIN values: then each thread streams its share of B
        (which may then stay in its core's L2 from one call to the next)."""
        b, zero = self.b, self.const(0)
        n, k = self.fixed.get("N"), self.fixed.get("K")

        def whole() -> None:  # the product on the calling thread alone
            self.call_small(b, direct, self.fn.args[:6], self.extras, zero, self.N)
            rect = [self.M, self.N, self.K, self.A, self.B, self.C]
            self.finish_rect(b, rect, self.extras, zero, self.M, zero, self.N)

        if self.pool is None or (n is not None and k is not None and n * k < DIRECT_PARALLEL_MIN):
            whole()
            return
        threads, split = split_pays(b, self.pool, self.mul(self.N, self.K), DIRECT_PARALLEL_MIN)
        with b.if_else(split) as (then, otherwise):
            with then:
                ctx, ctx_type = self.task_context()
                fn, tb, fields, t, count = self.new_task("direct_task", ctx_type)
                unit = DIRECT_NV * self.blk.lanes  # whole register tiles
                n0, n1 = _block_range(tb, fields[1], unit, t, count)
                user = fields[6:]
                with tb.if_then(tb.icmp_signed("<", n0, n1)):
                    self.call_small(tb, direct, fields[:6], user, n0, n1)
                    self.finish_rect(tb, fields[:6], user, zero, fields[0], n0, n1)
                tb.ret_void()
                b.call(self.pool.run, [fn, ctx, threads])
            with otherwise:
                whole()

    def call_small(
        self,
        b: ir.IRBuilder,
        direct: ir.Function,
        args: Sequence[ir.Value],
        user: Sequence[ir.Value],
        n0: ir.Value,
        n1: ir.Value,
    ) -> None:
        """Columns n0..n1 of C on the direct path (this GEMM's own GEMV when M = 1 if it has
        one), with builder b; args: M..C as b's function has them, user: its extras."""
        args = list(args)
        for n, dim in enumerate("MNK"):
            if dim in self.fixed:
                args[n] = self.const(self.fixed[dim])

        def plain(fn: ir.Function) -> None:
            extras = list(user) if fn.name in self.takes_extras else []
            b.call(fn, [*args, *extras, n0, n1])

        if self.gemv_fn is None:
            plain(direct)
            return
        with b.if_else(b.icmp_signed("==", args[0], self.const(1))) as (then, otherwise):
            with then:
                plain(self.gemv_fn)
            with otherwise:
                plain(direct)

    def emit_gemv_cols(self, n0: ir.Value, n1: ir.Value) -> None:
        """emit_gemv over columns n0..n1 (M = 1; a helper of its own)."""
        self.n_lo, self.n_hi = n0, n1
        self.emit_gemv()

    def emit_gemv_tiles(self, n0: ir.Value, n1: ir.Value) -> None:
        """C[0, n0:n1] (+)= A[0, :] @ B for B [K, N] (M = 1), C's columns in registers.

        Tiles of T, T/2, ..., 1 vectors (T = GEMV_TILE_VECTORS, at most the accumulators of the
        GEMM's register tile, MR x NV: 16 with AVX-512's 32 registers, 8 on 16) each run over
        all of K with one accumulator per vector, then one masked vector takes the last
        N % lanes columns. With the row's width in one tile (N <= T vectors: 256 f32 columns
        with AVX-512) B is read once, in the order it lies; C is written once. Each column
        still sums k = 0, 1, ... with one multiply-add each, from zero: the bits of
        emit_gemv (and of the direct path's tiles for M > 1). emit_gemv instead keeps C's row
        in memory and adds 8 rows of B per pass over it: a load and a store of C per 8
        multiply-adds and 8 streams of B at once. Measured on the Zen 5 host (784-256-128-10
        inference at batch 1, exported library called in a C loop, medians of 5 alternating
        rounds): 7.3-7.6 us with emit_gemv, 5.4-6.3 us with these tiles; summing the 940 KB
        of weights alone takes 4.9 us there.
        """
        b, L = self.b, self.blk.lanes
        n = self.fixed["N"]
        most = min(gemv_tile_vectors(self.blk), max(1, n // L))
        sizes = [1 << e for e in range(most.bit_length() - 1, -1, -1)] if n >= L else []
        zero = self.const(0)
        start = n0
        for vecs in sizes:
            width = vecs * L
            with _loop(b, start, self.sub(n1, width - 1), width, name=f"gt{vecs}") as jl:
                self.direct_tile(zero, [zero], jl.iv, vecs, L, unroll=1)
            start = jl.iv
        if n % L == 0 or L == 1:
            return  # n0 and n1 are whole vectors (_block_range's units, or N)
        rest = self.sub(n1, start)
        with b.if_then(b.icmp_signed(">", rest, zero)):
            cptr = self.at(self.C, start)

            def step(k: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                a = self.splat(self.load(self.at(self.A, self.a_index(zero, k))), L)
                brow = self.at(self.B, self.b_index(k, start))
                return [self.fma(a, self.masked_load(brow, L, rest), acc[0])]

            acc = self.unrolled(self.K, [self.zero(L)], step, unroll=1, name="gtm")[0]
            if self.accumulate:
                acc = b.fadd(acc, self.masked_load(cptr, L, rest), name="c.sum")
            self.masked_store(acc, cptr, rest)

    def split_along_m(self, b: ir.IRBuilder, M: ir.Value, N: ir.Value) -> ir.Value:
        """i1: threads split C along M (each block packs all of B) when M >= N, else along N
        (each packs all of A): the copies cost the least. Decided now when both are fixed."""
        fixed_m, fixed_n = self.fixed.get("M"), self.fixed.get("N")
        if fixed_m is not None and fixed_n is not None:
            return ir.Constant(I1, fixed_m >= fixed_n)
        return b.icmp_signed(">=", M, N)

    def new_task(
        self, suffix: str, ctx_type: ir.LiteralStructType
    ) -> tuple[ir.Function, ir.IRBuilder, list[ir.Value], ir.Value, ir.Value]:
        """`void name.SUFFIX(ptr ctx, i64 t, i64 count)`, its builder after loading the context
        (task_context's fields, M, N, K as constants where fixed), t and count."""
        fn, b, fields, t, count = task_function(
            self.module, f"{self.name}.{suffix}", list(ctx_type.elements), nounwind=True
        )
        for n, dim in enumerate("MNK"):
            if dim in self.fixed:
                fields[n] = self.const(self.fixed[dim])
        return fn, b, fields, t, count

    def emit_task(self, packed: ir.Function, ctx_type: ir.LiteralStructType) -> ir.Function:
        """`void name.task(ptr ctx, i64 t, i64 count)`: block t of count of C on the packed path.

        The context ends with the work buffer and the calling thread's pthread_t: a block that
        runs on the calling thread (its stack may be small) packs into the work buffer, one
        that runs on a worker (WORKER_STACK_BYTES of stack, ours) into blocks on its stack, so
        no two threads share blocks."""
        fn, b, fields, t, count = self.new_task("task", ctx_type)
        fields, (work, caller) = fields[:-2], fields[-2:]
        M, N = fields[0], fields[1]
        m0, m1 = _block_range(b, M, self.blk.mr, t, count)
        n0, n1 = _block_range(b, N, self.blk.nr, t, count)
        along_m = self.split_along_m(b, M, N)
        zero = ir.Constant(I64, 0)
        lo_m, hi_m = b.select(along_m, m0, zero), b.select(along_m, m1, M)
        lo_n, hi_n = b.select(along_m, zero, n0), b.select(along_m, N, n1)
        nonempty = b.and_(b.icmp_signed("<", lo_m, hi_m), b.icmp_signed("<", lo_n, hi_n))
        with b.if_then(nonempty):
            user = fields[6:] if packed.name in self.takes_extras else []
            args = [*fields[:6], *user, lo_m, hi_m, lo_n, hi_n]
            on_caller = b.icmp_unsigned("==", b.call(self.pthread_self(), []), caller)
            b.call(packed, [*args, b.select(on_caller, work, ir.Constant(PTR, None))])
        b.ret_void()
        return fn

    # -- packed path -------------------------------------------------------------------------------

    def emit_packed(
        self, m0: ir.Value, m1: ir.Value, n0: ir.Value, n1: ir.Value, work: ir.Value
    ) -> None:
        """C[m0:m1, n0:n1] (a block of C, for threads; all of it is 0, M, 0, N), packing into
        `work` (WORK_ALIGN-aligned): B's panel, then A's block at the offsets that
        packed_scratch_bytes counts for this call's M, N, K. A null `work` (a block on a
        worker thread: emit_task) packs into a dynamic alloca instead, which takes stack only
        when it runs (the workers' stacks are ours: WORKER_STACK_BYTES).

        This GEMM's own code is the loop nest down to the panels and the epilogue; packing and
        the microkernel are helpers shared by every GEMM of the module with the same tile.

        B stored [K, N] is read where it lies (no packing) where b_in_place says so: blocks
        of C of at most B_IN_PLACE_MAX_M rows, or rows of B at most B_IN_PLACE_MAX_ROW_BYTES
        wide with A not transposed, N whole slivers (call_ukernel, strided_ukernel).

        Otherwise B's panel is packed on every call, also where B is a parameter that did not change
        since the last call. Skipping that packing in the forward products altogether (wrong
        results: an upper bound) ran the public SGD step of 784-256-128-10 at 0.969 of its
        time at b128 and 0.982 at b512 (Zen 5, 5 rounds, load 1.7): the most that keeping W
        packed between calls could give, before its cost (the update epilogue's second store
        of W). Such a copy would go stale: Model.params hands out writable views of the
        parameters (tests/test_library_files.py writes through them), so it needs those views
        read-only, or every writer to mark the copy old, first."""
        b, blk = self.b, self.blk
        rows_in_place = blk.rows_of_a_in_place and not self.trans_a
        # No A block when rows of A are read in place: its space goes to a deeper KC
        kc_size = (blk.kc_rows_in_place or blk.kc) if rows_in_place else blk.kc
        if self.pool is not None:  # blocks of a split product on a worker: work is null
            size = scratch_bytes(
                self.dtype,
                trans_a=self.trans_a,
                trans_b=self.trans_b,
                blocking=blk,
                fixed=self.fixed,
            )
            given = b.block
            with b.if_then(b.icmp_unsigned("==", work, ir.Constant(PTR, None)), likely=False):
                own = b.alloca(I8, size=self.const(max(size, WORK_ALIGN)), name="work.stack")
                own.align = WORK_ALIGN
                own.type = PTR  # llvmlite still types an alloca as `i8*`; LLVM has only `ptr`
                made = b.block
            phi = b.phi(PTR, name="work")
            phi.add_incoming(work, given)
            phi.add_incoming(own, made)
            work = phi
        self.b_buf = work
        if not rows_in_place:  # after B's panel: round_up(min(N, NC), NR) x min(K, KC) values
            zero = self.const(0)
            k = b.select(b.icmp_signed("<", self.K, zero), zero, self.K)
            kk = self.imin(k, self.const(kc_size))
            n = self.imin(self.N, self.const(blk.nc))
            nn = self.mul(b.sdiv(self.add(n, blk.nr - 1), self.const(blk.nr)), blk.nr)
            panel = self.mul(self.mul(nn, kk), self.size)
            panel = b.and_(self.add(panel, WORK_ALIGN - 1), self.const(-WORK_ALIGN))
            self.a_buf = b.gep(work, [panel], inbounds=True, source_etype=I8, name="a.packed")
        block = [("x0", I64), ("nx", I64), ("pc", I64), ("kc", I64), ("dst", PTR)]
        kind = f"{self.elem}.x{blk.lanes}.{blk.mr}x{blk.nr}"
        # A is packed to be read N / NR times; for fewer, the microkernel reads it in place.
        in_place_max = blk.nr * A_IN_PLACE_MAX_SLIVERS
        if rows_in_place:
            a_in_place: ir.Value | bool = True
        elif "N" in self.fixed:  # decided now
            a_in_place = self.fixed["N"] <= in_place_max
        else:
            a_in_place = b.icmp_signed("<=", self.N, self.const(in_place_max))
        if self.trans_a and a_in_place is not True:
            shallow = self.shallow_a()
            if shallow is not False:
                a_in_place = shallow if a_in_place is False else b.or_(a_in_place, shallow)
        if a_in_place is not True:
            pack_a = self.define(
                "pack_a",
                block,
                self.pack_a,
                f"graphc.gemm.pack_a.{'t' if self.trans_a else 'n'}.{kind}",
            )
        b_in_place = self.b_in_place(m0, m1)
        if b_in_place is not True:  # B in place on every call: no packing helper to emit
            pack_b = self.define(
                "pack_b",
                block,
                self.pack_b,
                f"graphc.gemm.pack_b.{'t' if self.trans_b else 'n'}.{kind}",
            )
        KC = self.const(kc_size)
        # At least one K block, so that K == 0 still stores epilogue(0) (or C_old).
        kblocks = b.select(
            b.icmp_signed("<=", self.K, self.const(0)),
            self.const(1),
            b.sdiv(self.add(self.K, kc_size - 1), KC),
            name="kblocks",
        )
        if self.c_unread:
            one_block = b.icmp_signed("==", kblocks, self.const(1))
            here = b.block
            b.position_at_start(self.fn.entry_basic_block)  # a static alloca
            self.c_buf = b.alloca(
                ir.ArrayType(self.elem, C_SCRATCH_TILES * blk.mr * blk.nr), name="c.scratch"
            )
            self.c_buf.align = 64
            self.c_buf.type = PTR
            b.position_at_end(here)
        with _loop(b, n0, n1, blk.nc, name="jc") as jc_loop:
            jc = jc_loop.iv
            nc = self.imin(self.sub(n1, jc), self.const(blk.nc), name="nc")
            with _loop(b, self.const(0), kblocks, 1, name="p") as p_loop:
                pc = self.mul(p_loop.iv, kc_size, name="pc")
                kc = self.imin(self.sub(self.K, pc), KC, name="kc")
                kc = b.select(b.icmp_signed("<", kc, self.const(0)), self.const(0), kc)
                load_old = (
                    self.const(1)
                    if self.accumulate
                    else b.zext(b.icmp_signed(">", p_loop.iv, self.const(0)), I64)
                )
                last = self.epilogue is not None and b.icmp_signed(
                    "==", p_loop.iv, self.sub(kblocks, 1)
                )
                if b_in_place is False:
                    self.call(pack_b, jc, nc, pc, kc, self.b_buf)
                elif b_in_place is not True:
                    with b.if_then(b.not_(b_in_place)):
                        self.call(pack_b, jc, nc, pc, kc, self.b_buf)
                with _loop(b, m0, m1, blk.mc, name="ic") as ic_loop:
                    ic = ic_loop.iv
                    mc = self.imin(self.sub(m1, ic), self.const(blk.mc), name="mc")
                    # A tile t of the panel: rows at a + t*ps_a + r*rs_a, k at + k*cs_a
                    if self.trans_a:  # A is [K, M], read in place
                        in_place = (
                            self.at(self.A, self.add(self.mul(pc, self.M), ic)),
                            self.const(1),
                            self.M,
                            self.const(blk.mr),
                        )
                    else:  # A is [M, K]
                        in_place = (
                            self.at(self.A, self.add(self.mul(ic, self.K), pc)),
                            self.K,
                            self.const(1),
                            self.mul(self.K, blk.mr),
                        )
                    # (microkernel, A's arguments) when A is read in place, when packed
                    choices = [(self.shared_ukernel(rows=not self.trans_a), in_place)]
                    if a_in_place is not True:
                        if a_in_place is False:
                            self.call(pack_a, ic, mc, pc, kc, self.a_buf)
                        else:
                            with b.if_then(b.not_(a_in_place)):
                                self.call(pack_a, ic, mc, pc, kc, self.a_buf)
                        one, mr_ = self.const(1), self.const(blk.mr)
                        packed_a = (self.a_buf, one, mr_, self.mul(kc, blk.mr))
                        choices.append((self.shared_ukernel(rows=False), packed_a))
                        if a_in_place is False:
                            choices = choices[1:]
                        elif choices[0][0] is choices[1][0]:  # one microkernel: select A
                            choices = [
                                (
                                    choices[0][0],
                                    tuple(
                                        b.select(a_in_place, x, y)
                                        for x, y in zip(in_place, packed_a, strict=True)
                                    ),
                                )
                            ]
                    with _loop(b, self.const(0), nc, blk.nr, name="jr") as jr:
                        nr = self.imin(self.sub(nc, jr.iv), self.const(blk.nr), name="nr")
                        j = self.add(jc, jr.iv, name="j")
                        bp = self.at(self.b_buf, self.mul(jr.iv, kc), name="bp")
                        b_here = self.at(self.B, self.add(self.mul(pc, self.N), j), name="b.here")
                        cp = self.at(self.C, self.add(self.mul(ic, self.N), j), name="cp")

                        def panel(rows, a_skip, c_ptr, ldc, old) -> None:
                            """The microkernel over `rows` rows of the panel from its tile
                            a_skip on, into c_ptr (row stride ldc)."""
                            for fn, a_args in choices:
                                if a_skip is not None:
                                    a0 = self.at(a_args[0], self.mul(a_skip, a_args[3]))
                                    a_args = (a0, *a_args[1:])
                                call = [kc, rows, *a_args, bp, c_ptr, ldc, nr, old]
                                if len(choices) == 1:
                                    self.call_ukernel(fn, call, b_in_place, b_here)
                                else:
                                    with b.if_then(
                                        a_in_place if fn is choices[0][0] else b.not_(a_in_place)
                                    ):
                                        self.call_ukernel(fn, call, b_in_place, b_here)

                        def whole() -> None:
                            panel(mc, None, cp, self.N, load_old)
                            if last is not False:
                                # c_unread: the epilogue reads the panel where it lies
                                source = (cp, self.N) if self.c_unread else ()
                                with b.if_then(last):
                                    self.call(
                                        self.epilogue_fn,
                                        ic,
                                        self.add(ic, mc),
                                        j,
                                        self.add(j, nr),
                                        *source,
                                    )

                        if self.c_unread:
                            with b.if_else(one_block) as (then, otherwise):
                                with then:
                                    self.scratch_panel(ic, mc, j, nr, panel)
                                with otherwise:
                                    whole()
                        else:
                            whole()

    def shallow_a(self) -> ir.Value | bool:
        """Whether A stored [K, M] is read in place for its shallow K (A_IN_PLACE_SHALLOW_K)
        and N of at most A_IN_PLACE_SHALLOW_SLIVERS slivers: i1, or a bool where the fixed
        dimensions settle it."""
        b = self.b
        conds: list[ir.Value] = []
        for dim, value, bound in (
            ("N", self.N, self.blk.nr * A_IN_PLACE_SHALLOW_SLIVERS),
            ("K", self.K, A_IN_PLACE_SHALLOW_K),
        ):
            if dim not in self.fixed:
                conds.append(b.icmp_signed("<=", value, self.const(bound)))
            elif self.fixed[dim] > bound:
                return False
        if not conds:
            return True
        return conds[0] if len(conds) == 1 else b.and_(*conds, name="a.shallow")

    def b_in_place(self, m0: ir.Value, m1: ir.Value) -> ir.Value | bool:
        """Whether the block C[m0:m1] reads B stored [K, N] where it lies (i1, or a bool when
        known now): when it has few rows (each B sliver would serve only M / MR tiles after its
        packing) or, A not transposed, B's rows are at most B_IN_PLACE_MAX_ROW_BYTES wide (any
        M); and N is whole slivers (no read past B's end).

        Decided now where the fixed dimensions settle it: False for B^T, for a fixed N that
        is not whole slivers (a 10-class layer) and where every call's M is above
        B_IN_PLACE_MAX_M (min_M: a weight gradient, M a layer's width) and N is wide; True for
        a fixed narrow N of whole slivers with A not transposed (only the twin is called, no
        pack_b is emitted). Where False, no twin microkernel (strided_ukernel) is emitted for
        it: the four twins made the GEMM module of the 784-256-128-10 Adam step 661 KB of IR
        instead of 424 (+0.045 s of cold compile), where only its batch-sized forward products
        (rows of A in place, 6 x 64) can take them. A split block of such a product (a share of
        M) packs B even if its share is small."""
        blk, b, n = self.blk, self.b, self.fixed.get("N")
        if self.trans_b or B_IN_PLACE_MAX_M <= 0:
            return False
        if n is not None:
            if n % blk.nr:
                return False
            if n * self.size <= B_IN_PLACE_MAX_ROW_BYTES and not self.trans_a:
                return True  # narrow rows: in place for any M
            if self.min_m > B_IN_PLACE_MAX_M:
                return False
            return b.icmp_signed("<=", self.sub(m1, m0), self.const(B_IN_PLACE_MAX_M))
        few = []  # the block's rows, B's row width (not for A^T: a weight gradient)
        if self.min_m <= B_IN_PLACE_MAX_M:
            few.append(b.icmp_signed("<=", self.sub(m1, m0), self.const(B_IN_PLACE_MAX_M)))
        if not self.trans_a:
            width = self.mul(self.N, self.size)
            few.append(b.icmp_signed("<=", width, self.const(B_IN_PLACE_MAX_ROW_BYTES)))
        if not few:
            return False
        either = few[0] if len(few) == 1 else b.or_(few[0], few[1], name="few_or_narrow")
        whole_slivers = b.icmp_signed("==", b.srem(self.N, self.const(blk.nr)), self.const(0))
        return b.and_(either, whole_slivers, name="b.in_place")

    def call_ukernel(
        self, fn: ir.Function, call: list[ir.Value], b_in_place: ir.Value | bool, b_here: ir.Value
    ) -> None:
        """fn(*call) on B's packed sliver; where ``b_in_place``, its twin for B read in place
        (strided_ukernel) on B's own rows at ``b_here`` (row stride N) instead."""
        b = self.b
        if b_in_place is False:
            b.call(fn, call)
            return
        twin = self.strided_ukernel(fn)
        in_place = [*call[:-5], b_here, *call[-4:], self.N]
        if b_in_place is True:
            b.call(twin, in_place)
            return
        with b.if_else(b_in_place) as (then, otherwise):
            with then:
                b.call(twin, in_place)
            with otherwise:
                b.call(fn, call)

    def strided_ukernel(self, fn: ir.Function) -> ir.Function:
        """The twin of shared_ukernel ``fn`` that reads B's rows where they lie (an extra
        last argument: their stride)."""
        return self.shared_ukernel(rows=".rows." in fn.name, strided_b=True)

    def scratch_panel(self, ic: ir.Value, mc: ir.Value, j: ir.Value, nr: ir.Value, panel) -> None:
        """A panel of one K block whose C only the epilogue reads: C_SCRATCH_TILES tiles at a
        time into the scratch buffer (row stride NR), each then finished by the epilogue,
        which stores nothing to C: C's memory is never touched."""
        b, blk = self.b, self.blk
        step = C_SCRATCH_TILES * blk.mr
        with _loop(b, self.const(0), mc, step, name="cs") as cs:
            rows = self.imin(self.sub(mc, cs.iv), self.const(step), name="cs.rows")
            panel(
                rows,
                b.sdiv(cs.iv, self.const(blk.mr)),
                self.c_buf,
                self.const(blk.nr),
                self.const(0),
            )
            i0 = self.add(ic, cs.iv)
            self.call(
                self.epilogue_fn,
                i0,
                self.add(i0, rows),
                j,
                self.add(j, nr),
                self.c_buf,
                self.const(blk.nr),
            )

    def shared_ukernel(self, rows: bool, strided_b: bool = False) -> ir.Function:
        """The module's microkernel for this tile (see emit_ukernel), defined on first use:
        for A's rows contiguous along k (`rows`: A [M, K] in place), or A's columns (A [K, M]
        in place, or packed)."""
        blk = self.blk
        name = f"graphc.gemm.ukernel.{'rows' if rows else 'cols'}.{self.elem}.x{blk.lanes}"
        name += f".{blk.mr}x{blk.nr}" + (".bs" if strided_b else "")
        if name in self.module.globals:
            return self.module.globals[name]
        params = [
            ("kc", I64),
            ("mc", I64),
            ("a", PTR),
            ("rs_a", I64),
            ("cs_a", I64),
            ("ps_a", I64),
            ("bp", PTR),
            ("c", PTR),
            ("ldc", I64),
            ("nr", I64),
            ("load_old", I64),
        ] + ([("rs_b", I64)] if strided_b else [])
        fn = ir.Function(self.module, ir.FunctionType(VOID, [t for _, t in params]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        for arg, (arg_name, _) in zip(fn.args, params, strict=True):
            arg.name = arg_name
            if arg_name in ("a", "bp", "c"):
                arg.add_attribute("noalias")
        saved = self.b
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.emit_ukernel(rows, *fn.args)
        self.b.ret_void()
        self.b = saved
        return fn

    def emit_ukernel(
        self,
        rows: bool,
        kc: ir.Value,
        mc: ir.Value,
        a: ir.Value,
        rs_a: ir.Value,
        cs_a: ir.Value,
        ps_a: ir.Value,
        bp: ir.Value,
        c: ir.Value,
        ldc: ir.Value,
        nr: ir.Value,
        load_old: ir.Value,
        rs_b: ir.Value | None = None,
    ) -> None:
        """A panel: C[0:mc, 0:nr] (+= when load_old) A[0:mc, 0:kc] @ B~ (ldc: C's row stride).

        B~ is a packed KC x NR sliver; A's tile t (rows t*MR..) lies at a + t*ps_a, row r of it
        at + r*rs_a, k at + k*cs_a: the packed A block (1, MR, MR*kc) or A where it lies. One
        call per panel, so that its cost is spread over mc/MR tiles. The panel's last mc % MR
        rows (if at most edge_heights' highest) run an edge tile of their own height, else a
        whole tile; rows of a tile past mc repeat its last row and are not stored. No
        epilogue: the caller applies its own.
        With `rows`, cs_a is taken as 1, else rs_a: A's addresses then need one register per
        row, or one in all (a 12-row tile with both strides variable ran 1.2x slower).
        """
        b, blk = self.b, self.blk
        if rows:
            cs_a = self.const(1)
        else:
            rs_a = self.const(1)
        tile_buf = b.alloca(ir.ArrayType(self.elem, blk.mr * blk.nr), name="c.tile")
        tile_buf.align = 64
        tile_buf.type = PTR
        load_old = b.icmp_signed("!=", load_old, self.const(0))
        heights = edge_heights(blk.mr)
        # Whole tiles while more than the highest edge tile's rows are left (the last may
        # hold fewer than MR: rows past mc repeat its last row and are not stored) ...
        stop = self.sub(mc, heights[-1] if heights else 0)
        with _loop(b, self.const(0), stop, blk.mr, name="ir", carried=[a]) as ir_:
            a_tile = ir_.carried[0]
            mr = self.imin(self.sub(mc, ir_.iv), self.const(blk.mr), name="mr")
            a_rows = self.tile_rows(a_tile, rs_a, mr, blk.mr)
            c_tile = self.at(c, self.mul(ir_.iv, ldc), name="c.tile.ptr")
            self.prefetch_tile(c_tile, ldc, blk.mr)
            acc = self.microkernel(kc, a_rows, cs_a, bp, rs_b=rs_b)
            self.store_tile(acc, c_tile, ldc, mr, nr, load_old, tile_buf)
            ir_.carried = [self.at(a_tile, ps_a)]
        if not heights:
            return
        # ... then the rest (mc % MR rows, at most heights[-1]) with the lowest edge tile
        # that holds it: a k loop of one step per trip (runs once per panel: little code)
        rest = self.sub(mc, ir_.iv, name="rest")
        a_tile, c_tile = ir_.final[0], self.at(c, self.mul(ir_.iv, ldc), name="c.edge.ptr")

        def edge(height: int) -> None:
            self.prefetch_tile(c_tile, ldc, height)
            a_rows = self.tile_rows(a_tile, rs_a, rest, height)
            acc = self.microkernel(kc, a_rows, cs_a, bp, unroll=1, rs_b=rs_b)
            for r in range(height):
                for v in range(blk.nv):
                    ptr = self.at(tile_buf, self.const(r * blk.nr + v * blk.lanes))
                    self.store(acc[r][v], ptr, blk.lanes * self.size)

        with b.if_then(b.icmp_signed(">", rest, self.const(0))):
            self.by_height(rest, heights, edge)
            self.store_edge(c_tile, ldc, rest, nr, load_old, tile_buf)

    def tile_rows(self, a_tile: ir.Value, rs_a: ir.Value, mr: ir.Value, height: int) -> list:
        """Row r of A's tile at a_tile + min(r, mr - 1)*rs_a for r < height (rows past mr
        repeat the last one)."""
        last_row = self.sub(mr, 1)
        return [
            self.at(a_tile, self.mul(self.imin(self.const(r), last_row), rs_a))
            for r in range(height)
        ]

    def by_height(self, mr: ir.Value, heights: Sequence[int], tile: Callable[[int], None]) -> None:
        """tile(h) for the first h of the ascending `heights` with mr <= h (mr <= the last)."""
        b = self.b
        if len(heights) == 1:
            tile(heights[0])
            return
        below = b.icmp_signed("<=", mr, self.const(heights[-2]))
        with b.if_else(below) as (then, otherwise):
            with then:
                self.by_height(mr, heights[:-1], tile)
            with otherwise:
                tile(heights[-1])

    def prefetch_tile(self, c_tile: ir.Value, ldc: ir.Value, rows: int) -> None:
        """Ask for the C tile's cache lines now, so they arrive while the microkernel runs.

        Without this the tile's loads and stores miss at the end of every microkernel (C is
        read and written once per KC block); BLIS kernels prefetch C the same way. A prefetch
        never faults, so edge tiles may prefetch past the end of C.
        """
        b, blk = self.b, self.blk
        for r in range(rows):
            first = self.mul(ldc, r)
            for off in (0, blk.nr - 1):  # the first and last element: at most two lines
                ptr = b.gep(c_tile, [self.add(first, off)], source_etype=self.elem)
                self.prefetch(ptr, True)

    def prefetch(self, ptr: ir.Value, write: bool) -> None:
        """llvm.prefetch into L1; a hint that never faults, so ptr may point anywhere."""
        fn = self.module.globals.get("llvm.prefetch.p0")
        if fn is None:
            fnty = ir.FunctionType(VOID, [PTR, I32, I32, I32])
            fn = ir.Function(self.module, fnty, name="llvm.prefetch.p0")
        args = [ptr, ir.Constant(I32, int(write)), ir.Constant(I32, 3), ir.Constant(I32, 1)]
        self.b.call(fn, args)

    def microkernel(
        self,
        kc: ir.Value,
        a_rows: list[ir.Value],
        a_step: ir.Value,
        bp: ir.Value,
        unroll: int | None = None,
        rs_b: ir.Value | None = None,
    ) -> list[list[ir.Value]]:
        """kc rank-1 updates of a len(a_rows) x NR register tile: A[r, k] at a_rows[r] +
        k*a_step, B from a packed sliver."""
        blk, L = self.blk, self.blk.lanes
        height = len(a_rows)
        zeros = [self.zero(L)] * (height * blk.nv)

        def step(k: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            bk = self.at(bp, self.mul(k, blk.nr if rs_b is None else rs_b))
            align = L * self.size if rs_b is None else self.size  # B in place: element-aligned
            bv = [self.load(self.at(bk, self.const(v * L)), L, align) for v in range(blk.nv)]
            ka = self.mul(k, a_step)
            out = list(acc)
            for r in range(height):
                a = self.splat(self.load(self.at(a_rows[r], ka)), L)
                for v in range(blk.nv):
                    out[r * blk.nv + v] = self.fma(a, bv[v], acc[r * blk.nv + v])
            return out

        # 4 k-steps per trip; 2 for 6 x 4 (48 FMAs either way, less code to compile)
        if unroll is None:
            unroll = 4 if blk.nv <= 2 else 2
        acc = self.unrolled(kc, zeros, step, unroll=unroll, name="k")
        return [acc[r * blk.nv : (r + 1) * blk.nv] for r in range(height)]

    def unrolled(
        self,
        count: ir.Value,
        init: list[ir.Value],
        step: Callable[[ir.Value, list[ir.Value]], list[ir.Value]],
        unroll: int,
        name: str,
    ) -> list[ir.Value]:
        """Fold step(k, carried) over k in 0..count, unrolled `unroll` times plus a remainder."""
        b = self.b
        if unroll == 1:
            with _loop(b, self.const(0), count, 1, name=name, carried=init) as only:
                only.carried = step(only.iv, only.carried)
            return only.final
        stop = self.sub(count, unroll - 1)
        with _loop(b, self.const(0), stop, unroll, name=name, carried=init) as main:
            vals = main.carried
            for u in range(unroll):
                vals = step(self.add(main.iv, u), vals)
            main.carried = vals
        with _loop(b, main.iv, count, 1, name=f"{name}.rem", carried=main.final) as rem:
            rem.carried = step(rem.iv, rem.carried)
        return rem.final

    def store_c(self, acc: ir.Value, ptr: ir.Value, load_old: ir.Value) -> None:
        """*ptr = acc (+ *ptr when load_old, an i1: C is read either way, one copy of the code;
        a select, not + 0, so that -0 stays -0)."""
        lanes = acc.type.count if isinstance(acc.type, ir.VectorType) else 1
        total = self.b.fadd(acc, self.load(ptr, lanes, name="c.old"), name="c.sum")
        self.store(self.b.select(load_old, total, acc), ptr)

    def store_tile(
        self,
        acc: list[list[ir.Value]],
        c_tile: ir.Value,
        ldc: ir.Value,
        mr: ir.Value,
        nr: ir.Value,
        load_old: ir.Value,
        tile_buf: ir.Value,
    ) -> None:
        """The valid mr x nr corner of the tile acc (len(acc) rows, mr <= len(acc)) to C
        (+ C_old when load_old, an i1)."""
        b, blk, L = self.b, self.blk, self.blk.lanes
        height = len(acc)
        full = b.and_(
            b.icmp_signed("==", mr, self.const(height)), b.icmp_signed("==", nr, self.const(blk.nr))
        )

        with b.if_else(full, likely=True) as (then, otherwise):
            with then:
                for r in range(height):
                    row = self.at(c_tile, self.mul(ldc, r))
                    for v in range(blk.nv):
                        self.store_c(acc[r][v], self.at(row, self.const(v * L)), load_old)
            with otherwise:
                for r in range(height):
                    for v in range(blk.nv):
                        ptr = self.at(tile_buf, self.const(r * blk.nr + v * L))
                        self.store(acc[r][v], ptr, L * self.size)
                self.store_edge(c_tile, ldc, mr, nr, load_old, tile_buf)

    def store_edge(
        self,
        c_tile: ir.Value,
        ldc: ir.Value,
        mr: ir.Value,
        nr: ir.Value,
        load_old: ir.Value,
        tile: ir.Value,
    ) -> None:
        """Store the valid mr x nr corner of an MR x NR tile held in `tile`: whole vectors,
        then scalars."""
        b, blk, L = self.b, self.blk, self.blk.lanes
        nr_vec = self.mul(b.sdiv(nr, self.const(L)), L) if L > 1 else self.const(0)
        with _loop(b, self.const(0), mr, 1, name="er") as er:
            row = self.mul(er.iv, blk.nr)
            c_row = self.at(c_tile, self.mul(er.iv, ldc))
            if L > 1:
                with _loop(b, self.const(0), nr_vec, L, name="ev") as ev:
                    acc = self.load(self.at(tile, self.add(row, ev.iv)), L, L * self.size)
                    self.store_c(acc, self.at(c_row, ev.iv), load_old)
            with _loop(b, nr_vec, nr, 1, name="es") as es:
                acc = self.load(self.at(tile, self.add(row, es.iv)))
                self.store_c(acc, self.at(c_row, es.iv), load_old)

    # -- packing -----------------------------------------------------------------------------------

    def pack_a(self, i0: ir.Value, mc: ir.Value, pc: ir.Value, kc: ir.Value, dst: ir.Value) -> None:
        """Pack op(A)[i0:i0+mc, pc:pc+kc] into MR-row slivers (see pack_block)."""
        if self.trans_a:  # A is [K, M]: element (i, k) at k*M + i
            src = self.at(self.A, self.add(self.mul(pc, self.M), i0))
            self.pack_block(src, self.M, False, mc, self.blk.mr, kc, dst, "pa")
        else:  # A is [M, K]: element (i, k) at i*K + k
            src = self.at(self.A, self.add(self.mul(i0, self.K), pc))
            self.pack_block(src, self.K, True, mc, self.blk.mr, kc, dst, "pa")

    def pack_b(self, j0: ir.Value, nc: ir.Value, pc: ir.Value, kc: ir.Value, dst: ir.Value) -> None:
        """Pack op(B)[pc:pc+kc, j0:j0+nc] into NR-column slivers (see pack_block)."""
        if self.trans_b:  # B is [N, K]: element (k, j) at j*K + k
            src = self.at(self.B, self.add(self.mul(j0, self.K), pc))
            self.pack_block(src, self.K, True, nc, self.blk.nr, kc, dst, "pb")
        else:  # B is [K, N]: element (k, j) at k*N + j
            src = self.at(self.B, self.add(self.mul(pc, self.N), j0))
            self.pack_block(src, self.N, False, nc, self.blk.nr, kc, dst, "pb")

    def pack_block(
        self,
        src: ir.Value,
        ld: ir.Value,
        k_contiguous: bool,
        nx: ir.Value,
        R: int,
        kc: ir.Value,
        dst: ir.Value,
        name: str,
    ) -> None:
        """Sliver s of R values of x lies at dst + s*R*kc: dst[s*R*kc + k*R + x'] = S(s*R + x', k).

        S(x, k) = src[x*ld + k] (k_contiguous) or src[k*ld + x]; x >= nx reads as 0. The source
        is read in its own order: along k one sliver at a time (L x L transposes), or along x
        one k at a time. Reading a [K, M] source sliver by sliver would touch each cache line
        R/16 times, at a stride that maps every line of a sliver to one L1 set.
        """
        b = self.b
        if k_contiguous:
            with _loop(b, self.const(0), nx, R, name=f"{name}.s") as sl:
                rows = self.at(src, self.mul(sl.iv, ld))
                valid = self.imin(self.sub(nx, sl.iv), self.const(R))
                self.pack_sliver_transposed(
                    rows, ld, valid, R, kc, self.at(dst, self.mul(sl.iv, kc)), name
                )
            return
        nfull = self.mul(b.sdiv(nx, self.const(R)), R, name=f"{name}.nfull")
        partial = b.icmp_signed("<", nfull, nx)
        edge = self.at(dst, self.mul(nfull, kc))
        with _loop(b, self.const(0), kc, 1, name=f"{name}.k") as kl:
            row = self.at(src, self.mul(kl.iv, ld))
            ahead = b.gep(row, [self.mul(ld, PACK_PREFETCH_ROWS)], source_etype=self.elem)
            with _loop(b, self.const(0), nfull, R, name=f"{name}.s") as sl:
                # Rows lie ld apart, often a page or more: the hardware prefetcher does not
                # follow, so ask for the row PACK_PREFETCH_ROWS ahead.
                self.prefetch(b.gep(ahead, [sl.iv], source_etype=self.elem), write=False)
                v = self.load(self.at(row, sl.iv), R)
                self.store(v, self.at(dst, self.add(self.mul(sl.iv, kc), self.mul(kl.iv, R))))
            with b.if_then(partial):  # the last sliver: nx - nfull < R values, then zeros
                v = self.masked_load(self.at(row, nfull), R, self.sub(nx, nfull))
                self.store(v, self.at(edge, self.mul(kl.iv, R)))

    def masked_load(self, ptr: ir.Value, lanes: int, count: ir.Value) -> ir.Value:
        """The first `count` (< lanes) values at ptr, then zeros; reads nothing past them."""
        vt = self.vtype(lanes)
        mt = ir.VectorType(I1, lanes)
        suffix = f"v{lanes}{self.elem.intrinsic_name}"
        fname = f"llvm.masked.load.{suffix}.p0"
        fn = self.module.globals.get(fname)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(vt, [PTR, I32, mt, vt]), name=fname)
        mask = self.lane_mask(lanes, count)
        return self.b.call(fn, [ptr, ir.Constant(I32, self.size), mask, self.zero(lanes)])

    def masked_store(self, v: ir.Value, ptr: ir.Value, count: ir.Value) -> None:
        """The first `count` (< lanes) values of v to ptr; writes nothing past them."""
        vt = v.type
        mt = ir.VectorType(I1, vt.count)
        fname = f"llvm.masked.store.v{vt.count}{self.elem.intrinsic_name}.p0"
        fn = self.module.globals.get(fname)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(VOID, [vt, PTR, I32, mt]), name=fname)
        mask = self.lane_mask(vt.count, count)
        self.b.call(fn, [v, ptr, ir.Constant(I32, self.size), mask])

    def lane_mask(self, lanes: int, count: ir.Value) -> ir.Value:
        """<lanes x i1>: lanes 0 .. count - 1 set (count an i64 in 0..lanes)."""
        iota = ir.Constant(ir.VectorType(I32, lanes), list(range(lanes)))
        n = self.b.trunc(count, I32)
        n = self.b.shuffle_vector(
            self.b.insert_element(
                vconst(ir.VectorType(I32, lanes), ir.Undefined), n, ir.Constant(I32, 0)
            ),
            vconst(ir.VectorType(I32, lanes), ir.Undefined),
            vconst(ir.VectorType(I32, lanes), 0),
        )
        return self.b.icmp_unsigned("<", iota, n)

    def pack_sliver_transposed(
        self,
        rows: ir.Value,
        ld: ir.Value,
        valid: ir.Value,
        R: int,
        kc: ir.Value,
        dst: ir.Value,
        name: str,
    ) -> None:
        """dst[k*R + x] = rows[x*ld + k] for x < valid, else 0: L x L in-register transposes.

        Rows past `valid` read the last valid row and are replaced by zeros, so edge slivers
        take the same path as full ones.
        """
        b, L = self.b, self.blk.lanes
        last = self.sub(valid, 1)
        if L > 1 and R > L and R % L == 0:
            self.pack_groups_transposed(rows, ld, valid, R, kc, dst, name)
            return
        row_ptrs = [self.at(rows, self.mul(self.imin(self.const(x), last), ld)) for x in range(R)]
        keep = [None] + [b.icmp_signed("<", self.const(x), valid) for x in range(1, R)]
        next_rows = b.gep(rows, [self.mul(ld, R)], source_etype=self.elem)
        k_done = self.const(0)
        if L > 1:
            with _loop(b, self.const(0), self.sub(kc, L - 1), L, name=f"{name}.kv") as kv:
                # Each row starts on a page of its own, where the hardware prefetcher starts
                # cold: fetch the next sliver's rows while this one is transposed.
                for x in range(R):
                    ahead = self.add(self.mul(ld, x), kv.iv)
                    self.prefetch(b.gep(next_rows, [ahead], source_etype=self.elem), write=False)
                for g in range(0, R, L):  # groups of L rows; the last may be short (MR = 6)
                    n = min(L, R - g)
                    vecs = []
                    for x in range(g, g + n):
                        v = self.load(self.at(row_ptrs[x], kv.iv), L)
                        vecs.append(v if keep[x] is None else b.select(keep[x], v, self.zero(L)))
                    vecs += [self.zero(L)] * (L - n)
                    for kk, col in enumerate(self.transpose(vecs)):
                        if n < L:
                            mask = ir.Constant(ir.VectorType(I32, n), list(range(n)))
                            col = b.shuffle_vector(col, col, mask)
                        off = self.add(self.mul(self.add(kv.iv, kk), R), g)
                        self.store(col, self.at(dst, off))
            k_done = kv.iv
        self.pack_tail_transposed(rows, ld, valid, last, R, k_done, kc, dst, name)

    def pack_groups_transposed(
        self,
        rows: ir.Value,
        ld: ir.Value,
        valid: ir.Value,
        R: int,
        kc: ir.Value,
        dst: ir.Value,
        name: str,
    ) -> None:
        """pack_sliver_transposed for R a multiple of L (> L): a loop over the R / L groups of
        L rows, each one L x L transpose per L values of k (one transpose in the code, not
        R / L: the 6 x 64 tile's packer was a tenth of a training step's compile time)."""
        b, L = self.b, self.blk.lanes
        last = self.sub(valid, 1)
        next_rows = b.gep(rows, [self.mul(ld, R)], source_etype=self.elem)
        k_done = self.mul(b.sdiv(kc, self.const(L)), L)
        with _loop(b, self.const(0), self.const(R), L, name=f"{name}.g") as gl:
            xs = [self.add(gl.iv, x) for x in range(L)]
            row_ptrs = [self.at(rows, self.mul(self.imin(x, last), ld)) for x in xs]
            keep = [b.icmp_signed("<", x, valid) for x in xs]
            with _loop(b, self.const(0), k_done, L, name=f"{name}.kv") as kv:
                # Each row starts on a page of its own, where the hardware prefetcher starts
                # cold: fetch the next sliver's rows while this one is transposed.
                for x in xs:
                    ahead = self.add(self.mul(ld, x), kv.iv)
                    self.prefetch(b.gep(next_rows, [ahead], source_etype=self.elem), write=False)
                vecs = [
                    b.select(keep[x], self.load(self.at(row_ptrs[x], kv.iv), L), self.zero(L))
                    for x in range(L)
                ]
                for kk, col in enumerate(self.transpose(vecs)):
                    off = self.add(self.mul(self.add(kv.iv, kk), R), gl.iv)
                    self.store(col, self.at(dst, off))
        self.pack_tail_transposed(rows, ld, valid, last, R, k_done, kc, dst, name)

    def pack_tail_transposed(
        self,
        rows: ir.Value,
        ld: ir.Value,
        valid: ir.Value,
        last: ir.Value,
        R: int,
        k_from: ir.Value,
        kc: ir.Value,
        dst: ir.Value,
        name: str,
    ) -> None:
        """The columns k_from..kc of pack_sliver_transposed's sliver one element at a time (the
        k left after its L x L transposes): dst[k*R + x] = rows[min(x, last)*ld + k] for x <
        valid, else 0."""
        b = self.b
        with (
            _loop(b, k_from, kc, 1, name=f"{name}.kt") as kt,
            _loop(b, self.const(0), self.const(R), 1, name=f"{name}.xt") as xt,
        ):
            xc = self.imin(xt.iv, last)
            v = self.load(self.at(rows, self.add(self.mul(xc, ld), kt.iv)))
            v = b.select(b.icmp_signed("<", xt.iv, valid), v, self.zero(1))
            self.store(v, self.at(dst, self.add(self.mul(kt.iv, R), xt.iv)))

    # -- direct path (small M) ---------------------------------------------------------------------

    def emit_direct(self, n0: ir.Value, n1: ir.Value) -> None:
        """nn and tn for small M, columns n0..n1 of C: tiles read A and B where they lie, over
        all of K at once.

        A tile has DIRECT_ROWS rows; past the last row of C it repeats that row and stores
        nothing. A single row (M = 1, a GEMV) streams B instead (emit_gemv, a helper of its
        own that the caller calls instead of this one).
        """
        b, L = self.b, self.blk.lanes
        with _loop(b, self.const(0), self.M, DIRECT_ROWS, name="di") as il:
            rows = [self.imin(self.add(il.iv, r), self.sub(self.M, 1)) for r in range(DIRECT_ROWS)]
            start = n0
            widths = dict.fromkeys([(DIRECT_NV, L), (1, L), (1, 1)])  # tiles, vectors, scalars
            if self.trans_b:  # tt: B is not contiguous along N
                widths = {(1, 1): None}
            for vecs, lanes in widths:
                width = vecs * lanes
                stop = self.sub(n1, width - 1)
                with _loop(b, start, stop, width, name=f"dj{width}") as jl:
                    self.direct_tile(il.iv, rows, jl.iv, vecs, lanes, unroll=2 if vecs > 1 else 1)
                start = jl.iv

    def emit_gemv(self) -> None:
        """C[0, :] (+)= A[0, :] @ B for B [K, N], reading B row after row as it lies in memory.

        A register tile would walk down K with a stride of N, touching a new page every few
        rows, where the prefetcher cannot follow. Instead C's row is the accumulator, updated
        by GEMV_ROWS rows of B at a time (so it is read and written K / GEMV_ROWS times, in L1).
        """
        b, L = self.b, self.blk.lanes
        lanes_list = [L, 1] if L > 1 else [1]
        zero = self.const(0)

        def sweep(name: str, body: Callable[[ir.Value, int], None]) -> None:
            """body(j, lanes) over C's row (columns n_lo..n_hi): vectors of L, then scalars."""
            start = self.n_lo
            for lanes in lanes_list:
                with _loop(
                    b, start, self.sub(self.n_hi, lanes - 1), lanes, name=f"{name}{lanes}"
                ) as jl:
                    body(jl.iv, lanes)
                start = jl.iv

        def c_ptr(j: ir.Value) -> ir.Value:
            return self.at(self.C, j)

        if not self.accumulate:
            sweep("gz", lambda j, lanes: self.store(self.zero(lanes), c_ptr(j)))

        def update(k0: ir.Value, count: int, name: str) -> None:
            a = [
                self.load(self.at(self.A, self.a_index(zero, self.add(k0, t))))
                for t in range(count)
            ]
            brows = [self.at(self.B, self.mul(self.add(k0, t), self.N)) for t in range(count)]
            # A's values broadcast once, before the sweeps (the GEMM modules' short pipeline
            # has no LICM to hoist them out of the loop: 10 % slower at n = 256 inside it)
            splats = {lanes: [self.splat(x, lanes) for x in a] for lanes in lanes_list}

            def body(j: ir.Value, lanes: int) -> None:
                acc = self.load(c_ptr(j), lanes)
                for t in range(count):
                    bv = self.load(self.at(brows[t], j), lanes)
                    acc = self.fma(splats[lanes][t], bv, acc)
                self.store(acc, c_ptr(j))

            sweep(name, body)

        with _loop(b, zero, self.sub(self.K, GEMV_ROWS - 1), GEMV_ROWS, name="gk") as gk:
            update(gk.iv, GEMV_ROWS, "gu")
        with _loop(b, gk.iv, self.K, 1, name="gkr") as gkr:
            update(gkr.iv, 1, "gr")

    def direct_tile(
        self, i: ir.Value, rows: list[ir.Value], j: ir.Value, nv: int, lanes: int, unroll: int
    ) -> None:
        """C[rows, j:j+nv*lanes] over all of K, from A and B where they lie.

        B must be contiguous along N (not trans_b) unless the tile is one scalar wide.
        """
        b = self.b
        zeros = [self.zero(lanes)] * (len(rows) * nv)

        def step(k: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            brow = self.at(self.B, self.b_index(k, j))
            bv = [self.load(self.at(brow, self.const(v * lanes)), lanes) for v in range(nv)]
            out = list(acc)
            for r, row in enumerate(rows):
                a = self.splat(self.load(self.at(self.A, self.a_index(row, k))), lanes)
                for v in range(nv):
                    out[r * nv + v] = self.fma(a, bv[v], acc[r * nv + v])
            return out

        acc = self.unrolled(self.K, zeros, step, unroll=unroll, name="dk")
        for r, row in enumerate(rows):

            def store_row(r: int = r, row: ir.Value = row) -> None:
                for v in range(nv):
                    jj = self.add(j, v * lanes)
                    self.finish(acc[r * nv + v], row, jj, self.accumulate, False)

            if r == 0:
                store_row()
            else:  # a repeated row past the end of C
                with b.if_then(b.icmp_signed("<", self.add(i, r), self.M)):
                    store_row()

    def emit_direct_dot(self, n0: ir.Value, n1: ir.Value) -> None:
        """nt for small M, columns n0..n1 of C: each C element is a dot product of two rows
        that are contiguous in K."""
        b, L = self.b, self.blk.lanes
        with _loop(b, self.const(0), self.M, 1, name="dt.i") as il:
            start = n0
            for cols in (min(L, DOT_COLS), 1) if L > 1 else (1,):
                with _loop(b, start, self.sub(n1, cols - 1), cols, name=f"dt.j{cols}") as jl:
                    self.dot_tile(il.iv, jl.iv, cols)
                start = jl.iv

    def dot_tile(self, i: ir.Value, j: ir.Value, cols: int) -> None:
        """C[i, j:j+cols] = sum_k A[i, k] * B[j+c, k], vectorized along k."""
        b, L = self.b, self.blk.lanes
        arow = self.at(self.A, self.mul(i, self.K))
        brows = [self.at(self.B, self.mul(self.add(j, c), self.K)) for c in range(cols)]

        def vstep(k: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            a = self.load(self.at(arow, k), L)
            return [self.fma(a, self.load(self.at(brows[c], k), L), acc[c]) for c in range(cols)]

        sums = [self.zero(1)] * cols
        k_done = self.const(0)
        if L > 1:
            with _loop(
                b,
                self.const(0),
                self.sub(self.K, L - 1),
                L,
                name="dt.k",
                carried=[self.zero(L)] * cols,
            ) as kv:
                kv.carried = vstep(kv.iv, kv.carried)
            sums = [self.hsum(v) for v in kv.final]
            k_done = kv.iv
        with _loop(b, k_done, self.K, 1, name="dt.kr", carried=sums) as kr:
            a = self.load(self.at(arow, kr.iv))
            kr.carried = [
                self.fma(a, self.load(self.at(brows[c], kr.iv)), kr.carried[c]) for c in range(cols)
            ]
        out = kr.final
        if cols == 1:
            acc = out[0]
        else:
            acc = vconst(self.vtype(cols), ir.Undefined)
            for c in range(cols):
                acc = b.insert_element(acc, out[c], ir.Constant(I32, c))
        self.finish(acc, i, j, self.accumulate, False)


# --------------------------------------------------------------------------------------------------
# JIT helper for tests and benchmarks


def host_target_machine(cpu: str | None = None, features: str | None = None):
    """The host's target machine (or one for `cpu`/`features`, e.g. "x86-64", "" for plain SSE2)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    if cpu is None:
        cpu = llvm.get_host_cpu_name()
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return target.create_target_machine(cpu=cpu, features=features, opt=3)


def optimize(module: ir.Module, target_machine) -> object:
    """Parse, verify, run the O3 pipeline for the target, verify again; returns the ModuleRef."""
    import llvmlite.binding as llvm

    ref = llvm.parse_assembly(str(module))
    ref.triple = target_machine.triple
    ref.data_layout = str(target_machine.target_data)
    ref.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(target_machine, pto)
    pb.getModulePassManager().run(ref, pb)
    ref.verify()
    return ref


_GEMM_ARGS = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 3
_CTYPES = {"i64": ctypes.c_int64, "float": ctypes.c_float, "double": ctypes.c_double}


class JitGemms:
    """Several gemms compiled into one module with MCJIT, for tests and benchmarks.

    `JitGemms({"fwd": dict(trans_b=False), ...})["fwd"](a, b, c)` computes into c. The runtime
    has its own JIT; this exists so that the kernel can be checked without the rest of graphc.
    The gemms share a thread pool of `threads` threads (settable later with set_threads).
    """

    def __init__(
        self,
        configs: dict[str, dict],
        cpu: str | None = None,
        features: str | None = None,
        threads: int = 1,
    ) -> None:
        import llvmlite.binding as llvm

        from .threads import thread_pool

        self.tm = host_target_machine(cpu, features)  # the engine takes it over: one per module
        module = ir.Module(name="gemms")
        module.triple = self.tm.triple
        module.data_layout = str(self.tm.target_data)
        pool = thread_pool(module, "gemms")
        for name, config in configs.items():
            emit_gemm(module, name, pool=pool, **config)
        self.module_ref = optimize(module, self.tm)
        self.engine = llvm.create_mcjit_compiler(self.module_ref, self.tm)
        self.engine.finalize_object()
        self._set_threads = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(
            self.engine.get_function_address("gemms_set_num_threads")
        )
        self.kernels = {
            name: JitGemm(self, config, self.engine.get_function_address(name))
            for name, config in configs.items()
        }
        self.set_threads(threads)

    def set_threads(self, threads: int) -> None:
        """Run the gemms on `threads` threads (the caller's and threads - 1 workers); with
        GRAPHC_DISPATCH_NS set, the pool takes that dispatch cost instead of measuring it."""
        fixed = dispatch_ns_env()
        if fixed is not None:
            pool_call(self.engine, "gemms_pool_dispatch_cost", fixed)
        rc = self._set_threads(threads)
        if rc:
            raise CodegenError(f"JitGemms: pthread_create failed with error {rc}")

    def __del__(self) -> None:
        if getattr(self, "_set_threads", None) is not None:
            self._set_threads(1)  # join the workers before the engine frees their code

    def __getitem__(self, name: str) -> JitGemm:
        return self.kernels[name]

    def asm(self) -> str:
        return self.tm.emit_assembly(self.module_ref)


class JitGemm:
    """One compiled gemm: call it with numpy arrays (C is written in place and returned).

    `JitGemm.compile(**config)` compiles a module holding just this one.
    """

    def __init__(self, owner: JitGemms, config: dict, address: int) -> None:
        self.owner, self.config = owner, config  # the owner keeps the code alive
        self.dtype = np.float32 if config.get("dtype", "f32") == "f32" else np.float64
        extras: list[Any] = [
            _CTYPES.get(str(t), ctypes.c_void_p) for t in config.get("extra_types", ())
        ]
        self.fn = ctypes.CFUNCTYPE(None, *_GEMM_ARGS, *extras, ctypes.c_void_p)(address)
        # the work buffer (the last argument): WORK_ALIGN-aligned, one per calling thread
        self.work_bytes = scratch_bytes(**config)
        self._local = threading.local()

    @property
    def work(self) -> int:
        """The address of this thread's work buffer for the gemm (made on first use)."""
        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = np.zeros(self.work_bytes + WORK_ALIGN, np.uint8)
        addr = buf.ctypes.data
        return addr + (-addr) % WORK_ALIGN

    @staticmethod
    def compile(
        cpu: str | None = None, features: str | None = None, threads: int = 1, **config
    ) -> JitGemm:
        return JitGemms({"gemm": config}, cpu, features, threads)["gemm"]

    def asm(self) -> str:
        return self.owner.asm()

    def __call__(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, *extras: object) -> np.ndarray:
        ta, tb = self.config.get("trans_a", False), self.config.get("trans_b", False)
        for arr in (a, b, c):
            assert arr.dtype == self.dtype and arr.flags.c_contiguous, (arr.dtype, arr.flags)
        m, k = a.shape[::-1] if ta else a.shape
        k2, n = b.shape[::-1] if tb else b.shape
        assert k == k2 and c.shape == (m, n), (a.shape, b.shape, c.shape)
        self.fn(m, n, k, a.ctypes.data, b.ctypes.data, c.ctypes.data, *extras, self.work)
        return c
