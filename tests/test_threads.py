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


def _wide_predict(name: str) -> gc.Model:
    # x[N, 256] @ W[256, 64]: N = 64 rows are 4 x PARALLEL_MIN_MACS multiply-adds (packed path),
    # N = 1024 rows 64 x
    x = gc.input("x", ("N", 256))
    return gc.compile(gc.dense(x, 64, name="d"), name=name, seed=5, threads=1)


def test_dispatch_cost_is_measured_and_raises_the_split_thresholds(monkeypatch) -> None:
    """The pool measures what a dispatch costs (codegen/threads.py's probe) and multiplies the
    split thresholds by scale_of(cost): below FAR_NS a product of 4 x PARALLEL_MIN_MACS is
    split; from FAR_NS only one of FAR_SCALE x; at a cost of a millisecond (MAX_SCALE) neither.
    The bits are the 1-thread model's either way, and the probe's own dispatches are not
    counted."""
    from graphc.codegen import threads as th
    from graphc.codegen.threads import FAR_NS, FAR_SCALE, MAX_SCALE, NS_PER_SCALE, PRODUCTS

    ABSENT_NS = 1_000_000
    for kind in (th.PRODUCTS, th.LOOPS):
        far = FAR_SCALE[kind]
        costs = (0, FAR_NS - 1, FAR_NS, far * NS_PER_SCALE, 300 * NS_PER_SCALE, ABSENT_NS, 10**12)
        got = [th.scale_of(c, kind) for c in costs]
        assert got == [1, 1, far, far, 300, MAX_SCALE, MAX_SCALE]
    assert PARALLEL_MIN_MACS * 4 == 64 * 256 * 64 and PARALLEL_MIN_MACS * 64 == 1024 * 256 * 64
    assert 4 < FAR_SCALE[PRODUCTS] <= 64
    monkeypatch.delenv("GRAPHC_DISPATCH_NS", raising=False)
    m = _wide_predict("probe_split")
    name = m.program.name
    rng = np.random.default_rng(4)
    data = {
        "small": rng.standard_normal((64, 256)).astype(np.float32),
        "large": rng.standard_normal((1024, 256)).astype(np.float32),
    }
    m.threads = 1
    want = {n: m.predict(x) for n, x in data.items()}
    m.threads = 2
    cost = m.jit.dispatch_cost(name, -1)
    assert 0 < cost < 10**9  # measured at the pool's start, in ns
    d0 = m.jit.dispatches(name)
    assert 0 < m.jit.dispatch_cost(name, 0) < 10**9  # measured again now: 3 x 16 dispatches
    assert m.jit.dispatches(name) == d0  # ... that the counter leaves out
    for fixed, splits in ((FAR_NS - 1, {"small", "large"}), (FAR_NS, {"large"}), (ABSENT_NS, ())):
        assert m.jit.dispatch_cost(name, fixed) == fixed
        for n, x in data.items():
            d0 = m.jit.dispatches(name)
            got = m.predict(x)
            assert (m.jit.dispatches(name) > d0) == (n in splits), (fixed, n)
            np.testing.assert_array_equal(got, want[n])
    w = m.get_weights()
    ref = data["large"].astype(np.float64) @ w["d.w"].astype(np.float64) + w["d.b"]
    np.testing.assert_allclose(want["large"], ref, rtol=1e-5, atol=1e-4)


def test_training_with_a_high_dispatch_cost_is_bit_identical(cache) -> None:
    """A step whose products and update stay on the caller (a worker found absent: a cost of
    1 ms) gives the bits of the 1-thread step and of the 2-thread step that splits them."""
    from graphc.codegen.threads import FAR_NS

    ABSENT_NS = 1_000_000

    x, y = _data(64)
    out = []
    for threads, cost in ((1, 0), (2, FAR_NS // 2), (2, ABSENT_NS)):
        m = _net(threads)
        if cost:
            m.jit.dispatch_cost(m.program.name, cost)
        d0 = m.jit.dispatches(m.program.name)
        losses = [m.train_step(x, y) for _ in range(3)]
        moved = m.jit.dispatches(m.program.name) > d0
        assert moved == (cost == FAR_NS // 2), (threads, cost)
        out.append((losses, m.get_weights()))
    for losses, weights in out[1:]:
        assert losses == out[0][0]
        for k, v in weights.items():
            np.testing.assert_array_equal(v, out[0][1][k])


def test_dispatch_cost_env_must_be_positive(monkeypatch) -> None:
    from graphc.ir.errors import ArgumentError

    m = _wide_predict("probe_env")
    for bad in ("abc", "0", "-5", "1.5"):
        monkeypatch.setenv("GRAPHC_DISPATCH_NS", bad)
        with pytest.raises(ArgumentError, match=rf"GRAPHC_DISPATCH_NS='{bad}'"):
            m.threads = 2
    monkeypatch.setenv("GRAPHC_DISPATCH_NS", "123456")
    m.threads = 2
    assert m.jit.dispatch_cost(m.program.name, -1) == 123456


def test_one_late_probe_does_not_move_work_and_large_work_always_splits(monkeypatch) -> None:
    """The pool's cost is the median of its last 3 probes (codegen/threads.py): one probe that
    found the worker late (here recorded through NAME_pool_observe, as a probe records it)
    leaves the split decisions as they were; two move them, but a product of MAX_SCALE x
    PARALLEL_MIN_MACS multiply-adds (2^28: [1024, 1024] @ [1024, 256]; predict runs 1,024
    rows at a time) splits at any cost, and its bits are the 1-thread product's. (4ea5449: one late probe of the cb72519 rule kept an
    n = 1024 GEMM on one thread for ~33 s.)"""
    from graphc.codegen.threads import FAR_NS, MAX_SCALE

    monkeypatch.delenv("GRAPHC_DISPATCH_NS", raising=False)
    x = gc.input("x", ("N", 1024))
    m = gc.compile(gc.dense(x, 256, name="d"), name="late_probe", seed=5, threads=1)
    name = m.program.name
    rng = np.random.default_rng(6)
    small = rng.standard_normal((64, 1024), dtype=np.float32)  # 2^24 MACs: 64 x the threshold
    large = rng.standard_normal((1024, 1024), dtype=np.float32)
    assert MAX_SCALE * PARALLEL_MIN_MACS == 1024 * 1024 * 256
    want = {id(a): m.predict(a) for a in (small, large)}
    m.threads = 2

    def splits(a: np.ndarray) -> bool:
        d0 = m.jit.dispatches(name)
        got = m.predict(a)
        np.testing.assert_array_equal(got, want[id(a)])
        return m.jit.dispatches(name) > d0

    near, late = FAR_NS // 2, 1_000_000
    for _ in range(3):
        m.jit.observe_dispatch(name, near)
    assert m.jit.dispatch_cost(name) == near
    assert splits(small) and splits(large)
    assert m.jit.observe_dispatch(name, late) == near  # one late probe: the median stays
    assert splits(small) and splits(large)
    assert m.jit.observe_dispatch(name, late) == late  # two of three: the worker is far
    assert not splits(small)
    assert splits(large)  # MAX_SCALE x the threshold: split whatever the cost
    assert m.jit.observe_dispatch(name, near) == late
    assert m.jit.observe_dispatch(name, near) == near  # and back with two near probes
    assert splits(small)
