"""Entries called from a thread with a small stack (issue 12: the GEMM's packed blocks).

The packed GEMM path's blocks (up to 384 KiB) live in the entry's workspace, not on the calling
thread's stack: a thread started with ``threading.stack_size(128 KiB)`` (musl's default, a C
program's worker thread) runs train_step and predict of the 784-256-128-10 network at batch 64,
in process and through the exported library, at 1 and 2 threads. The calls run in a
subprocess, so that a crash (the stack overflowing into its guard page) fails the test instead
of killing pytest. Reference: the same step in numpy float64 (forward, softmax cross-entropy,
backward by the chain rule, SGD's p - lr * g).

Cost: about 6 s (two compiles and two exports of the network, one subprocess per thread count).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    r"""
    import sys, threading
    import numpy as np
    import graphc as gc

    THREADS, OUT = int(sys.argv[1]), sys.argv[2]
    LR, SIZES, BATCH = 0.1, (784, 256, 128, 10), 64


    def build():
        x = gc.input("x", ("N", SIZES[0]))
        h = gc.dense(x, SIZES[1], "relu", name="fc1")
        h = gc.dense(h, SIZES[2], "relu", name="fc2")
        out = gc.dense(h, SIZES[3], name="fc3")
        loss = gc.softmax_cross_entropy(out, gc.input("y", ("N",), dtype="i32"))
        return gc.compile(out, loss, gc.SGD(lr=LR), name="stack", threads=THREADS)


    def reference(w, x, y):
        # float64: logits of x, then the parameters after one SGD step on (x, y)
        w = {k: v.astype(np.float64) for k, v in w.items()}
        acts, z = [x.astype(np.float64)], None
        for i in (1, 2, 3):
            z = acts[-1] @ w[f"fc{i}.w"] + w[f"fc{i}.b"]
            acts.append(np.maximum(z, 0.0) if i < 3 else z)
        logits = acts[-1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        loss = float(np.mean(-np.log(p[np.arange(len(y)), y])))
        dz = p.copy()
        dz[np.arange(len(y)), y] -= 1.0
        dz /= len(y)
        new = {}
        for i in (3, 2, 1):
            new[f"fc{i}.w"] = w[f"fc{i}.w"] - LR * (acts[i - 1].T @ dz)
            new[f"fc{i}.b"] = w[f"fc{i}.b"] - LR * dz.sum(axis=0)
            if i > 1:
                dz = (dz @ w[f"fc{i}.w"].T) * (acts[i - 1] > 0)
        return logits, loss, new


    def check(what, got, want, tol):
        err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
        if not err < tol:
            raise SystemExit(f"{what}: relative error {err:.3g} >= {tol}")


    rng = np.random.default_rng(7)
    model = build()
    start = {
        k: (rng.standard_normal(v.shape) / np.sqrt(v.shape[0])).astype(np.float32)
        for k, v in model.get_weights().items()
    }
    model.set_weights(start)
    lib = gc.load(model.export(f"{OUT}/libstack.so").library)
    lib.threads = THREADS
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = (np.arange(BATCH) % SIZES[3]).astype(np.int32)
    logits, loss, new = reference(start, x, y)
    got = {}


    def run():  # the calls a small-stack thread makes: twice each (first and cached paths)
        for obj, name in ((model, "jit"), (lib, "lib")):
            got[name, "predict"] = [obj.predict(x).copy() for _ in range(2)]
        got["jit", "loss"] = model.train_step(x, y)
        got["lib", "loss"] = lib.train_step(x, y)


    threading.stack_size(128 * 1024)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    for name, obj in (("jit", model), ("lib", lib)):
        for p in got[name, "predict"]:
            check(f"{name} predict", p, logits, 1e-5)
        check(f"{name} loss", np.float64(got[name, "loss"]), loss, 1e-5)
        for k, v in new.items():
            check(f"{name} {k} after the step", obj.params[k], v, 1e-5)
    print("ok")
    """
)


@pytest.mark.parametrize("threads", [1, 2])
def test_entries_run_on_a_thread_with_a_128_kib_stack(tmp_path, threads) -> None:
    env = dict(os.environ)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (
        f"exit {r.returncode} (a negative code is the signal that killed it)\n"
        f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    )


@pytest.mark.parametrize("m", [1, 3, 6, 40])
def test_products_write_only_inside_the_workspace(m: int) -> None:
    """Every product's packed blocks lie inside ``workspace_bytes(n)``: the entry runs on a
    workspace of exactly that size followed by guard bytes, which come back untouched, and
    every product equals numpy's in float64. All four transposes at M = 1 and 3 (the direct
    paths, and the packed path that A^T @ B^T takes at any M), 6 and 40 (packed, with edge
    slivers: N = 70, K = 300 against tiles of 16..64 columns); one model per M, so that no
    larger product's blocks make room for a smaller one's. Each model also holds the four
    products at M = 41, K = 5, which share the GEMM functions: M is then an argument, not a
    constant that rules paths out."""
    import graphc as gc
    from graphc.runtime.buffers import aligned_empty

    rng = np.random.default_rng(m)
    n, guard = 70, 1 << 20  # guard bytes: more than any block, so that an overrun shows here
    outs, arrays, want = [], {}, []
    for rows, k in ((m, 300), (41, 5)):
        for ta in (False, True):
            for tb in (False, True):
                tag = f"{'t' if ta else 'n'}{'t' if tb else 'n'}{rows}"
                a = rng.standard_normal((k, rows) if ta else (rows, k)).astype(np.float32)
                b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
                arrays[f"a{tag}"], arrays[f"b{tag}"] = a, b
                x, w = gc.input(f"a{tag}", a.shape), gc.input(f"b{tag}", b.shape)
                outs.append(gc.matmul(x, w, transpose_a=ta, transpose_b=tb))
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                want.append((a64.T if ta else a64) @ (b64.T if tb else b64))
    model = gc.compile(outs, name=f"ws_bounds{m}", threads=1)
    entry = model.entries["infer"]
    size = entry.sched.workspace_bytes(1)
    buf = aligned_empty(size + guard)
    buf[size:] = 0xAB
    entry.use_workspace(buf[:size], 1)
    got = entry([arrays[v] for v in entry.sched.input_slots], 1)
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w_, rtol=1e-4, atol=1e-4)
    assert (buf[size:] == 0xAB).all(), "a kernel wrote past the workspace"
