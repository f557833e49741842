"""Where a graphc training step's time goes: native code alone, the ctypes call, Entry.__call__,
Model.fit per step, and the forward GEMMs timed alone (one-matmul models).

    python benchmarks/profile_step.py

"native/step" runs many steps inside one call of the epoch entry, so no Python is counted.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

import graphc as gc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import peers as P


def med(fn, reps, rounds=5):
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(out)


def gemm_us(m, k, n):
    x = gc.input("a", ("N", k))
    w = gc.param("b", (k, n), init="zeros")
    mod = gc.compile(gc.matmul(x, w), name="g")
    a = np.random.rand(m, k).astype(np.float32)
    e = mod.entries["infer"]
    return med(lambda: e([a], m, checked=False), max(3, int(2e7 // (m * k * n + 1))))


cases = [
    ((784, 256, 128, 10), "relu", "ce", "adam", 1e-3, 128),
    ((30, 16, 1), "sigmoid", "bce", "sgd", 0.05, 64),
    ((2, 8, 1), "tanh", "bce", "sgd", 0.1, 4),
]
for sizes, act, loss, opt, lr, b in cases:
    spec = P.Spec(sizes, act, loss, opt, lr)
    x, y = P.make_data(spec, b)
    g = P.GraphcPeer(spec, P.init_weights(spec), x, y)
    m = g.model
    steps = max(20, int(2e8 // (b * sum(a * c for a, c in itertools.pairwise(sizes)) * 6)))
    steps = min(steps, 20000)
    e = m.entries["train_step"]
    ee = m.epoch_entry
    xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
    feeds = {"x": xs, "y": ys, "lr": np.array(lr, np.float32)}
    arrays = [feeds[s] for s in e.sched.input_slots]
    staging = [
        None if s == "lr" else np.empty((b,) + feeds[s].shape[1:], feeds[s].dtype)
        for s in e.sched.input_slots
    ]
    order = np.arange(len(xs), dtype=np.int64)
    losses = np.empty(steps, e.out_types[0].np_dtype)
    native = med(lambda: ee(arrays, staging, len(xs), order, b, losses), 1, 3) / steps
    a = e._args
    g.step()
    fn = e.fn
    raw = med(lambda: fn(a[0], a[1], a[2], a[3], a[4], b), max(5, int(2000 / max(native, 1))))
    step = med(g.step, max(5, int(2000 / max(native, 1))))
    fit = med(lambda: m.fit(xs, ys, epochs=1, batch_size=b, shuffle=False, verbose=0), 1, 3) / steps
    gemms = [gemm_us(b, k, n) for k, n in itertools.pairwise(sizes)]
    print(
        f"{spec.name} b{b}: native/step (epoch entry, no Python) {native:.1f} us; raw ctypes call "
        f"{raw:.1f} us; Entry call {step:.1f} us; fit/step {fit:.1f} us; forward GEMMs alone "
        f"{' + '.join(f'{t:.1f}' for t in gemms)} = {sum(gemms):.1f} us (x3 for fwd+bwd ~ {3 * sum(gemms):.0f} us)",
        flush=True,
    )
