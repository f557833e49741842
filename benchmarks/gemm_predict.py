"""GEMM through the public API against numpy (OpenBLAS) at 1 and 2 threads.

    python benchmarks/gemm_predict.py [--sizes 128,256,...] [--threads 1,2] [--seconds S]
        [--stacks BxMxKxP,...]

For each n, a one-matmul model ``x @ w`` (x [N, n], w [n, n]) is compiled and its ``predict(x,
out=)`` timed against ``np.matmul(x, w, out=)``, with graphc's and OpenBLAS's thread counts set
alike (``Model.threads``; threadpoolctl). Calls alternate between the two in short batches for
--seconds per cell and the best batch counts: thread CPU time at 1 thread (time the OS gives to
other processes does not count), wall time at 2 (the worker's time is not the caller's). The
load average is printed beside every row: on a shared machine the 2-thread cells are noisy.

``--stacks`` adds the batched product (graphc's batched_matmul: one GEMM per matrix of the
stack, the stack or each GEMM split between the threads): a model ``a @ b`` of a [N, M, K] and
b [N, K, P], ``predict({"a": a, "b": b}, out=)`` at N = B against ``np.matmul(a, b, out=)``
and, where torch is installed, ``torch.bmm(a, b, out=)`` with ``torch.set_num_threads`` alike.
The defaults are attention's products at T = 256, d = 64 (q k^T and weights v, 16 heads) and
small heads (T = d = 32, 256 of them); ``--sizes ''`` leaves the square GEMMs out.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

import graphc as gc

try:
    import torch
except ImportError:  # the torch column is left out
    torch = None


def race(fns, seconds: float, now) -> list[float]:
    """Best seconds per call of each fn, timed in alternating batches."""
    for f in fns:
        f()
    t0 = now()
    fns[0]()
    per_batch = max(1, int(0.02 / max(now() - t0, 1e-7)))
    best = [float("inf")] * len(fns)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for i, f in enumerate(fns):
            t0 = now()
            for _ in range(per_batch):
                f()
            best[i] = min(best[i], (now() - t0) / per_batch)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256,512,1024,2048")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--stacks", default="", help="e.g. 16x256x64x256,16x256x256x64,256x32x32x32")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    if args.stacks:
        stacks(args, rng)
    if not args.sizes:
        return
    print("| n | threads | graphc GFLOP/s | numpy GFLOP/s | graphc / numpy time | load |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        x = gc.input("x", ("N", n))
        w = gc.param("w", (n, n), init="zeros")
        model = gc.compile(gc.matmul(x, w), name=f"gemm{n}")
        wv = rng.standard_normal((n, n)).astype(np.float32)
        model.set_weights({"w": wv})
        a = rng.standard_normal((n, n)).astype(np.float32)
        out, ref = np.empty((n, n), np.float32), np.empty((n, n), np.float32)
        for threads in (int(t) for t in args.threads.split(",")):
            model.threads = threads
            now = time.thread_time if threads == 1 else time.perf_counter
            with threadpool_limits(threads):
                tg, tn = race(
                    [lambda: model.predict(a, out=out), lambda: np.matmul(a, wv, out=ref)],
                    args.seconds,
                    now,
                )
            assert np.allclose(out, ref, rtol=1e-3, atol=1e-3 * np.sqrt(n))
            flop = 2.0 * n**3
            print(
                f"| {n} | {threads} | {flop / tg / 1e9:.0f} | {flop / tn / 1e9:.0f} | "
                f"{tg / tn:.2f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


def stacks(args, rng) -> None:
    """The batched products of ``args.stacks`` (BxMxKxP each), one table row per thread count."""
    print(
        "| B x M x K x P | threads | graphc GFLOP/s | graphc / numpy time | graphc / torch time | load |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for spec in args.stacks.split(","):
        bs, m, k, p = (int(v) for v in spec.split("x"))
        a_in, b_in = gc.input("a", ("N", m, k)), gc.input("b", ("N", k, p))
        model = gc.compile(gc.matmul(a_in, b_in), name=f"bmm{bs}x{m}x{k}x{p}")
        a = rng.standard_normal((bs, m, k)).astype(np.float32)
        b = rng.standard_normal((bs, k, p)).astype(np.float32)
        feeds = {"a": a, "b": b}
        out, ref = np.empty((bs, m, p), np.float32), np.empty((bs, m, p), np.float32)
        fns = [lambda: model.predict(feeds, out=out), lambda: np.matmul(a, b, out=ref)]
        if torch is not None:
            ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.empty((bs, m, p))
            fns.append(lambda: torch.bmm(ta, tb, out=tout))
        for threads in (int(t) for t in args.threads.split(",")):
            model.threads = threads
            if torch is not None:
                torch.set_num_threads(threads)
            now = time.thread_time if threads == 1 else time.perf_counter
            with threadpool_limits(threads):
                # at 2 threads each side alone: the peers' threads spin after their calls
                # (OpenBLAS, torch's OpenMP) and took the core graphc's worker needs when the
                # calls alternated (graphc ran no faster than at 1 thread)
                alone = [race([f], args.seconds, now)[0] for f in fns]
                times = race(fns, args.seconds, now) if threads == 1 else alone
            assert np.allclose(out, ref, rtol=1e-3, atol=1e-3 * np.sqrt(k))
            flop = 2.0 * bs * m * k * p
            vs_torch = f"{times[0] / times[2]:.2f}" if torch is not None else ""
            print(
                f"| {spec} | {threads} | {flop / times[0] / 1e9:.0f} | "
                f"{times[0] / times[1]:.2f} | {vs_torch} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
