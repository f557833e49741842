"""Threads in the generated code (codegen/threads.py, the GEMM's split in codegen/gemm.py):
training and predict give the same bits with any thread count, and agree with numpy; workers
start and stop with Model.threads; concurrent callers of one model stay correct."""

from __future__ import annotations

import gc as pygc
import os
import threading
import time

import numpy as np
import pytest

import graphc as gc
from graphc.codegen.gemm import PARALLEL_MIN_MACS, JitGemm


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _net(threads: int) -> gc.Model:
    # 64 x 700 x 200 = 9M multiply-adds per forward GEMM: well above PARALLEL_MIN_MACS; 147,710
    # parameters, so Adam's flat update loop splits too (PARALLEL_MIN_ELEMENTS).
    x = gc.input("x", ("N", 200))
    h = gc.dense(x, 700, "relu", name="fc1")
    logits = gc.dense(h, 10, name="fc2")
    return gc.compile(
        logits,
        loss=gc.softmax_cross_entropy(logits, gc.input("y", ("N",), "i32")),
        optimizer=gc.Adam(1e-3),
        name="threadnet",
        seed=3,
        threads=threads,
    )


def _data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((rows, 200)).astype(np.float32),
        rng.integers(0, 10, rows).astype(np.int32),
    )


def test_gemm_split_is_bit_identical_to_one_thread_and_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    # along M (M >= N) and along N, uneven blocks, edges smaller than a tile, M*N*K just
    # above and below PARALLEL_MIN_MACS
    shapes = [
        (128, 256, 784),
        (784, 256, 128),
        (130, 10, 300),
        (97, 301, 33),
        (301, 97, 33),
        (64, 64, 64),
        (64, 64, 63),
        (1000, 20, 50),
        # the small-M path splits N when B holds >= DIRECT_PARALLEL_MIN values
        (1, 300, 256),
        (1, 600, 256),
        (1, 37, 4000),
        (3, 1000, 70),
        (5, 257, 300),
        (2, 40, 40),
    ]
    assert 64 * 64 * 64 >= PARALLEL_MIN_MACS > 64 * 64 * 63
    for ta, tb in [(False, False), (True, False), (False, True)]:
        g = JitGemm.compile(trans_a=ta, trans_b=tb, threads=1)
        for m, n, k in shapes:
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
            outs = []
            for t in (1, 2, 3):
                g.owner.set_threads(t)
                outs.append(g(a, b, np.full((m, n), np.nan, np.float32)))
            ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
            np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-4 * np.sqrt(k))
            for o in outs[1:]:
                assert np.array_equal(o, outs[0]), (ta, tb, m, n, k)


def test_sleeping_workers_wake_for_the_next_product() -> None:
    """Workers that polled long enough to sleep on the condition variable (codegen/threads.py)
    are woken by the next dispatch (or left their blocks to the caller): every call after a
    pause completes with the exact result."""
    g = JitGemm.compile(threads=2)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((300, 256)).astype(np.float32)
    b = rng.standard_normal((256, 300)).astype(np.float32)
    want = g(a, b, np.empty((300, 300), np.float32))
    for _ in range(5):
        time.sleep(0.05)  # > the ~1 ms of polling
        assert np.array_equal(g(a, b, np.empty((300, 300), np.float32)), want)


def test_training_is_bit_identical_with_1_2_3_threads(cache) -> None:
    x, y = _data(640)
    results = []
    for threads in (1, 2, 3):
        m = _net(threads)
        assert m.threads == threads
        losses = [m.train_step(x[i : i + 64], y[i : i + 64]) for i in range(0, 320, 64)]
        m.fit(x, y, epochs=2, batch_size=64, shuffle=True, verbose=0)  # the epoch entry
        results.append((losses, {k: v.copy() for k, v in m.params.items()}, m.predict(x[:300])))
    for losses, params, pred in results[1:]:
        assert losses == results[0][0]
        for k in params:
            assert np.array_equal(params[k], results[0][1][k]), k
        assert np.array_equal(pred, results[0][2])


def test_threaded_predict_matches_numpy(cache) -> None:
    m = _net(2)
    x, _ = _data(203, seed=5)  # 203 rows: blocks of uneven size
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    ref = np.maximum(x @ p["fc1.w"] + p["fc1.b"], 0) @ p["fc2.w"] + p["fc2.b"]
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-4, atol=1e-4)


def test_workers_start_and_stop_with_model_threads(cache) -> None:
    m = _net(1)
    pygc.collect()  # models of other tests join their workers when collected
    before = _os_threads()
    m.threads = 3
    assert m.threads == 3 and _os_threads() == before + 2
    m.threads = 2
    assert _os_threads() == before + 1
    m.threads = 1
    assert _os_threads() == before
    m.threads = 2
    del m
    pygc.collect()
    assert _os_threads() == before  # the JIT module joined its worker before freeing its code


def test_concurrent_callers_of_one_model(cache) -> None:
    """Python threads calling one model take turns (Model's lock); the results stay exact."""
    m = _net(2)
    x, _ = _data(256, seed=7)
    want = m.predict(x)
    errors: list[str] = []

    def call() -> None:
        for _ in range(20):
            if not np.array_equal(m.predict(x), want):
                errors.append("mismatch")

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_concurrent_dispatches_into_one_pool() -> None:
    """Callers that find the pool busy run their blocks alone (codegen/threads.py): several
    Python threads calling GEMMs of one module at once, each into its own C."""
    g = JitGemm.compile(threads=2)
    rng = np.random.default_rng(4)
    a = rng.standard_normal((96, 200)).astype(np.float32)
    bs = [rng.standard_normal((200, 150)).astype(np.float32) for _ in range(4)]
    want = [g(a, b, np.empty((96, 150), np.float32)) for b in bs]
    errors: list[int] = []

    def call(k: int) -> None:
        c = np.empty((96, 150), np.float32)
        for _ in range(200):
            if not np.array_equal(g(a, bs[k], c), want[k]):
                errors.append(k)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


FORK_SCRIPT = r"""
import os, sys, time
import numpy as np
import graphc as gc
x = gc.input("x", ("N", 200))
out = gc.dense(gc.dense(x, 300, "relu"), 10)
m = gc.compile(out, name="forked", threads=2)
lib = gc.load(m.export(os.path.join(sys.argv[1], "libforked.so")).library)
lib.threads = 2
X = np.ones((256, 200), np.float32)
want, want_lib = m.predict(X), lib.predict(X)
time.sleep(0.05)  # the workers poll, then sleep on the condition variable
import threading
held, release = threading.Event(), threading.Event()
def hold():  # a parent thread inside a call of the model and the library when the fork comes
    with m._lock, lib._lock:
        held.set()
        release.wait()
threading.Thread(target=hold).start()
held.wait()
pid = os.fork()
release.set()
if pid == 0:  # the child has none of the parent's workers
    ok = m.threads == 1 and lib.threads == 1
    m.threads = 2  # would join workers that are not there without the fork handlers
    lib.threads = 2
    ok = ok and np.array_equal(m.predict(X), want) and np.array_equal(lib.predict(X), want_lib)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""


def test_fork_child_forgets_the_parents_workers(tmp_path) -> None:
    """After os.fork() (multiprocessing's default on Linux), the child's models and libraries
    run on one thread, can start their own workers, and give the parent's results."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GRAPHC_CACHE_DIR": str(tmp_path / "c")},
    )
    assert r.returncode == 0, r.stderr
    assert "child 0" in r.stdout, r.stdout + r.stderr


def test_threads_must_be_positive(cache) -> None:
    x = gc.input("x", ("N", 2))
    with pytest.raises(gc.GraphcError, match="threads"):
        gc.compile(gc.dense(x, 1), threads=0)
    m = gc.compile(gc.dense(x, 1, name="fc"))
    with pytest.raises(gc.GraphcError, match="threads"):
        m.threads = -1
    big = _net(1)
    big.threads = 2**32 + 2  # clamped to MAX_THREADS, not wrapped to 2 by the int32 argument
    assert big.threads == 64
    big.threads = 1
    assert big.threads == 1


def test_workers_have_room_for_the_gemm_blocks_whatever_the_default_stack(tmp_path) -> None:
    """The GEMM's packed blocks live on the stack (up to 386 KiB); workers are started with
    an 8 MiB stack, not the C library's default (musl: 128 KiB; glibc: RLIMIT_STACK). Here the
    default is 256 KiB: without the explicit size a 2-thread 1024x512x512 product crashed."""
    import resource
    import subprocess
    import sys

    script = tmp_path / "small_stack.py"
    script.write_text(
        "import threading\n"
        "threading.stack_size(64 << 20)  # the calling thread's own room\n"
        "def main():\n"
        "    import numpy as np, graphc as gc\n"
        "    x = gc.input('x', ('N', 512))\n"
        "    m = gc.compile([gc.matmul(x, gc.param('w', (512, 512)))], threads=2)\n"
        "    a = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)\n"
        "    want = a.astype(np.float64) @ m.params['w'].astype(np.float64)\n"
        "    print(float(np.abs(m.predict(a) - want).max()))\n"
        "t = threading.Thread(target=main)\n"
        "t.start()\n"
        "t.join()\n"
    )

    def small_default_stack() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (256 << 10, resource.RLIM_INFINITY))

    r = subprocess.run(
        [sys.executable, str(script)],
        preexec_fn=small_default_stack,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert float(r.stdout.split()[-1]) < 1e-4
