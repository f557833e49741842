"""Where a 784-256-128-10 training step's time goes, product by product, graphc against PyTorch
eager and numpy, on one thread.

    python benchmarks/profile_products.py [BATCH ...]        (default: 128 512)

For each of the 8 matrix products of a training step (graphc's layouts: forward nn, input
gradients nt, weight gradients tn), it times graphc's GEMM (codegen.gemm.JitGemms, no
epilogue), the product PyTorch's autograd runs for the same math in its own layout (weights
stored [out, in]: forward addmm x @ W^T, weight gradients g^T @ x, input gradients g @ W), and
numpy's matmul. Then the whole step of each (graphc: native time per step inside one epoch call;
PyTorch: `peers.TorchPeer.step`), so that step - sum of products estimates the time spent
outside the GEMMs (epilogues, loss, optimizer, dispatch). Every runner is timed in rounds that
interleave all of them (the machine's load drifts), with thread CPU time, and the median of the
rounds is printed. The peak is bench_gemm.fma_peak's.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ["GRAPHC_THREADS"] = "1"

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers as P
from bench_gemm import UNIT, fma_peak

from graphc.codegen.gemm import JitGemms

try:
    import torch

    torch.set_num_threads(1)
except ImportError:
    torch = None

ROUNDS = int(os.environ.get("ROUNDS", "15"))
now = time.thread_time


def products(batch: int) -> list[tuple[str, int, int, int, bool, bool]]:
    """(name, M, N, K, trans_a, trans_b) of a 784-256-128-10 step, as graphc computes them."""
    return [
        ("fwd1 X W1", batch, 256, 784, False, False),
        ("fwd2 H1 W2", batch, 128, 256, False, False),
        ("fwd3 H2 W3", batch, 10, 128, False, False),
        ("dW3 H2^T dZ3", 128, 10, batch, True, False),
        ("dH2 dZ3 W3^T", batch, 128, 10, False, True),
        ("dH1 dZ2 W2^T", batch, 256, 128, False, True),
        ("dW2 H1^T dZ2", 256, 128, batch, True, False),
        ("dW1 X^T dZ1", 784, 256, batch, True, False),
    ]


def timer(fn, seconds: float = 0.006):
    """A runner: the mean thread-CPU time of one call, over enough calls to last ``seconds``."""
    fn()
    t0 = now()
    fn()
    reps = max(1, int(seconds / max(now() - t0, 1e-7)))

    def run() -> float:
        t0 = now()
        for _ in range(reps):
            fn()
        return (now() - t0) / reps * 1e6

    return run


def runners_for(batch: int, gemms: JitGemms, rng: np.random.Generator) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, m, n, k, ta, tb in products(batch):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        g = gemms[f"{name}|{batch}"]
        addr = (a.ctypes.data, b.ctypes.data, c.ctypes.data, g.work)
        out[f"{name}|graphc"] = timer(lambda g=g, addr=addr, m=m, n=n, k=k: g.fn(m, n, k, *addr))
        an, bn = (a.T if ta else a), (b.T if tb else b)
        out[f"{name}|numpy"] = timer(lambda an=an, bn=bn, c=c: np.matmul(an, bn, out=c))
        if torch is not None:  # the same math in PyTorch's layout (nn.Linear's weight [out, in])
            if name.startswith("fwd"):
                x, w = torch.randn(m, k), torch.randn(n, k)
                bias, o = torch.zeros(n), torch.empty(m, n)
                fn = lambda x=x, w=w, bias=bias, o=o: torch.addmm(bias, x, w.t(), out=o)  # noqa: E731
            elif name.startswith("dW"):  # dW^T = g^T x: [out, in]
                gr, x, o = torch.randn(k, n), torch.randn(k, m), torch.empty(n, m)
                fn = lambda gr=gr, x=x, o=o: torch.mm(gr.t(), x, out=o)  # noqa: E731
            else:  # dX = g W
                gr, w, o = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
                fn = lambda gr=gr, w=w, o=o: torch.mm(gr, w, out=o)  # noqa: E731
            out[f"{name}|torch"] = timer(fn)
    for opt, lr in (("sgd", 0.01), ("adam", 1e-3)):
        spec = P.Spec((784, 256, 128, 10), "relu", "ce", opt, lr)
        x, y = P.make_data(spec, batch)
        w = P.init_weights(spec)
        g = P.GraphcPeer(spec, w, x, y)
        steps = 10
        run = timer(lambda g=g: g.fit_steps(steps), 0.04)
        out[f"step {opt}|graphc"] = lambda run=run: run() / steps
        if torch is not None:
            out[f"step {opt}|torch"] = timer(P.TorchPeer(spec, w, x, y).step, 0.04)
    return out


def main() -> None:
    batches = [int(b) for b in sys.argv[1:]] or [128, 512]
    peak = fma_peak(1.0, now)
    print(
        f"# 784-256-128-10 training step, 1 thread; FMA peak {peak:.0f} GFLOP/s "
        f"(bench_gemm.fma_peak); medians of {ROUNDS} interleaved rounds, thread CPU time\n"
    )
    # one kernel per product, built as a model's are: the host's vector unit, N fixed (the
    # register tile follows N on AVX-512)
    gemms = JitGemms(
        {
            f"{name}|{batch}": dict(
                trans_a=ta,
                trans_b=tb,
                vector_width=UNIT.lanes,
                registers=UNIT.registers,
                fixed={"N": n},
            )
            for batch in batches
            for name, _, n, _, ta, tb in products(batch)
        }
    )
    rng = np.random.default_rng(0)
    for batch in batches:
        runners = runners_for(batch, gemms, rng)
        samples: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(ROUNDS):
            for k, run in runners.items():
                samples[k].append(run())
        med = {k: statistics.median(v) for k, v in samples.items()}
        cols = ["graphc", "torch", "numpy"]
        print(f"## batch {batch}\n")
        print(
            "| product | M, N, K | "
            + " | ".join(f"{c} us | {c} GFLOP/s (% peak)" for c in cols)
            + " |"
        )
        print("|---|---|" + "---|---|" * len(cols))
        total = dict.fromkeys(cols, 0.0)
        flop_total = 0.0
        for name, m, n, k, _, _ in products(batch):
            flop = 2.0 * m * n * k
            flop_total += flop
            cells = []
            for c in cols:
                t = med.get(f"{name}|{c}")
                if t is None:
                    cells.append("n/a | n/a")
                    continue
                total[c] += t
                cells.append(f"{t:,.0f} | {flop / t / 1e3:.1f} ({flop / t / 1e3 / peak:.0%})")
            print(f"| {name} | {m}, {n}, {k} | " + " | ".join(cells) + " |")
        print(
            "| **sum** | | "
            + " | ".join(
                f"{total[c]:,.0f} | {flop_total / total[c] / 1e3:.1f} "
                f"({flop_total / total[c] / 1e3 / peak:.0%})"
                if total[c]
                else "n/a | n/a"
                for c in cols
            )
            + " |\n"
        )
        for opt in ("sgd", "adam"):
            line = []
            for c in ("graphc", "torch"):
                t = med.get(f"step {opt}|{c}")
                if t is not None:
                    line.append(f"{c} {t:,.0f} us (outside the products {t - total[c]:,.0f} us)")
            if med.get(f"step {opt}|torch"):
                line.append(f"ratio {med[f'step {opt}|graphc'] / med[f'step {opt}|torch']:.2f}")
            print(f"- {opt} step: " + "; ".join(line))
        floor = flop_total / (peak * 1e3)
        print(f"- the products at 100% of peak: {floor:,.0f} us\n")


if __name__ == "__main__":
    main()
