"""Runtime hardening found by an adversarial pass: lr = 0, allocation failures (WorkspaceError),
snapshots taken while another thread trains, copies and pickles of models, BatchNorm on one
row, the clip gradient at its bounds."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _mlp(name: str, h: int = 8, opt=None, din: int = 6, classes: int = 3, **kw):
    x = gc.input("x", ("N", din))
    y = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, h, "relu"), classes)
    loss = gc.softmax_cross_entropy(logits, y)
    return gc.compile(logits, loss, opt or gc.SGD(lr=0.05), name=name, **kw)


def _data(n: int, din: int = 6, classes: int = 3, seed: int = 0):
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((n, din)).astype(np.float32),
        r.integers(0, classes, n).astype(np.int32),
    )


# ---------------------------------------------------------------- lr = 0, allocation failures


@pytest.mark.parametrize("opt", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_optimizers_accept_lr_zero_and_refuse_negative(opt: str) -> None:
    assert getattr(gc, opt)(lr=0.0).lr == 0.0  # torch.optim refuses only lr < 0
    for bad in (-1e-3, float("nan"), float("inf"), True):
        with pytest.raises(gc.GraphcError, match="lr must be a finite number >= 0"):
            getattr(gc, opt)(lr=bad)


def test_lr_zero_optimizer_leaves_sgd_params_unchanged() -> None:
    m = _mlp("lr_zero_sgd", opt=gc.SGD(lr=0.0))
    x, y = _data(16)
    w0 = m.get_weights()
    m.train_step(x, y)
    assert all(np.array_equal(w0[k], v) for k, v in m.get_weights().items())


def test_workspace_allocation_failure_names_batch_and_fix() -> None:
    m = _mlp("ws_fail")
    x, _ = _data(4)
    want = m.predict(x)
    e = m.entries["infer"]
    rows = 2**50
    with pytest.raises(gc.WorkspaceError, match=rf"batch of {rows} rows: use a smaller batch"):
        e.prepare(rows)
    with pytest.raises(gc.ShapeError):  # still a ShapeError and a MemoryError for old callers
        e.prepare(rows)
    assert issubclass(gc.WorkspaceError, MemoryError)
    np.testing.assert_array_equal(m.predict(x), want)  # nothing changed


# ---------------------------------------------------------------- clip's gradient at the bounds


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-0.5, 0.5), (0.25, 0.25)])
def test_clip_gradient_is_zero_at_the_bounds_and_fd_inside(lo: float, hi: float) -> None:
    # torch >= 2.x (2.14.1 checked): d/dx clamp(x, lo, hi) = [lo < x < hi]; 0 at both bounds
    v = np.array([[lo - 1.0, lo, (lo + hi) / 2, hi, hi + 1.0, lo + 0.1, hi - 0.1]], np.float32)
    x = gc.input("x", ("N", v.shape[1]))
    p = gc.param("p", (v.shape[1],), init="zeros")
    y = gc.clip(gc.add(x, p), min=lo, max=hi)
    m = gc.compile(y, gc.sum(y), gc.SGD(lr=1e-3), name=f"clipg{int(lo * 4) + 4}{int(hi * 4) + 4}")
    g = m.gradients({"x": v})["p"]
    want = ((v[0] > lo) & (v[0] < hi)).astype(np.float32)
    np.testing.assert_array_equal(g, want)
    # away from the bounds: central differences of numpy's clip (float64)
    h = 1e-3
    for j, xj in enumerate(v[0].astype(np.float64)):
        if min(abs(xj - lo), abs(xj - hi)) > 2 * h:
            fd = (np.clip(xj + h, lo, hi) - np.clip(xj - h, lo, hi)) / (2 * h)
            assert abs(g[j] - fd) < 1e-6, (j, xj, g[j], fd)
    # the same convention as hard_tanh (which is clip(x, -1, 1))
    if (lo, hi) == (-0.5, 0.5):
        u = np.array([[-1.0, -0.5, 0.0, 1.0, 2.0]], np.float32) * 2
        x2 = gc.input("x", ("N", 5))
        q = gc.param("q", (5,), init="zeros")
        a = gc.clip(gc.add(x2, q), min=-1.0, max=1.0)
        b = gc.activation(gc.add(x2, q), "hard_tanh")
        ma = gc.compile(a, gc.sum(a), gc.SGD(lr=1e-3), name="clip_ht_a")
        mb = gc.compile(b, gc.sum(b), gc.SGD(lr=1e-3), name="clip_ht_b")
        np.testing.assert_array_equal(ma.gradients({"x": u})["q"], mb.gradients({"x": u})["q"])


# ---------------------------------------------------------------- snapshots while training


def _flat(w: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in w.values()])


class _Snapper:
    """A thread taking get_weights snapshots (and save checkpoints) until stopped."""

    def __init__(self, take) -> None:
        import threading

        self.take, self.snaps, self.stop = take, [], threading.Event()
        self.t = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            self.snaps.append(self.take())

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.t.join()


def _torn(traj: np.ndarray, snaps: list[np.ndarray]) -> list[int]:
    """Indices of snapshots equal to no row of the trajectory."""
    return [i for i, s in enumerate(snaps) if not (traj == s).all(axis=1).any()]


@pytest.mark.parametrize("per_step", [False, True])
def test_snapshots_during_fit_are_whole_steps(tmp_path, per_step: bool) -> None:
    # wide enough that a copy overlaps a native step's update (torn before the lock: about a
    # third of the snapshots of the adversary's run matched no step)
    x, y = _data(1024, din=64, classes=10)

    def make():
        return _mlp("torn_fit", h=128, din=64, classes=10, opt=gc.SGD(lr=0.01), threads=1)

    ref = make()
    traj = [_flat(ref.get_weights())]

    class Rec:
        def on_batch_end(self, batch, logs):
            traj.append(_flat(ref.get_weights()))

    epochs = 8
    ref.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[Rec()])
    traj = np.stack(traj)
    steps_per_epoch = 1024 // 32

    m = make()
    keys = list(m.params)
    path = str(tmp_path / "ck.npz")

    count = [0]

    def take():  # get_weights always, save (slower: fsync) every 8th time
        count[0] += 1
        w = _flat(m.get_weights())
        if count[0] % 8:
            return w, w
        m.save(path)
        with np.load(path) as z:
            return w, _flat({k: z[f"param/{k}"] for k in keys})

    class Gate:  # epoch 0 starts once the snapper waits for the lock (whatever the load)
        def on_epoch_begin(self, model, epoch):
            import time

            end = time.monotonic() + 10
            waiters = getattr(model, "_waiters", None)  # (runtime/parallel.py turn)
            while epoch == 0 and waiters and not waiters.count and time.monotonic() < end:
                time.sleep(0.001)

    class Nop(Gate):  # a batch hook: fit runs one native call per step
        def on_batch_end(self, batch, logs):
            pass

    with _Snapper(take) as sn:
        m.fit(
            x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[Nop() if per_step else Gate()]
        )
    np.testing.assert_array_equal(_flat(m.get_weights()), traj[-1])
    gets = [a for a, _ in sn.snaps]
    saves = [b for _, b in sn.snaps]
    assert len(gets) >= 2
    assert _torn(traj, gets) == [] and _torn(traj, saves) == []
    # the snapshots did not all wait for fit's end: one at least landed at a boundary inside
    where = {int(np.flatnonzero((traj == s).all(axis=1))[0]) for s in gets}
    assert min(where) < len(traj) - 1, where
    if not per_step:  # native epochs: only at epoch boundaries
        assert all(k % steps_per_epoch == 0 for k in where), where


def test_set_weights_from_another_thread_lands_between_steps() -> None:
    import threading

    x, y = _data(256, din=64, classes=10)
    m = _mlp("torn_set", h=64, din=64, classes=10, threads=1)
    zeros = {k: np.zeros_like(v) for k, v in m.get_weights().items()}
    t = threading.Thread(target=lambda: [m.set_weights(zeros) for _ in range(20)])
    t.start()
    m.fit(x, y, epochs=20, batch_size=16, verbose=0)
    t.join()
    w = m.get_weights()  # whole: no parameter is left half zeroed by a concurrent step
    for v in w.values():
        assert np.all(v == 0) or np.all(v != 0) or v.ndim == 1


def test_library_snapshots_during_train_steps_are_whole(tmp_path) -> None:
    import threading

    x, y = _data(64, din=64, classes=10)
    m = _mlp("torn_lib", h=256, din=64, classes=10, threads=1)
    lib = gc.load(m.export(str(tmp_path / "libtorn_lib.so")).library)
    ref = gc.load(str(tmp_path / "libtorn_lib.so"))
    keys = list(lib.params)
    traj = [_flat({k: ref.params[k] for k in keys})]
    for _ in range(30):
        ref.train_step(x, y)
        traj.append(_flat({k: ref.params[k] for k in keys}))
    traj = np.stack(traj)

    started = threading.Event()

    def train():
        started.wait(10)
        for _ in range(30):
            lib.train_step(x, y)

    t = threading.Thread(target=train)
    snaps = []
    t.start()
    while True:
        w = lib.get_weights()
        snaps.append(_flat({k: w[k] for k in keys}))
        started.set()
        if not t.is_alive():
            break
    t.join()
    assert snaps and _torn(traj, snaps) == []
    np.testing.assert_array_equal(_flat(lib.get_weights()), _flat(ref.get_weights()))
    img = lib.weights_file_bytes()  # the params' bytes, after the header
    flat = np.frombuffer(img[len(img) - lib._params.nbytes :], np.uint8)
    assert bytes(flat) == lib._params.tobytes()


# ---------------------------------------------------------------- BatchNorm on one row


def _bn_model(name: str):
    x = gc.input("x", ("N", 6))
    t = gc.input("t", ("N", 1))
    out = gc.dense(gc.batch_norm(gc.dense(x, 5, name="fc"), name="bn"), 1, name="out")
    return gc.compile(out, gc.mean_squared_error(out, t), gc.SGD(lr=0.05), name=name)


def _arena(m) -> tuple[bytes, bytes]:
    return m._param_region.tobytes(), m._state_region.tobytes()


def test_batch_norm_refuses_a_one_row_training_batch() -> None:
    m = _bn_model("bn_one_row")
    r = np.random.default_rng(0)
    x = r.standard_normal((65, 6)).astype(np.float32)
    t = x[:, :1].copy()
    before = _arena(m)
    for f in (lambda: m.train_step(x[:1], t[:1]), lambda: m.gradients({"x": x[:1], "t": t[:1]})):
        with pytest.raises(gc.ArgumentError, match=r"batch of 1 row through batch_norm \(bn\)"):
            f()
        assert _arena(m) == before
    # fit: the last partial batch of 65 rows in batches of 32 has 1 row: refused up front
    with pytest.raises(gc.ArgumentError, match=r"65 training rows in batches of 32 leave a last"):
        m.fit(x, t, epochs=1, batch_size=32, verbose=0)
    assert _arena(m) == before and m.history is None
    with pytest.raises(gc.ArgumentError, match="1 training row"):
        m.fit(x[:1], t[:1], epochs=1, verbose=0)
    # 2 rows (and 64 + 1 = 65 in batches of 33: 33 + 32) train; the 1-row rule only
    m.train_step(x[:2], t[:2])
    assert _arena(m) != before
    m.fit(x, t, epochs=1, batch_size=33, verbose=0)


def test_exported_batch_norm_library_refuses_one_row(tmp_path) -> None:
    m = _bn_model("bn_lib_one")
    r = np.random.default_rng(2)
    x = r.standard_normal((4, 6)).astype(np.float32)
    t = x[:, :1].copy()
    res = m.export(str(tmp_path / "libbn_lib_one.so"))
    assert "BN_LIB_ONE_ERR_ONE_ROW 13" in open(res.header).read()
    lib = gc.load(res.library)
    before = (lib._params.tobytes(), lib._state.tobytes())
    with pytest.raises(gc.ArgumentError, match=r"returned 13 .*batch_norm"):
        lib.train_step(x[:1], t[:1])
    assert (lib._params.tobytes(), lib._state.tobytes()) == before
    lib.train_step(x[:2], t[:2])
    assert lib._params.tobytes() != before[0]


def test_gradients_of_a_one_process_batch_norm_model() -> None:
    # worked only split over ranks before ("... each rank's own ..."): now one process's
    # gradient, by central differences of a float64 numpy forward (batch statistics)
    m = _bn_model("bn_grads")
    r = np.random.default_rng(1)
    x = r.standard_normal((8, 6)).astype(np.float32)
    t = r.standard_normal((8, 1)).astype(np.float32)
    w = {k: v.astype(np.float64) for k, v in m.get_weights().items()}
    before = _arena(m)
    g = m.gradients({"x": x, "t": t})
    assert _arena(m) == before  # running statistics and step untouched

    def loss(w):
        h = x @ w["fc.w"] + w["fc.b"]
        hn = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
        o = (hn * w["bn.gamma"] + w["bn.beta"]) @ w["out.w"] + w["out.b"]
        return np.mean((o - t) ** 2)

    eps = 1e-6
    for k in g:
        fd = np.zeros_like(w[k])
        for i in np.ndindex(*w[k].shape):
            up, dn = dict(w), dict(w)
            up[k], dn[k] = w[k].copy(), w[k].copy()
            up[k][i] += eps
            dn[k][i] -= eps
            fd[i] = (loss(up) - loss(dn)) / (2 * eps)
        np.testing.assert_allclose(g[k], fd, rtol=2e-3, atol=2e-5, err_msg=k)


def test_batch_norm_models_refuse_data_parallel_exports() -> None:
    m = _bn_model("bn_no_ranks")
    assert "batch_norm" in m.program.ranks_note
    from graphc.runtime.distributed import split_step

    with pytest.raises(gc.DistributedError, match="cannot train data-parallel"):
        split_step(m, 8, None, "allreduce", False)  # refused before any collective
    with pytest.raises(gc.ArgumentError, match="cannot do: its batch statistics"):
        m.export("/nonexistent/libbn_no_ranks.so", entries="train_grads,apply_update")


# ---------------------------------------------------------------- copy, deepcopy, pickle


def _trained(name: str):
    m = _mlp(name, opt=gc.Adam(lr=0.01))
    x, y = _data(96)
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    m.lr = 0.004
    return m, x, y


def _same_model(a, b, x, y) -> None:
    """Same predictions, weights, optimizer state, step, lr, history; then the same
    continued trajectory, and training one leaves the other as it was."""
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    for k, v in a.state.items():
        np.testing.assert_array_equal(v, b.state[k], err_msg=k)
    assert (a.lr, a.initial_lr) == (b.lr, b.initial_lr)
    assert a.history.metrics == b.history.metrics and a.history.epochs == b.history.epochs
    assert a._param_region.ctypes.data != b._param_region.ctypes.data
    keep = b._param_region.copy()
    la = a.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)["loss"]
    np.testing.assert_array_equal(b._param_region, keep)  # untouched by a's training
    lb = b.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)["loss"]
    assert la == lb
    np.testing.assert_array_equal(a._param_region, b._param_region)


@pytest.mark.parametrize("how", ["deepcopy", "copy", "pickle"])
def test_model_copies_are_independent_and_equal(how: str) -> None:
    import copy
    import pickle

    m, x, y = _trained(f"copy_{how}")
    c = {
        "deepcopy": copy.deepcopy,
        "copy": copy.copy,
        "pickle": lambda o: pickle.loads(pickle.dumps(o)),
    }[how](m)
    assert type(c) is type(m)
    _same_model(c, m, x, y)


def _predict_in_worker(blob: bytes, x: np.ndarray) -> np.ndarray:
    import pickle

    return pickle.loads(blob).predict(x)


def test_model_pickles_into_a_spawned_process() -> None:
    import multiprocessing as mp
    import pickle

    m, x, _ = _trained("copy_spawn")
    with mp.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_predict_in_worker, (pickle.dumps(m), x))
    np.testing.assert_array_equal(got, m.predict(x))


def test_library_copies_and_pickles(tmp_path) -> None:
    import copy
    import pickle

    m, x, y = _trained("copy_lib")
    path = m.export(str(tmp_path / "libcopy_lib.so")).library
    lib = gc.load(path)
    lib.train_step(x[:32], y[:32])
    for c in (copy.copy(lib), copy.deepcopy(lib), pickle.loads(pickle.dumps(lib))):
        np.testing.assert_array_equal(c.predict(x), lib.predict(x))
        assert c.lr == lib.lr and c._params.ctypes.data != lib._params.ctypes.data
        w = lib.get_weights()
        c.train_step(x[32:64], y[32:64])  # the copy trains; the original stays
        assert all(np.array_equal(v, lib.get_weights()[k]) for k, v in w.items())
        lib2 = copy.deepcopy(lib)
        lib2.train_step(x[32:64], y[32:64])
        assert all(np.array_equal(v, lib2.get_weights()[k]) for k, v in c.get_weights().items())
    blob = pickle.dumps(lib)
    with open(path, "ab") as f:  # the file changed: refused with what to do
        f.write(b"\0")
    with pytest.raises(gc.GraphcError, match="has changed since it was loaded"):
        pickle.dumps(lib)
    with pytest.raises(gc.GraphcError):
        pickle.loads(blob)


def test_library_set_weights_checks_values_as_the_model_does(tmp_path) -> None:
    """Library.set_weights and Model.set_weights share one value check (runtime.checks.
    param_value): a float64 value that overflows float32, another shape, a complex value or an
    unknown name is refused with nothing written; float64 values that fit are converted."""
    m, _, _ = _trained("setw_lib")
    lib = gc.load(m.export(str(tmp_path / "libsetw_lib.so")).library)
    before = lib.get_weights()
    name = next(iter(lib.params))
    shape = lib.params[name].shape
    fine = np.full(shape, 0.25, np.float64)
    bad_values = [
        {name: fine, "nope": fine},  # unknown name after a good one: all or none
        {name: np.full(shape, 1e39)},  # overflows float32
        {name: np.zeros(shape[::-1] + (1,))},  # another shape
        {name: np.zeros(shape, np.complex64)},  # not a real number
    ]
    for bad in bad_values:
        for target in (lib, m):
            with pytest.raises(gc.ArgumentError, match=f"set_weights: .*({name}|'nope')"):
                target.set_weights(bad)
        assert all(np.array_equal(v, lib.get_weights()[k]) for k, v in before.items())
    lib.set_weights({name: fine})
    np.testing.assert_array_equal(lib.params[name], fine.astype(np.float32))


def test_library_workspace_failure_names_batch(tmp_path) -> None:
    m = _mlp("ws_fail_lib", h=4096)  # ~50 KB a row: max_batch rows are ~50 TB
    lib = gc.load(m.export(str(tmp_path / "libws_fail_lib.so")).library)
    x, _ = _data(4)
    want = lib.predict(x)
    rows = lib.meta["max_batch"]  # the most the library takes: far more than memory here
    with pytest.raises(gc.WorkspaceError, match=rf"batch of {rows} rows: use a smaller batch"):
        lib._workspace(rows)
    np.testing.assert_array_equal(lib.predict(x), want)


def test_module_level_checkpoint_and_export_take_the_lock(tmp_path) -> None:
    import threading

    from graphc.runtime import checkpoint

    m = _mlp("lock_module")
    got = []
    with m._lock:  # another thread's checkpoint waits while this one holds the model
        t = threading.Thread(target=lambda: got.append(checkpoint.save(m, str(tmp_path / "c"))))
        t.start()
        t.join(0.3)
        assert t.is_alive() and not got
    t.join()
    assert got
