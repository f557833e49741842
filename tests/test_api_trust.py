"""User errors of the Python API that half-wrote state, were caught late or raised raw Python
exceptions: each raises a GraphcError naming the culprit before anything changes."""

from __future__ import annotations

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
