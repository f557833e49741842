"""User errors of the Python API that half-wrote state, were caught late or raised raw Python
exceptions: each raises a GraphcError naming the culprit before anything changes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import graphc as gc


def _classifier(name: str) -> gc.Model:
    x = gc.input("x", ("N", 4))
    y = gc.input("labels", ("N",), dtype="i32")
    lg = gc.dense(x, 3, name="d")
    return gc.compile(lg, gc.softmax_cross_entropy(lg, y), gc.Adam(lr=0.1), name=name)


BAD_VALUES = {
    "strings": lambda shape: np.full(shape, "oops"),
    "complex": lambda shape: np.ones(shape, np.complex64),
    "overflow": lambda shape: np.full(shape, 1e300),
    "ragged": lambda shape: [[1.0], [1.0, 2.0]],
    "shape": lambda shape: np.ones((7,)),
    "object": lambda shape: np.full(shape, None, dtype=object),
}


@pytest.mark.parametrize("bad", list(BAD_VALUES))
def test_set_weights_is_all_or_nothing(bad) -> None:
    m = _classifier("sw_all")
    before = m.get_weights()
    new = {"d.w": np.ones((4, 3)), "d.b": BAD_VALUES[bad]((3,))}
    with pytest.raises(gc.ArgumentError, match=r"d\.b"):
        m.set_weights(new)
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # the first one was not written


def test_set_weights_converts_and_takes_keras_lists() -> None:
    m = _classifier("sw_ok")
    w = np.arange(12, dtype=np.float64).reshape(4, 3) / 7  # float64 -> float32, rounded
    m.set_weights({"d.w": w, "d.b": [1, 2, 3]})  # ints -> float32
    np.testing.assert_array_equal(m.params["d.w"], w.astype(np.float32))
    np.testing.assert_array_equal(m.params["d.b"], [1.0, 2.0, 3.0])
    m.set_weights([np.zeros((4, 3)), np.ones(3)])  # get_weights' order, as Keras takes it
    assert not m.params["d.w"].any() and (m.params["d.b"] == 1).all()
    with pytest.raises(gc.ArgumentError, match="2 parameters"):
        m.set_weights([np.zeros((4, 3))])
    with pytest.raises(gc.ArgumentError, match=r"no parameter 'e\.w'"):
        m.set_weights({"d.b": np.zeros(3), "e.w": np.zeros(3)})
    assert (m.params["d.b"] == 1).all()


XS = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
YS = (np.arange(20) % 3).astype(np.int32)


@pytest.mark.parametrize(
    "cb, val, known",
    [
        (lambda: gc.EarlyStopping(monitor="val_acc"), True, "val_accuracy"),
        (lambda: gc.EarlyStopping(monitor="val_loss"), False, "validation_split"),
        (lambda: gc.ReduceLROnPlateau(monitor="accuracy"), True, "val_accuracy"),
        (lambda: gc.ReduceLROnPlateau(monitor="los"), False, "'loss'"),
    ],
)
def test_callback_monitors_are_checked_before_training(cb, val, known) -> None:
    m = _classifier("mon_typo")
    before = m.get_weights()
    more = {"validation_split": 0.25} if val else {}
    with pytest.raises(gc.ArgumentError, match=known) as e:
        m.fit(XS, YS, epochs=3, batch_size=5, verbose=0, callbacks=[cb()], **more)
    assert type(cb()).__name__ in str(e.value)
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # nothing trained
    # every figure fit announces is one it reports
    h = m.fit(XS, YS, epochs=1, batch_size=5, verbose=0, **more)
    assert set(m.figure_names(validation=val)) == set(h.metrics)


def test_validation_data_forms() -> None:
    m = _classifier("val_forms")
    w = np.ones(5, np.float32)
    with pytest.raises(gc.ArgumentError, match="sample weights"):
        m.fit(XS, YS, verbose=0, validation_data=(XS[:5], YS[:5], w))
    with pytest.raises(gc.ArgumentError, match="validation_data"):
        m.fit(XS, YS, verbose=0, validation_data=XS[:5])
    h = m.fit(XS, YS, verbose=0, validation_data={"x": XS[:5], "labels": YS[:5]})
    assert np.isclose(h["val_loss"][0], m.evaluate(XS[:5], YS[:5])["loss"])


def test_one_dict_of_every_input_gives_the_labels() -> None:
    m = _classifier("dict_feeds")
    ref = _classifier("dict_feeds")
    ref.set_weights(m.get_weights())
    got = m.train_step({"x": XS[:6], "labels": YS[:6]})
    assert got == ref.train_step(XS[:6], YS[:6])
    assert m.evaluate({"x": XS, "labels": YS}) == ref.evaluate(XS, YS)
    with pytest.raises(gc.ArgumentError, match="labels"):
        m.train_step({"x": XS[:6]})


@pytest.mark.parametrize("value", ["abc", "1.5", "0", "-2", "²"])
def test_bad_graphc_threads_is_an_error_naming_the_variable(monkeypatch, value) -> None:
    from graphc.runtime.parallel import default_threads

    monkeypatch.setenv("GRAPHC_THREADS", value)
    with pytest.raises(gc.ArgumentError, match="GRAPHC_THREADS"):
        default_threads()
    x = gc.input("x", ("N", 2))
    with pytest.raises(gc.ArgumentError, match="GRAPHC_THREADS"):
        gc.compile(gc.relu(x), name="thr_env")
    monkeypatch.setenv("GRAPHC_THREADS", " 3 ")
    assert default_threads() == 3
    from graphc.codegen.target import compile_threads

    monkeypatch.setenv("GRAPHC_COMPILE_THREADS", value)  # the same parser
    with pytest.raises(gc.ArgumentError, match="GRAPHC_COMPILE_THREADS"):
        compile_threads()


@pytest.mark.parametrize("value", ["lots", "-5", "nan", "inf"])
def test_bad_cache_size_warns_and_keeps_the_default(monkeypatch, value) -> None:
    from graphc import cache

    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", value)
    with pytest.warns(UserWarning, match="GRAPHC_CACHE_MAX_MB"):
        assert cache.max_bytes() == int(cache.DEFAULT_MAX_MB * 1e6)


def test_binary_pointwise_ops_take_a_number_on_either_side() -> None:
    x = gc.input("x", ("N", 3))
    fns = {
        "maximum": np.maximum, "minimum": np.minimum, "add": np.add, "sub": np.subtract,
        "mul": np.multiply, "div": np.divide,
    }  # fmt: skip
    outs = [getattr(gc, f)(x, 0.5) for f in fns] + [getattr(gc, f)(2, x) for f in fns]
    m = gc.compile(outs, name="binnum")
    xs = np.array([[0.25, 0.5, 4.0]], np.float32)
    got = list(m.predict(xs).values())
    want = [f(xs, 0.5) for f in fns.values()] + [f(2.0, xs) for f in fns.values()]
    for g_, w_, k in zip(got, want, [*fns, *fns], strict=True):
        np.testing.assert_allclose(g_, w_, rtol=1e-6, err_msg=k)
    with pytest.raises(gc.ArgumentError, match="at least one operand"):
        gc.maximum(1.0, 2.0)
    with pytest.raises(gc.ArgumentError, match="str"):
        gc.minimum(x, "a")
    for bad in (np.ones(3), "1", None, True):
        with pytest.raises(gc.ArgumentError, match=r"gc\.constant"):
            gc.const(bad)
    assert gc.const(np.float32(2)).type.shape == () and gc.const(np.array(3.0)) is not None


def test_max_min_split_the_gradient_at_a_tie() -> None:
    """Central differences (and PyTorch, JAX) give each operand half at a tie."""
    x = gc.input("x", ("N", 3))
    a = gc.param("a", (3,), "zeros")
    b = gc.param("b", (3,), "zeros")
    loss = gc.sum(gc.maximum(x, a) * 3.0 + gc.minimum(b, x))
    m = gc.compile(loss, loss, gc.SGD(0.1), name="tiegrad")
    xs = np.array([[0.0, 1.0, -1.0]], np.float32)  # a tie, x larger, x smaller
    g = m.gradients(xs)

    def f(av: np.ndarray, bv: np.ndarray) -> float:
        return float((np.maximum(xs, av) * 3 + np.minimum(bv, xs)).sum())

    z, h = np.zeros(3), 1e-3
    for name, fn in (("a", lambda d: f(d, z)), ("b", lambda d: f(z, d))):
        num = [(fn(h * e) - fn(-h * e)) / (2 * h) for e in np.eye(3)]
        np.testing.assert_allclose(g[name], num, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(g["a"], [1.5, 0.0, 3.0])
    np.testing.assert_allclose(g["b"], [0.5, 1.0, 0.0])


def test_predict_on_no_rows_gives_empty_outputs(tmp_path) -> None:
    x = gc.input("x", ("N", 4))
    h = gc.dense(x, 3, name="d")
    m = gc.compile([h, gc.relu(h)], name="empty_rows")
    got = m.predict(np.zeros((0, 4), np.float32))
    assert [(v.shape, v.dtype) for v in got.values()] == [((0, 3), np.float32)] * 2
    one = gc.compile(h, name="empty_one")
    assert one.predict(np.zeros((0, 4))).shape == (0, 3)
    with pytest.raises(gc.ArgumentError, match="4"):
        one.predict(np.zeros((0, 5)))  # the shape is still checked
    total = gc.compile(gc.sum(h), name="empty_sum")  # computed over the rows: refused
    with pytest.raises(gc.ArgumentError, match="over the rows"):
        total.predict(np.zeros((0, 4), np.float32))
    if shutil.which("cc"):
        one.export(str(tmp_path / "libempty_one.so"))
        lib = gc.load(str(tmp_path / "libempty_one.so"))
        assert lib.predict(np.zeros((0, 4), np.float32)).shape == (0, 3)
