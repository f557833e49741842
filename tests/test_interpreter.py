"""The reference interpreter (graphc.ir.interpret): float64 by default, updates, clear errors.

It is the oracle of the differential tests, so it is itself checked against hand-written numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import build_graphs
from graphc.ir.interpret import interpret


def _program(optimizer=None):
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ("N", 2))
    w = gc.param("w", (3, 2))
    b = gc.param("b", (2,), init="zeros")
    out = gc.tanh(gc.matmul(x, w) + b)
    return build_graphs("interp", [out], gc.mean_squared_error(out, t), optimizer or gc.SGD(lr=0.5))


def _feeds(n: int = 5):
    rng = np.random.default_rng(3)
    return {
        "x": rng.standard_normal((n, 3)).astype(np.float32),
        "t": rng.standard_normal((n, 2)).astype(np.float32),
        "w": rng.standard_normal((3, 2)).astype(np.float32),
        "b": rng.standard_normal(2).astype(np.float32),
        "step": np.array(4.0),
        "lr": np.array(0.5),
    }


def test_training_graph_matches_handwritten_numpy_in_float64() -> None:
    prog = _program()
    f = _feeds()
    env = interpret(prog.training, f)
    x, t, w, b = (f[k].astype(np.float64) for k in ("x", "t", "w", "b"))
    y = np.tanh(x @ w + b)
    loss = np.mean((y - t) ** 2)
    dz = 2 * (y - t) / y.size * (1 - y * y)  # d loss / d (x w + b)
    assert env[prog.loss].dtype == np.float64
    np.testing.assert_allclose(env[prog.loss], loss, rtol=1e-12)
    np.testing.assert_allclose(env[prog.grads["w"]], x.T @ dz, rtol=1e-12)
    np.testing.assert_allclose(env[prog.grads["b"]], dz.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(env["w'"], w - 0.5 * (x.T @ dz), rtol=1e-12)  # SGD update
    assert env["step'"] == 5.0  # the step counter


def test_float_dtype_none_computes_in_each_nodes_dtype() -> None:
    prog = _program()
    env32 = interpret(prog.forward, _feeds(), float_dtype=None)
    env64 = interpret(prog.forward, _feeds())
    assert env32[prog.loss].dtype == np.float32
    assert env32[prog.loss] != env64[prog.loss]
    np.testing.assert_allclose(env32[prog.loss], env64[prog.loss], rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_batch_size_comes_from_the_feeds(n: int) -> None:
    prog = _program()
    env = interpret(prog.forward, _feeds(n))
    assert env[prog.outputs[0]].shape == (n, 2)


def test_missing_or_misshapen_feeds_are_argument_errors() -> None:
    prog = _program()
    f = _feeds()
    del f["w"]
    with pytest.raises(gc.ArgumentError, match=r"no value given for param w: f32\[3,2\]"):
        interpret(prog.forward, f)
    f = _feeds()
    f["b"] = np.zeros(3)
    with pytest.raises(gc.ArgumentError, match=r"b expects f32\[2\] .*got shape \(3,\)"):
        interpret(prog.forward, f)


def test_stable_references_at_extreme_values() -> None:
    """The references the fuzzer trusts: finite, correct sigmoid/softplus/log-softmax at 1e4."""
    from graphc.ir.ops import OPS

    z = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    np.testing.assert_allclose(
        OPS["sigmoid"].reference(z), [0.0, np.exp(-50.0), 0.5, 1.0, 1.0], rtol=1e-12
    )
    np.testing.assert_allclose(
        OPS["softplus"].reference(z), [0.0, np.exp(-50.0), np.log(2.0), 50.0, 1e4], rtol=1e-12
    )
    logits = np.array([[1e4, -1e4, 0.0]])
    assert OPS["softmax_cross_entropy"].reference(logits, np.array([1])) == 2e4
    assert np.all(np.isfinite(OPS["softmax"].reference(logits)))
