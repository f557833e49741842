"""What the public call adds over the bare native entry, in microseconds per call.

    python benchmarks/callpath.py            # JIT Model and gc.load Library, 1 thread

Cases: a 2-8-1 SGD training step at batch 4 (``Model.train_step``, ``Library.train_step``),
batch-1 inference of 784-256-128-10 (``Model.predict``, ``predict(out=...)``,
``Library.predict``) and ``evaluate`` over 4 batches. "bare" is the compiled entry called
through its ctypes function pointer with every pointer prepared: the floor a Python caller
can reach. Times are the fastest of 9 rounds (a round: mean over a loop of calls); the load
average is printed beside them, since other processes on the machine move these figures.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import graphc as gc
from graphc.codegen.aot import abi_symbol


def med(fn, reps: int, rounds: int = 9) -> float:
    """The fastest of ``rounds`` loops of ``reps`` calls, in us of this thread's CPU time per
    call: on a shared machine, CPU time and the minimum are the figures least moved by other
    processes (time spent descheduled is not counted)."""
    for _ in range(max(10, reps // 10)):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(reps):
            fn()
        out.append((time.thread_time() - t0) / reps * 1e6)
    MEDIANS.append(statistics.median(out))
    return min(out)


MEDIANS: list[float] = []


def mlp(sizes, loss: str, opt):
    x = gc.input("x", ("N", sizes[0]))
    h = x
    for i, w in enumerate(sizes[1:]):
        h = gc.dense(h, w, None if i == len(sizes) - 2 else "tanh", name=f"fc{i + 1}")
    if loss == "ce":
        y = gc.input("y", ("N",), dtype="i32")
        lo = gc.softmax_cross_entropy(h, y)
    else:
        y = gc.input("y", ("N", 1))
        lo = gc.mean_squared_error(h, y) if hasattr(gc, "mean_squared_error") else None
    return gc.compile(h, lo, opt, name="cp", threads=1)


def bare(entry, arrays, n):
    """The entry's ctypes function with its pointers set once: no Python checks at all."""
    for i, a in enumerate(arrays):
        entry.inputs[i] = a.ctypes.data
    entry.prepare(n)
    fn, a = entry.fn, entry._args
    return lambda: fn(a[0], a[1], a[2], a[3], a[4], n)


def bare_at(entry, arrays, n):
    """As ``bare``, setting the input pointers at each call (several batches, one entry)."""
    entry.prepare(n)
    ptrs = [x.ctypes.data for x in arrays]
    fn, a, ins = entry.fn, entry._args, entry.inputs

    def call():
        for i, p in enumerate(ptrs):
            ins[i] = p
        fn(a[0], a[1], a[2], a[3], a[4], n)

    return call


def main() -> None:
    rows = []
    rng = np.random.default_rng(0)
    # 2-8-1 b4 SGD training step
    m = mlp((2, 8, 1), "mse", gc.SGD(lr=0.01))
    x = rng.standard_normal((4, 2)).astype(np.float32)
    y = rng.standard_normal((4, 1)).astype(np.float32)
    e = m.entries["train_step"]
    feeds = {"x": x, "y": y, "lr": np.array(0.01, np.float32)}
    b = bare(e, [feeds[s] for s in e.sched.input_slots], 4)
    t_bare = med(b, 20000)
    t_pub = med(lambda: m.train_step(x, y), 20000)
    rows.append(("2-8-1 b4 SGD train_step (Model)", t_bare, t_pub))
    with tempfile.TemporaryDirectory() as d:
        m.export(os.path.join(d, "libcp.so"))
        lib = gc.load(os.path.join(d, "libcp.so"))
        fn = lib._lib[abi_symbol("cp", "train_step")]
        fn.restype = ctypes.c_int
        lib._workspace(4)
        loss = ctypes.c_float()
        args = [
            ctypes.byref(lib._ctx),
            ctypes.c_int64(4),
            ctypes.c_void_p(x.ctypes.data),
            ctypes.c_int64(x.size),
            ctypes.c_void_p(y.ctypes.data),
            ctypes.c_int64(y.size),
            ctypes.c_float(0.01),
            ctypes.byref(loss),
        ]
        t_lb = med(lambda: fn(*args), 20000)
        t_lp = med(lambda: lib.train_step(x, y), 20000)
        rows.append(("2-8-1 b4 SGD train_step (gc.load)", t_lb, t_lp))
    # batch-1 inference of 784-256-128-10
    m = mlp((784, 256, 128, 10), "ce", gc.Adam(lr=1e-3))
    x1 = rng.standard_normal((1, 784)).astype(np.float32)
    ie = m.entries["infer"]
    b = bare(ie, [x1], 1)
    t_bare = med(b, 5000)
    t_pub = med(lambda: m.predict(x1), 5000)
    rows.append(("784-256-128-10 b1 predict (Model)", t_bare, t_pub))
    try:
        out = np.empty((1, 10), np.float32)
        t_out = med(lambda: m.predict(x1, out=out), 5000)
        rows.append(("784-256-128-10 b1 predict(out=) (Model)", t_bare, t_out))
    except TypeError:
        pass
    xe = rng.standard_normal((128, 784)).astype(np.float32)
    ye = rng.integers(0, 10, 128).astype(np.int32)
    ee = m.entries["eval"]
    calls = []
    for i in range(4):  # the bare entry on the same 4 batches evaluate runs
        feeds = {"x": xe[32 * i : 32 * (i + 1)], "y": ye[32 * i : 32 * (i + 1)]}
        calls.append(bare_at(ee, [feeds[s] for s in ee.sched.input_slots], 32))
    t_bare = med(lambda: [c() for c in calls], 500)
    t_pub = med(lambda: m.evaluate(xe, ye, batch_size=32), 500)
    rows.append(("784-256-128-10 evaluate 4x b32 (Model)", t_bare, t_pub))
    with tempfile.TemporaryDirectory() as d:
        m.export(os.path.join(d, "libcp.so"), entries=["infer"])
        lib = gc.load(os.path.join(d, "libcp.so"))
        fn = lib._lib[abi_symbol("cp", "infer")]
        fn.restype = ctypes.c_int
        lib._workspace(1)
        o = np.empty((1, 10), np.float32)
        args = [
            ctypes.byref(lib._ctx),
            ctypes.c_int64(1),
            ctypes.c_void_p(x1.ctypes.data),
            ctypes.c_int64(x1.size),
            ctypes.c_void_p(o.ctypes.data),
            ctypes.c_int64(o.size),
        ]
        t_lb = med(lambda: fn(*args), 5000)
        t_lp = med(lambda: lib.predict(x1), 5000)
        rows.append(("784-256-128-10 b1 predict (gc.load)", t_lb, t_lp))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), python {sys.version.split()[0]}")
    print(f"{'case':44} {'bare us':>9} {'public us':>10} {'added us':>9}")
    for name, tb, tp in rows:
        print(f"{name:44} {tb:9.2f} {tp:10.2f} {tp - tb:9.2f}")


if __name__ == "__main__":
    main()
