"""Where handing work to the thread pool starts to pay: 1 against 2 threads around each threshold.

    python benchmarks/dispatch.py [--rounds 9]

The compiled code splits three kinds of work over its pool (codegen/threads.py), each above a
threshold: the small-M GEMM path (GEMV at batch 1) when B holds DIRECT_PARALLEL_MIN values,
the packed GEMM at PARALLEL_MIN_MACS multiply-adds, element loops (the fused optimizer update)
at PARALLEL_MIN_ELEMENTS elements. For sizes around each, this times the public call at 1 and
at 2 threads (``model.threads``, alternated every round so both see the same load), and counts
the pool's dispatches (``JitModule.dispatches``). The smallest size where 2 threads are faster
is the measured crossover; a threshold at or above it means small work never pays for a
dispatch. Wall-clock time, best of rounds (a dispatch's cost is waiting for the other core, so
CPU time would hide it); the load average is printed, and on a loaded machine the second core
is not free, which moves the crossover up. The thresholds are measured between cores that share a
cache: pass ``--cost 100`` to hold them there (else the pool's measured dispatch cost may raise
them, and this measures the raised ones; the cost it measured is printed first).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import graphc as gc
from graphc.codegen.gemm import DIRECT_PARALLEL_MIN, PARALLEL_MIN_MACS
from graphc.codegen.kernels import PARALLEL_MIN_ELEMENTS
from graphc.codegen.threads import scale_of


def best_us(fn, rounds: int, reps: int) -> float:
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out.append((time.perf_counter() - t0) / reps * 1e6)
    return min(out)


def compare(m: gc.Model, fn, rounds: int, reps: int) -> tuple[float, float, int]:
    """(us at 1 thread, us at 2 threads, dispatches per call at 2 threads). The pool's
    thresholds are the compile-time ones times the scale of the dispatch cost it measures
    (codegen/threads.py); ``--cost NS`` fixes that cost instead (GRAPHC_DISPATCH_NS)."""
    t = {1: [], 2: []}
    for _ in range(rounds):
        for th in (1, 2):
            m.threads = th
            t[th].append(best_us(fn, 1, reps))
    m.threads = 2
    d0 = m.jit.dispatches(m.program.name)
    fn()
    return min(t[1]), min(t[2]), m.jit.dispatches(m.program.name) - d0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--cost", type=int, help="fix the pool's dispatch cost at this many ns")
    args = ap.parse_args()
    if args.cost:
        os.environ["GRAPHC_DISPATCH_NS"] = str(args.cost)
    rng = np.random.default_rng(0)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, cores {os.cpu_count()}")
    probe = gc.compile(gc.matmul(gc.input("x", ("N", 8)), gc.param("w", (8, 8))), name="probe")
    probe.threads = 2
    cost = probe.jit.dispatch_cost("probe")
    print(f"dispatch cost {cost} ns: thresholds x {scale_of(cost)} (codegen/threads.py)")
    print(f"{'work':38} {'size':>9} {'1 thr us':>9} {'2 thr us':>9} {'2/1':>5} {'dispatch':>8}")
    # GEMV at batch 1: x[1,K] @ W[K,N], B = K*N values (threshold DIRECT_PARALLEL_MIN)
    for kn in (1 << 12, 1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18):
        k = 256
        n = kn // k
        m = gc.compile(gc.matmul(gc.input("x", ("N", k)), gc.param("w", (k, n))), name="gemv")
        x = rng.standard_normal((1, k)).astype("f4")
        out = np.empty((1, n), "f4")
        a, b, d = compare(m, lambda m=m, x=x, out=out: m.predict(x, out=out), args.rounds, 2000)
        print(f"{'GEMV b1 (K=256)':38} {kn:9d} {a:9.2f} {b:9.2f} {b / a:5.2f} {d:8d}")
    print(f"  threshold DIRECT_PARALLEL_MIN = {DIRECT_PARALLEL_MIN} values of B")
    # packed GEMM: s x s x s multiply-adds (threshold PARALLEL_MIN_MACS)
    for s in (32, 48, 64, 80, 96, 128):
        m = gc.compile(gc.matmul(gc.input("x", ("N", s)), gc.param("w", (s, s))), name="gemm")
        x = rng.standard_normal((s, s)).astype("f4")
        out = np.empty((s, s), "f4")
        a, b, d = compare(m, lambda m=m, x=x, out=out: m.predict(x, out=out), args.rounds, 300)
        print(f"{'GEMM s x s x s':38} {s**3:9d} {a:9.2f} {b:9.2f} {b / a:5.2f} {d:8d}")
    print(f"  threshold PARALLEL_MIN_MACS = {PARALLEL_MIN_MACS} multiply-adds")
    # element loop: SGD update of one parameter vector of P values
    for p in (1 << 12, 1 << 14, 1 << 15, 1 << 16, 1 << 18):
        xin = gc.input("x", ("N", p))
        w = gc.param("w", (p,), init="zeros")
        y = gc.input("y", ("N",))
        loss = gc.mean(gc.square(gc.sum(xin * w, axes=1) - y))
        m = gc.compile(gc.sum(xin * w, axes=1), loss, gc.SGD(lr=1e-6), name="elem")
        xs = rng.standard_normal((1, p)).astype("f4")
        ys = np.zeros(1, "f4")
        a, b, d = compare(m, lambda m=m, xs=xs, ys=ys: m.train_step(xs, ys), args.rounds, 300)
        print(
            f"{'SGD step, one parameter of P values':38} {p:9d} {a:9.2f} {b:9.2f} {b / a:5.2f} {d:8d}"
        )
    print(f"  threshold PARALLEL_MIN_ELEMENTS = {PARALLEL_MIN_ELEMENTS} elements")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
