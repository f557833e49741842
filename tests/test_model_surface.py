"""Model API edges: the same tensor given twice as an output, a model without inputs, and
batch_norm's running statistics in get_weights/set_weights (as Keras includes them)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import ArgumentError


def test_same_output_twice_keeps_both(tmp_path):
    x = gc.input("x", ("N", 3))
    y = gc.tanh(x, name="y")
    m = gc.compile([y, gc.relu(x, name="r"), y], name="twice")
    X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    out = m.predict(X)
    assert list(out) == ["y", "r", "y_1"]
    np.testing.assert_allclose(out["y"], np.tanh(X.astype(np.float64)), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out["y_1"], out["y"])
    path = tmp_path / "twice.gcm"
    m.save_model(path)
    back = gc.load_model(path).predict(X)
    assert list(back) == ["y", "r", "y_1"]
    np.testing.assert_array_equal(back["y_1"], out["y"])


def test_model_without_inputs_predicts():
    c = gc.constant(np.array([[1.0, -2.0, 3.0]], np.float32), name="c")
    m = gc.compile(gc.relu(c) * 2.0, name="noinput")
    want = np.maximum(np.array([[1.0, -2.0, 3.0]]), 0) * 2
    np.testing.assert_array_equal(m.predict(), want)
    np.testing.assert_array_equal(m.predict({}), want)
    x = gc.input("x", ("N", 3))
    with pytest.raises(ArgumentError, match="x is missing"):
        gc.compile(gc.relu(x), name="needs_x").predict()


def test_weights_include_batch_norm_running_statistics(tmp_path):
    x = gc.input("x", ("N", 2))
    y = gc.input("y", ("N", 2))
    h = gc.batch_norm(gc.dense(x, 2, name="d"), name="bn")
    m = gc.compile(h, loss=gc.mean_squared_error(h, y), optimizer=gc.SGD(lr=0.1), name="bnw")
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((16, 2)) * 3 + 5).astype(np.float32)
    m.fit(X, X, epochs=2, batch_size=8, verbose=0)
    w = m.get_weights()
    assert {"bn.running_mean", "bn.running_var"} <= set(w)
    assert not np.allclose(w["bn.running_mean"], 0)  # trained, not the initial zeros
    assert set(w) == set(m.params) | {"bn.running_mean", "bn.running_var"}
    np.testing.assert_array_equal(w["bn.running_var"], m.state["bn.running_var"])
    pred = m.predict(X)
    fresh = gc.compile(h, loss=gc.mean_squared_error(h, y), optimizer=gc.SGD(lr=0.1), name="bnw")
    fresh.set_weights(w)  # by name
    np.testing.assert_array_equal(fresh.predict(X), pred)
    fresh2 = gc.compile(h, loss=gc.mean_squared_error(h, y), optimizer=gc.SGD(lr=0.1), name="bnw")
    fresh2.set_weights(list(w.values()))  # in order, as Keras takes them
    np.testing.assert_array_equal(fresh2.predict(X), pred)
    with pytest.raises(ArgumentError, match=r"bn\.running_var expects shape"):
        fresh2.set_weights({"bn.running_var": np.ones(3, np.float32)})
    m.save(str(tmp_path / "ck.npz"))  # save keeps them
    fresh.initialize(1)
    fresh.load(str(tmp_path / "ck.npz"))
    np.testing.assert_array_equal(fresh.get_weights()["bn.running_mean"], w["bn.running_mean"])


def test_an_input_given_twice_or_a_name_of_no_input() -> None:
    """Inputs by name: a label in x's dict and y too (or a feature in y's dict) as different
    arrays is refused naming it (y's label, x's feature, was used silently); the same array
    twice is fine; a name that matches no input warns naming the inputs (Keras's warning),
    and the figures are those of the named inputs."""
    import warnings

    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32)
    x, y = gc.input("x", ("N", 3)), gc.input("y", ("N", 2))
    p = gc.dense(x, 2)
    m = gc.compile(p, gc.mean_squared_error(p, y), gc.SGD(0.1))
    want = m.evaluate(X, Y)
    assert np.isclose(want["loss"], np.mean((m.predict(X).astype(np.float64) - Y) ** 2), rtol=1e-5)
    with pytest.raises(gc.ArgumentError, match="'y' is given twice"):
        m.evaluate({"x": X, "y": np.zeros_like(Y)}, Y)
    with pytest.raises(gc.ArgumentError, match="'x' is given twice"):
        m.evaluate({"x": X}, {"y": Y, "x": np.zeros_like(X)})
    with pytest.raises(gc.ArgumentError, match="'y' is given twice"):
        m.fit({"x": X, "y": np.zeros_like(Y)}, Y, verbose=0)
    assert m.evaluate({"x": X, "y": Y}, Y) == want  # the same array twice
    with pytest.warns(UserWarning, match=r"\['labels'\].*inputs: \['x', 'y'\]") as rec:
        assert m.evaluate({"x": X, "labels": Y}, Y) == want
    assert rec[0].filename == __file__  # the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.evaluate({"x": X, "y": Y})
        m.predict({"x": X})


def test_targets_given_to_a_model_without_target_inputs() -> None:
    """An autoencoder (loss mean_squared_error(decoded, x)) has no target input: a y other
    than x is refused (it was ignored: evaluate(X, 100 X) gave evaluate(X)'s figures); Keras's
    fit(x, x) idiom is fine, and the figures are those of x vs numpy float64."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(8, 4)).astype(np.float32)
    x = gc.input("x", ("N", 4))
    dec = gc.dense(gc.dense(x, 2, "tanh"), 4)
    m = gc.compile(dec, gc.mean_squared_error(dec, x), gc.SGD(0.1))
    want = np.mean((m.predict(X).astype(np.float64) - X) ** 2)
    assert np.isclose(m.evaluate(X)["loss"], want, rtol=1e-5)
    assert m.evaluate(X, X.copy()) == m.evaluate(X, X) == m.evaluate(X)
    with pytest.raises(ArgumentError, match=r"no label or target input.*'x'"):
        m.evaluate(X, 100 * X)
    with pytest.raises(ArgumentError, match="no label or target input"):
        m.fit(X, 2 * X, verbose=0)
    assert len(m.fit(X, X, epochs=2, verbose=0)["loss"]) == 2


def test_masked_and_ragged_data_are_refused(tmp_path) -> None:
    """A masked array with masked elements is refused naming the input (numpy's conversion
    kept the values under the mask and the model read them as data, silently); one without
    masked elements is its data; ragged rows are an ArgumentError (ValueError escaped); the
    same for an exported library's predict."""
    x, y = gc.input("x", ("N", 3)), gc.input("y", ("N", 2))
    p = gc.dense(x, 2)
    m = gc.compile(p, gc.mean_squared_error(p, y), gc.SGD(0.1))
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    lib = gc.load(m.export(str(tmp_path / "libma.so")).library)
    for predict in (m.predict, lib.predict):
        with pytest.raises(ArgumentError, match="'x' is a masked array with 2 masked"):
            predict(np.ma.masked_array(X, mask=X > 9))
        with pytest.raises(ArgumentError, match="not one array of numbers"):
            predict([[1.0, 2.0, 3.0], [4.0, 5.0]])
        np.testing.assert_array_equal(predict(np.ma.masked_array(X)), m.predict(X))
    Y = np.ma.masked_array(np.ones((4, 2)), mask=[[0, 1], [0, 0], [0, 0], [0, 0]])
    with pytest.raises(ArgumentError, match="'y' is a masked array with 1 masked"):
        m.fit(X, Y, verbose=0)


def test_a_library_input_given_twice(tmp_path) -> None:
    """An exported library's train_step with a label in x's dict and in y as different
    arrays is refused naming it (y's was used silently), as Model's; the same array twice
    trains as Model.train_step does."""
    rng = np.random.default_rng(6)
    X, lab = rng.normal(size=(10, 5)).astype(np.float32), rng.integers(0, 4, 10)
    x, y = gc.input("x", ("N", 5)), gc.input("y", ("N",), dtype="i32")
    z = gc.dense(x, 4)
    m = gc.compile(z, gc.softmax_cross_entropy(z, y), gc.SGD(0.1), name="twice")
    lib = gc.load(m.export(str(tmp_path / "libtwice.so")).library)
    with pytest.raises(ArgumentError, match="'y' is given twice"):
        lib.train_step({"x": X, "y": np.zeros_like(lab)}, lab)
    assert lib.train_step({"x": X, "y": lab}, lab) == m.train_step(X, lab)
