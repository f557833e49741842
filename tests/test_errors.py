"""Bad input gets a specific error that says what is wrong and how to fix it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc import modelspec

# ---------------------------------------------------------------- while building the graph


def test_matmul_shape_mismatch_names_op_and_both_shapes() -> None:
    x = gc.input("x", ("N", 3))
    w = gc.param("w", (4, 2))
    with pytest.raises(gc.ShapeError) as info:
        gc.matmul(x, w)
    msg = str(info.value)
    assert "matmul: inner dimensions differ (3 vs 4)" in msg
    assert "f32[N,3]" in msg and "f32[4,2]" in msg and "test_errors.py:" in msg


def test_broadcast_and_dtype_mismatches_name_both_operands() -> None:
    x = gc.input("x", ("N", 3))
    with pytest.raises(
        gc.ShapeError, match=r"add: shapes cannot be broadcast together \(f32\[N,3\] vs f32\[4\]\)"
    ):
        x + gc.param("b", (4,))
    with pytest.raises(gc.ShapeError, match=r"different dtypes \(f32\[N,3\], f64\[N,3\]\)"):
        x * gc.input("z", ("N", 3), dtype="f64")
    with pytest.raises(gc.ShapeError, match=r"targets f32\[N,2\] must match logits f32\[N,3\]"):
        gc.binary_cross_entropy(x, gc.input("t", ("N", 2)))
    with pytest.raises(gc.ShapeError, match=r"labels must be i32\[N\]"):
        gc.softmax_cross_entropy(x, gc.input("l", ("N",)))


# ---------------------------------------------------------------- data given to a compiled model


@pytest.fixture(scope="module")
def clf():
    x = gc.input("x", ("N", 4))
    logits = gc.dense(x, 3, name="errs")
    return gc.compile(
        logits,
        loss=gc.softmax_cross_entropy(logits, gc.input("y", ("N",), dtype="i32")),
        optimizer=gc.SGD(0.1),
        name="errs",
    )


def _data(n: int = 10):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def _unchanged(model):
    snap = {k: v.copy() for k, v in model.params.items()}, float(model.state["step"])

    def check():
        for k, v in snap[0].items():
            assert np.array_equal(model.params[k], v, equal_nan=True), (
                f"{k} changed although rejected"
            )
        assert float(model.state["step"]) == snap[1]

    return check


def test_wrong_feature_shape_or_dtype_names_the_input(clf) -> None:
    x, y = _data()
    check = _unchanged(clf)
    with pytest.raises(
        gc.ArgumentError, match=r"input 'x' expects f32\[N,4\], got an array of shape \(10, 5\)"
    ):
        clf.fit(np.zeros((10, 5), np.float32), y, verbose=0)
    with pytest.raises(gc.ArgumentError, match=r"input 'x' expects numbers .* got dtype <U1"):
        clf.fit(np.full((10, 4), "a"), y, verbose=0)
    with pytest.raises(gc.ArgumentError, match="holds class labels: expected integers, got float"):
        clf.fit(x, y + 0.5, verbose=0)
    with pytest.raises(gc.ArgumentError, match=r"different numbers of rows \(10 and 9"):
        clf.fit(x, y[:9], verbose=0)
    with pytest.raises(gc.ArgumentError, match="y is missing"):
        clf.fit(x, None, verbose=0)
    with pytest.raises(gc.ArgumentError, match=r"input 'x' expects f32\[N,4\]"):
        clf.predict(np.zeros((3, 2), np.float32))
    check()


def test_float64_and_integer_features_are_converted(clf) -> None:
    x, _y = _data()
    a = clf.predict(x)
    np.testing.assert_array_equal(clf.predict(x.astype(np.float64)), a)


def test_nan_or_inf_in_training_data_is_reported_with_its_row(clf) -> None:
    x, y = _data()
    x[7, 2] = np.nan
    x[8, 0] = np.inf
    check = _unchanged(clf)
    with pytest.raises(
        gc.ArgumentError,
        match=r"input 'x': row 7 holds NaN or Inf \(2 rows\).*allow_nonfinite=True",
    ):
        clf.fit(x, y, verbose=0)
    check()
    xv, yv = _data(4)
    xv[3, 1] = -np.inf
    with pytest.raises(gc.ArgumentError, match="row 3 holds NaN or Inf"):
        clf.fit(_data()[0], y, validation_data=(xv, yv), verbose=0)
    check()
    # allowed on request; the NaN loss then stops fit before any parameter goes NaN (#13 item 8)
    with pytest.raises(gc.NumericsError, match=r"epoch 0, step 0 .*the epoch began with"):
        clf.fit(x, y, epochs=1, verbose=0, allow_nonfinite=True, shuffle=False, batch_size=8)
    check()
    hist = clf.fit(x, y, epochs=1, verbose=0, allow_nonfinite=True, stop_on_nonfinite=False)
    assert len(hist["loss"]) == 1
    clf.initialize(0)  # the NaN rows made the weights NaN: start again for the other tests


def test_class_labels_out_of_range_are_reported(clf) -> None:
    x, y = _data()
    check = _unchanged(clf)
    bad = y.copy()
    bad[4] = 3
    with pytest.raises(
        gc.ArgumentError, match=r"labels 'y': row 4 has class 3, outside 0..2 \(1 such rows\)"
    ):
        clf.fit(x, bad, verbose=0)
    bad[4] = -1
    with pytest.raises(gc.ArgumentError, match="row 4 has class -1"):
        clf.evaluate(x, bad)
    wide = bad.astype(np.int64)
    wide[4] = 2**32 + 1  # int64 labels are cast to int32 (it wraps to 1): the message shows the
    for call in (clf.fit, clf.train_step, clf.evaluate):  # value passed, not the cast one
        kw = {"verbose": 0} if call == clf.fit else {}
        with pytest.raises(gc.ArgumentError, match=r"row 4 has class 4294967297, outside 0\.\.2"):
            call(x, wide, **kw)
    check()


def test_empty_data_set_is_rejected(clf) -> None:
    with pytest.raises(gc.ArgumentError, match="the data set is empty"):
        clf.fit(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), verbose=0)
    # predict on no rows: empty outputs, as Keras and PyTorch (tests/test_api_trust.py)
    assert clf.predict(np.zeros((0, 4), np.float32)).shape[0] == 0


def test_batch_size_larger_than_the_data_is_one_batch_and_zero_is_rejected(clf) -> None:
    x, y = _data()
    step = float(clf.state["step"])
    clf.fit(x, y, epochs=2, batch_size=1000, verbose=0)
    assert float(clf.state["step"]) == step + 2  # one step per epoch
    check = _unchanged(clf)
    for bs in (0, -3, 2.5):
        with pytest.raises(gc.ArgumentError, match="batch_size must be a positive int"):
            clf.fit(x, y, batch_size=bs, verbose=0)
    clf.predict(x)
    clf.predict(x)  # the layout is known now: the fast path checks batch_size too
    for bs in (0, None, "8", 2.5, True):
        with pytest.raises(gc.ArgumentError, match="batch_size must be a positive int"):
            clf.predict(x, batch_size=bs)
        with pytest.raises(gc.ArgumentError, match="batch_size must be a positive int"):
            clf.evaluate(x, y, batch_size=bs)
    assert clf.predict(x, batch_size=np.int64(3)).shape == (len(x), 3)
    with pytest.raises(gc.ArgumentError, match="epochs must be an int"):
        clf.fit(x, y, epochs=-1, verbose=0)
    check()


def test_set_weights_checks_names_and_shapes_before_copying(clf) -> None:
    check = _unchanged(clf)
    good = {k: np.zeros_like(v) for k, v in clf.params.items()}
    with pytest.raises(gc.ArgumentError, match="has no parameter 'nope'"):
        clf.set_weights({**good, "nope": np.zeros(3)})
    with pytest.raises(gc.ArgumentError, match=r"errs.w expects shape \(4, 3\), got \(3, 4\)"):
        clf.set_weights({**good, "errs.w": np.zeros((3, 4))})
    check()


# ---------------------------------------------------------------- model files, checkpoints, export


def test_model_file_or_attribute_missing_or_not_a_graph(tmp_path) -> None:
    f = tmp_path / "net.py"
    f.write_text(
        "import graphc as gc\nnumber = 3\nx = gc.input('x', ('N', 2))\nout = gc.dense(x, 1)\n"
        "def broken():\n    raise RuntimeError('oops')\n"
    )
    with pytest.raises(gc.ArgumentError, match="does not exist"):
        modelspec.resolve(str(tmp_path / "missing.py") + ":out")
    with pytest.raises(
        gc.ArgumentError, match=r"has no attribute 'nope' \(it defines: .*number.*out"
    ):
        modelspec.resolve(f"{f}:nope")
    with pytest.raises(gc.ArgumentError, match=r"expected a graphc Model, Graph, Tensor.*got int"):
        modelspec.resolve(f"{f}:number")
    with pytest.raises(gc.ArgumentError, match=r"must name what to compile in .*net.py:NAME"):
        modelspec.resolve(str(f))
    with pytest.raises(gc.ArgumentError, match=r"model file .*missing\.gcm' does not exist"):
        modelspec.resolve(str(tmp_path / "missing.gcm"))
    with pytest.raises(gc.ArgumentError, match=r"must look like path/to/file\.py:name"):
        modelspec.resolve(str(tmp_path / "net"))
    with pytest.raises(gc.ArgumentError, match=r"it defines: broken, number, out, x\)"):
        modelspec.resolve(f"{f}:nope")  # the imported module gc is not listed
    with pytest.raises(gc.ArgumentError, match="RuntimeError: oops"):
        modelspec.resolve(f"{f}:broken")
    assert modelspec.resolve(f"{f}:out").outputs


def test_cli_reports_a_missing_model_file_without_a_traceback(tmp_path, capsys) -> None:
    from graphc.cli import main

    rc = main(["dump", str(tmp_path / "missing.py") + ":net"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "Traceback" not in err


def test_weights_file_that_is_not_a_checkpoint(clf, tmp_path) -> None:
    check = _unchanged(clf)
    p = tmp_path / "w.npz"
    np.savez(p, **{"errs.w": np.zeros((4, 3))})  # a bare weights archive without a header
    with pytest.raises(gc.CheckpointError, match="without a graphc header"):
        clf.load(str(p))
    check()


def test_export_without_a_c_compiler_says_how_to_get_one(clf, tmp_path, monkeypatch) -> None:
    pytest.importorskip("graphc.export")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(
        gc.GraphcError, match=r"no C compiler found \(CC=.*no-such-cc.*apt-get install gcc"
    ):
        clf.export(str(tmp_path / "liberrs.so"))
    assert not os.path.exists(tmp_path / "liberrs.so")


def test_binary_cross_entropy_targets_outside_0_1_are_rejected() -> None:
    x = gc.input("x", ("N", 2))
    z = gc.dense(x, 1, name="bce_errs")
    m = gc.compile(
        z,
        loss=gc.binary_cross_entropy(z, gc.input("t", ("N", 1))),
        name="bce_errs",
        optimizer=gc.SGD(0.1),
    )
    xs = np.zeros((6, 2), np.float32)
    t = np.array([0, 1, 1, 2, 0, 0], np.float32)
    with pytest.raises(
        gc.ArgumentError, match=r"targets 't': row 3 holds \[2.0\], outside \[0, 1\] \(1 rows\)"
    ):
        m.fit(xs, t, verbose=0)
    t[3] = 0.25  # soft targets are fine
    assert len(m.fit(xs, t, verbose=0)["loss"]) == 1


# ---------------------------------------------------------------- issue 13 item 21

THIS = "test_errors.py:"


def _line_of(text: str) -> int:
    return next(i + 1 for i, s in enumerate(open(__file__).read().splitlines()) if text in s)


def test_two_tensors_with_one_name_are_refused_naming_both_lines() -> None:
    x = gc.input("x", ("N", 3))
    w1 = gc.param("w", (3, 2))  # first w
    w2 = gc.param("w", (3, 2))  # second w (same type: was silently the same param)
    with pytest.raises(gc.GraphcError, match="two different tensors are named 'w'") as info:
        gc.compile(x @ w1 + x @ w2)
    msg = str(info.value)
    assert f"{THIS}{_line_of('# first w')}" in msg and f"{THIS}{_line_of('# second w')}" in msg
    x2 = gc.input("x", ("N", 3))
    with pytest.raises(gc.GraphcError, match="two different tensors are named 'x'"):
        gc.compile(x + x2)
    d = gc.dropout(x, 0.5) + gc.dropout(x, 0.5)  # the step counter both read is one value
    gc.compile(d, loss=gc.mean(d * gc.param("v", (3,))), optimizer=gc.SGD())


@pytest.mark.parametrize(
    "make",
    [
        lambda x: gc.dense(x, units=True),
        lambda x: gc.Dense(True)(x),
        lambda x: gc.dense(x, 0),
        lambda x: gc.sum(x, axes=True),
        lambda x: gc.input("y", ("N", True)),
        lambda x: gc.param("z", (3, 0)),
        lambda x: gc.input("y", ("N", 0)),
        lambda x: gc.matmul(x, gc.param("m", (3, 2)), transpose_a="yes"),
        lambda x: gc.matmul(x, 3),
        lambda x: x + "a",
        lambda x: gc.input("a", ("N", 1)) - gc.input("b", ("N",)),  # would be [N,N]
        lambda x: gc.mean_squared_error(x, gc.input("t", ("N", 2))),
        lambda x: gc.binary_cross_entropy(x, gc.input("t", ("N", 2))),
        lambda x: gc.dense(x, 2, activation="swishy"),
        lambda x: gc.param("q", (2,), init="nope"),
        lambda x: gc.reshape(x, ("N", 4)),
        lambda x: gc.huber(x, gc.input("t", ("N", 2))),
        lambda x: gc.categorical_cross_entropy(x, gc.input("t", ("N", 2))),
        lambda x: gc.squeeze(x, axes=1),
    ],
    ids=[
        "units-bool",
        "Dense-bool",
        "units-0",
        "axes-bool",
        "dim-bool",
        "param-size-0",
        "input-size-0",
        "transpose-str",
        "matmul-int",
        "add-str",
        "N1-minus-N",
        "mse-shapes",
        "bce-shapes",
        "activation",
        "initializer",
        "reshape",
        "huber-shapes",
        "cce-shapes",
        "squeeze",
    ],
)
def test_every_dsl_error_is_a_graphc_error_naming_the_line(make) -> None:
    x = gc.input("x", ("N", 3))
    with pytest.raises(gc.GraphcError) as info:
        make(x)
    assert THIS in str(info.value), str(info.value)  # the lambda's line: the user's call
    assert isinstance(info.value, gc.GraphcError)


def test_nonfinite_row_scan_matches_isfinite_and_ignores_overflowing_sums() -> None:
    from graphc.runtime.model import _nonfinite_rows

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        block = rng.standard_normal((50, 7)).astype(dtype)
        big = np.finfo(dtype).max * 0.75
        block[3] = big  # finite values whose sum overflows: no row is bad
        block[4] = -big
        block[5, :2] = big
        with np.errstate(over="ignore"):
            assert not np.isfinite(np.add.reduce(block[5:6], axis=None))
        assert not _nonfinite_rows(block).any()
        block[10, 2], block[20, 0], block[21, 6] = np.nan, np.inf, -np.inf
        np.testing.assert_array_equal(_nonfinite_rows(block), ~np.isfinite(block).all(axis=1))
        pair = np.array([[np.inf], [-np.inf]], dtype)  # whose sum is NaN, not infinite
        np.testing.assert_array_equal(_nonfinite_rows(pair), [True, True])
    assert _nonfinite_rows(np.zeros((0, 4), np.float32)).shape == (0,)
