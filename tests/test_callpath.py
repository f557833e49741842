"""The call path (issue 12) and native input checks (issue 13 item 4).

Values are checked by the native entries: a bad label, a NaN/Inf row or a bad learning rate
raises an ArgumentError naming the input and the row, and leaves params and optimizer state
bitwise as they were (compared byte for byte). References: numpy float64 forward passes for
``predict(out=)``; the rows the tests plant the bad values in.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

import graphc as gc
from graphc.codegen.aot import abi_symbol
from graphc.ir.errors import ArgumentError


def _mlp(name: str, loss: str = "ce", opt=None) -> gc.Model:
    x = gc.input("x", ("N", 3))
    h = gc.dense(gc.dense(x, 5, "tanh", name="fc1"), 4 if loss == "ce" else 1, name="fc2")
    if loss == "ce":
        lo = gc.softmax_cross_entropy(h, gc.input("y", ("N",), dtype="i32"))
    elif loss == "bce_probs":  # on probabilities: the clamped Keras form
        lo = gc.binary_cross_entropy(gc.sigmoid(h), gc.input("y", ("N", 1)), from_logits=False)
    else:
        lo = gc.binary_cross_entropy(h, gc.input("y", ("N", 1)))
    return gc.compile(h, lo, opt or gc.Adam(lr=0.01), name=name, threads=1)


@pytest.fixture(scope="module")
def model() -> gc.Model:
    m = _mlp("cp_ce")
    rng = np.random.default_rng(0)
    m.train_step(rng.standard_normal((6, 3)).astype("f4"), np.arange(6, dtype="i4") % 4)
    return m  # one step taken: Adam's moments are not all zero


@pytest.fixture(scope="module")
def library(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("cp")
    model.export(str(d / "libcp_ce.so"))
    return gc.load(str(d / "libcp_ce.so"))


def _snapshot(obj) -> list[bytes]:
    return [v.tobytes() for v in obj.params.values()] + [v.tobytes() for v in obj.state.values()]


def _data(rng, n=8):
    return rng.standard_normal((n, 3)).astype("f4"), (np.arange(n) % 4).astype("i4")


@pytest.mark.parametrize("which", ["model", "library"])
@pytest.mark.parametrize("bad", [4, -1, 2**31 - 1])
def test_bad_label_at_row_k_names_row_k_and_changes_nothing(which, bad, request):
    obj = request.getfixturevalue(which)
    rng = np.random.default_rng(1)
    x, y = _data(rng)
    obj.train_step(x, y)  # the layout is now known: the fast path runs next
    before = _snapshot(obj)
    y2 = y.copy()
    y2[5] = bad
    with pytest.raises(ArgumentError, match=rf"labels 'y': row 5 has class {bad}, outside 0\.\.3"):
        obj.train_step(x, y2)
    assert _snapshot(obj) == before


@pytest.mark.parametrize("which", ["model", "library"])
def test_int64_label_beyond_int32_is_rejected_not_wrapped(which, request):
    obj = request.getfixturevalue(which)
    x, y = _data(np.random.default_rng(2))
    y64 = y.astype(np.int64)
    y64[6] = 2**32 + 3  # int32 wraps it to 3, a valid class
    before = _snapshot(obj)
    with pytest.raises(ArgumentError, match=r"row 6 has class 4294967299"):
        obj.train_step(x, y64)
    assert _snapshot(obj) == before


@pytest.mark.parametrize("which", ["model", "library"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_feature_row_is_named_and_nothing_changes(which, value, request):
    obj = request.getfixturevalue(which)
    x, y = _data(np.random.default_rng(3))
    obj.train_step(x, y)
    before = _snapshot(obj)
    x[3, 1] = value
    with pytest.raises(ArgumentError, match=r"input 'x': row 3 holds NaN or Inf \(1 rows\)"):
        obj.train_step(x, y)
    assert _snapshot(obj) == before


@pytest.mark.parametrize("lr", [np.nan, np.inf, -1e-3])
def test_bad_learning_rate_is_rejected_everywhere(model, library, lr):
    x, y = _data(np.random.default_rng(4))
    before, lib_before, old = _snapshot(model), _snapshot(library), model.lr
    with pytest.raises(ArgumentError, match="learning rate must be finite and >= 0"):
        model.lr = lr
    assert model.lr == old
    with pytest.raises(ArgumentError, match="learning rate must be finite and >= 0"):
        library.train_step(x, y, lr=lr)
    with pytest.raises(ArgumentError, match="learning rate"):
        library.lr = lr
    assert _snapshot(model) == before and _snapshot(library) == lib_before
    # the C entry itself, past the Python wrapper: the documented code, nothing written
    fn = library._lib[abi_symbol("cp_ce", "train_step")]
    fn.restype = ctypes.c_int
    loss = ctypes.c_float(7.0)
    rc = fn(
        ctypes.byref(library._ctx),
        ctypes.c_int64(8),
        ctypes.c_void_p(x.ctypes.data),
        ctypes.c_int64(x.size),
        ctypes.c_void_p(y.ctypes.data),
        ctypes.c_int64(y.size),
        ctypes.c_float(lr),
        ctypes.byref(loss),
    )
    assert rc == 12 and loss.value == 7.0  # CP_CE_ERR_LR
    assert _snapshot(library) == lib_before


@pytest.mark.parametrize("loss", ["bce", "bce_probs"])
def test_bce_targets_outside_unit_interval_are_named(tmp_path, loss):
    """Both binary cross-entropies (logits and probabilities) take targets in [0, 1]: the
    native scan of train_step, gc.load's library and the header say so."""
    m = _mlp("cp_bce", loss=loss, opt=gc.SGD(lr=0.1))
    x = np.random.default_rng(5).standard_normal((6, 3)).astype("f4")
    y = np.zeros((6, 1), "f4")
    m.train_step(x, y)
    before = _snapshot(m)
    y[4] = 2.0
    with pytest.raises(ArgumentError, match=r"targets 'y': row 4 holds \[2\.0\], outside \[0, 1\]"):
        m.train_step(x, y)
    assert _snapshot(m) == before
    m.export(str(tmp_path / "libcp_bce.so"))
    lib = gc.load(str(tmp_path / "libcp_bce.so"))
    with pytest.raises(ArgumentError, match=r"row 4 holds \[2\.0\]"):
        lib.train_step(x, y)
    h = (tmp_path / "cp_bce.h").read_text()
    assert "CP_BCE_ERR_TARGET 11" in h and "y in [0, 1] (CP_BCE_ERR_TARGET)" in h


def test_header_documents_the_checks(library):
    h = open(os.path.join(os.path.dirname(library.path), "cp_ce.h")).read()
    assert "#define CP_CE_Y_CLASSES 4" in h
    assert "CP_CE_ERR_LABEL 9" in h and "CP_CE_ERR_LR 12" in h
    assert "y in 0..CP_CE_Y_CLASSES-1 (CP_CE_ERR_LABEL)" in h


def test_evaluate_names_the_absolute_row_across_batches(model):
    x, y = _data(np.random.default_rng(6), n=40)
    y[27] = 9
    with pytest.raises(ArgumentError, match="row 27 has class 9"):
        model.evaluate(x, y, batch_size=8)


def test_fit_checks_the_data_once_and_allow_nonfinite_lets_it_through():
    """fit checks the data set once in numpy (its steps skip the native scans): a NaN row is
    named before anything changes; with allow_nonfinite=True fit runs and the NaN reaches the
    parameters, as asked."""
    m = _mlp("cp_fit", opt=gc.SGD(lr=0.1))
    x, y = _data(np.random.default_rng(7), n=16)
    before = _snapshot(m)
    start = {k: v.copy() for k, v in m.params.items()}
    x[2, 0] = np.nan
    with pytest.raises(ArgumentError, match="row 2 holds NaN"):
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert _snapshot(m) == before
    m.fit(x[3:], y[3:], epochs=1, batch_size=4, verbose=0)
    assert all(np.isfinite(v).all() for v in m.params.values())
    assert any(not np.array_equal(m.params[k], start[k]) for k in start)  # it trained
    m.fit(x, y, epochs=1, batch_size=4, verbose=0, allow_nonfinite=True, stop_on_nonfinite=False)
    assert np.isnan(m.params["fc1.w"]).any()


def _reference(m, x: np.ndarray) -> np.ndarray:
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    h = np.tanh(x.astype(np.float64) @ p["fc1.w"] + p["fc1.b"])
    return h @ p["fc2.w"] + p["fc2.b"]


@pytest.mark.parametrize("which", ["model", "library"])
def test_predict_out_is_written_in_place(which, request):
    obj = request.getfixturevalue(which)
    x = np.random.default_rng(8).standard_normal((10, 3)).astype("f4")
    want = _reference(obj, x)
    for batch_size in (1024, 3):  # one call, and rows split into batches
        out = np.full((10, 4), np.nan, "f4")
        for _ in range(2):  # the second call takes the cached-layout path
            got = obj.predict(x, batch_size=batch_size, out=out)
            assert got is out
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    first = obj.predict(x)
    again = obj.predict(x)
    assert first is not again  # each call returns its own array
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["model", "library"])
def test_predict_fast_path_keeps_every_result_and_each_out(which, request):
    """The known-layout path keeps pointers between calls (its own output buffer for small
    outputs, the last x and out): interleaved calls with new x objects, out= and without,
    small (batch 1, copied from the entry's buffer) and large (4800 bytes, written in place)
    outputs, and evaluate's batches in between, each give the float64 reference's values, and
    no later call changes an array an earlier one returned."""
    obj = request.getfixturevalue(which)
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((1, 3)).astype("f4") for _ in range(3)]
    big = rng.standard_normal((300, 3)).astype("f4")
    out = np.full((1, 4), np.nan, "f4")
    kept = []
    for _ in range(2):
        for a in xs:
            kept.append((obj.predict(a), a))
            assert obj.predict(a, out=out) is out
            np.testing.assert_allclose(out, _reference(obj, a), rtol=1e-5, atol=1e-6)
            kept.append((obj.predict(a.copy()), a))
        kept.append((obj.predict(big), big))
        if which == "model":
            obj.evaluate(big, np.arange(300, dtype="i4") % 4, batch_size=128)
    assert len({id(r) for r, _ in kept}) == len(kept)
    for r, a in kept:
        np.testing.assert_allclose(r, _reference(obj, a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["model", "library"])
def test_predict_fast_path_still_refuses_overlap_and_read_only_out(which, request):
    obj = request.getfixturevalue(which)
    buf = np.zeros(8, "f4")
    x, ok = buf[:3].reshape(1, 3), np.zeros((1, 4), "f4")
    for _ in range(2):  # the second call takes the known-layout path
        obj.predict(x, out=ok)
    with pytest.raises(ArgumentError, match=r"\bout overlaps") as e:
        obj.predict(x, out=buf[:4].reshape(1, 4))  # the same layouts, overlapping x
    assert "%" not in str(e.value)  # the one output is `out`, not the graph's value name
    ok.flags.writeable = False
    with pytest.raises(ArgumentError, match="writable") as e:
        obj.predict(x, out=ok)
    assert "%" not in str(e.value)


@pytest.mark.parametrize("which", ["model", "library"])
def test_predict_rejects_unsuitable_out(which, request):
    obj = request.getfixturevalue(which)
    x = np.zeros((4, 3), "f4")
    for bad in (
        np.zeros((4, 4), "f8"),
        np.zeros((5, 4), "f4"),
        np.zeros((4, 8), "f4")[:, ::2],
        np.zeros((4, 4), "f4").T.copy().T,
    ):
        with pytest.raises(ArgumentError, match="out"):
            obj.predict(x, out=bad)
    ro = np.zeros((4, 4), "f4")
    ro.flags.writeable = False
    with pytest.raises(ArgumentError, match="writable"):
        obj.predict(x, out=ro)


def test_cached_layout_still_rejects_a_changed_shape(model):
    x, y = _data(np.random.default_rng(9))
    model.train_step(x, y)
    with pytest.raises(ArgumentError, match="expects"):
        model.train_step(x[:, :2].copy(), y)
    with pytest.raises(ArgumentError):
        model.train_step(x, y[:5].copy())
    # a non-contiguous view of the right shape is converted, not misread: the same loss as
    # the contiguous array (evaluate changes nothing), and the float64 reference's loss
    wide = np.zeros((8, 6), "f4")
    wide[:, ::2] = x
    z = _reference(model, x)
    z = z - z.max(axis=1, keepdims=True)
    want = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(8), y]))
    for arr in (wide[:, ::2], x):
        np.testing.assert_allclose(model.evaluate(arr, y)["loss"], want, rtol=1e-5)


def _net(name: str, sizes: tuple[int, ...], loss: str) -> gc.Model:
    x = gc.input("x", ("N", sizes[0]))
    h = x
    for i, w in enumerate(sizes[1:]):
        h = gc.dense(h, w, "tanh" if i < len(sizes) - 2 else None, name=f"fc{i + 1}")
    if loss == "ce":
        lo = gc.softmax_cross_entropy(h, gc.input("y", ("N",), dtype="i32"))
    else:
        lo = gc.binary_cross_entropy(h, gc.input("y", ("N", 1)))
    return gc.compile(h, lo, gc.Adam(lr=1e-3), name=name, threads=2)


def test_small_work_never_wakes_the_thread_pool():
    """At 2 threads, the small networks' steps and batch-1 inference of a small network run on
    the calling thread alone (the pool's dispatch counter stays put), while a 512-row step of
    a wide layer does hand work to the pool (so the counter can move)."""
    rng = np.random.default_rng(10)
    for name, sizes, loss, n in (
        ("cp_2_8_1", (2, 8, 1), "bce", 4),
        ("cp_30_16_1", (30, 16, 1), "bce", 64),
        ("cp_64_32_10", (64, 32, 10), "ce", 1),
    ):
        m = _net(name, sizes, loss)
        assert m.threads == 2
        x = rng.standard_normal((n, sizes[0])).astype("f4")
        y = rng.integers(0, 2, (n, 1)).astype("f4") if loss == "bce" else np.zeros(n, "i4")
        before = m.jit.dispatches(name)
        for _ in range(3):
            m.train_step(x, y)
            m.predict(x[:1])
        assert m.jit.dispatches(name) == before, name
    big = _net("cp_wide", (256, 512, 10), "ce")
    x = rng.standard_normal((512, 256)).astype("f4")
    before = big.jit.dispatches("cp_wide")
    big.train_step(x, np.zeros(512, "i4"))
    assert big.jit.dispatches("cp_wide") > before


@pytest.mark.parametrize("threads", [1, 2])
def test_large_input_scan_split_over_threads_finds_every_share(threads):
    """x of 128 x 512 = 65,536 values is at least codegen.checks.SCAN_PARALLEL_MIN: at 2 threads
    its NaN/Inf scan is split into one contiguous share per thread (the pool's dispatch counter
    moves). A non-finite value in the first, the middle or the last row is found whichever
    share holds it, the row is named, and params and optimizer state are unchanged; clean data
    trains (the loss agrees with the 1-thread model's)."""
    from graphc.codegen.checks import SCAN_PARALLEL_MIN

    rng = np.random.default_rng(12)
    x = rng.standard_normal((128, 512)).astype("f4")
    y = (np.arange(128) % 10).astype("i4")
    assert x.size >= SCAN_PARALLEL_MIN
    m = _net(f"cp_scan{threads}", (512, 4, 10), "ce")
    m.threads = threads
    m.train_step(x, y)
    before = _snapshot(m)
    for row in (0, 64, 127):
        bad = x.copy()
        bad[row, 511 if row else 0] = np.nan
        d0 = m.jit.dispatches(m.program.name)
        with pytest.raises(ArgumentError, match=rf"input 'x': row {row} holds NaN or Inf"):
            m.train_step(bad, y)
        assert (m.jit.dispatches(m.program.name) > d0) == (threads == 2)
        assert _snapshot(m) == before
    ref = _net("cp_scan_ref", (512, 4, 10), "ce")
    ref.threads = 1
    ref.set_weights({k: v.copy() for k, v in m.params.items()})
    np.testing.assert_allclose(m.evaluate(x, y)["loss"], ref.evaluate(x, y)["loss"], rtol=1e-6)


def test_predict_does_not_keep_its_result_alive():
    """A large output (over COPY_OUTPUT_MAX) on a known layout is written straight into a new
    array: the model must not keep that array (it would outlive the caller's reference and
    refuse resize); the next call's result and an out= array stay correct."""
    import gc as pygc
    import weakref

    x = gc.input("x", ("N", 8))
    m = gc.compile(gc.dense(x, 600, name="fc"), None, name="cp_keep", threads=1)
    xs = np.random.default_rng(3).standard_normal((4, 8)).astype("f4")
    w, b = m.params["fc.w"].astype(np.float64), m.params["fc.b"].astype(np.float64)
    want = xs.astype(np.float64) @ w + b
    first = m.predict(xs)  # checked path: the layout is remembered
    r = m.predict(xs)  # known layout
    np.testing.assert_allclose(r, want, rtol=1e-5, atol=1e-5)
    ref = weakref.ref(r)
    del r
    pygc.collect()
    assert ref() is None
    r = m.predict(xs)
    r.resize((2, 600), refcheck=True)  # no other reference holds it
    out = np.empty_like(first)
    assert m.predict(xs, out=out) is out and m.predict(xs) is not out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
