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
