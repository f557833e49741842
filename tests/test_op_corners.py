"""Op corners of graphc's own ops (op-semantics sweep): pow with exponents the repeated-product
path does not take (integral beyond 64 in magnitude, non-integral) on negative bases, -0.0,
-inf and NaN, against numpy's float64 power; the ONNX export of pow(x, 0.5) run by ONNX
Runtime equals graphc's (sqrt, as numpy: NaN at -inf)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc

EXPONENTS = [2.5, -2.5, 1 / 3, 65.0, 66.0, -65.0, -70.0, 101.0, 2.0**25, -1e30, 0.5]
X = np.array(
    [[0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 2.0, -1.1, 1e-30, 0.3, -0.3, -3.0]],
    np.float32,
)


def test_pow_follows_numpy_for_large_integral_and_fractional_exponents() -> None:
    """Before, an integral exponent beyond 64 gave NaN for every x < 0 (exp(e log x)) and
    (-inf) ** 2.5 gave NaN instead of inf; values, NaNs and signs (-0.0 ** -65 = -inf) now
    equal numpy's power within the exp/log approximation (rtol 2e-5)."""
    x = gc.input("x", ("N", X.shape[1]))
    model = gc.compile([gc.pow(x, e) for e in EXPONENTS])
    got = model.predict(X)
    got = list(got.values()) if isinstance(got, dict) else got
    for e, g in zip(EXPONENTS, got):
        g = np.asarray(g)
        with np.errstate(all="ignore"):  # pow(x, 0.5) is sqrt (graphc and numpy >= 2.x;
            # older numpy's power takes C's pow there: pow(-inf, 0.5) = inf, sqrt(-inf) NaN)
            x64 = X.astype(np.float64)
            w = (np.sqrt(x64) if e == 0.5 else np.power(x64, e)).astype(np.float32)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"exponent {e}")
        ok = ~np.isnan(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=2e-5, err_msg=f"exponent {e}")
        np.testing.assert_array_equal(np.signbit(g[ok]), np.signbit(w[ok]), err_msg=f"{e}")


def test_pow_gradient_beyond_the_product_path_matches_central_differences() -> None:
    """d/dw sum(pow(x * w, 66)) for negative x * w: 66 (x w) ** 65 x, whose pow(., 65) was NaN
    before (float64 central differences)."""
    from conftest import numeric_grad

    w0 = np.array([[-1.01, 0.99, -0.97]], np.float32)
    xv = np.array([[1.0, -1.0, 0.5]], np.float32)
    x = gc.input("x", ("N", 3))
    w = gc.param("w", (1, 3))
    model = gc.compile(gc.pow(x * w, 66.0), gc.sum(gc.pow(x * w, 66.0)), gc.SGD(0.1))
    model.set_weights({"w": w0})
    got = model.gradients(xv)["w"]

    def f(wv):
        return float(np.sum(np.power(xv.astype(np.float64) * wv, 66.0)))

    np.testing.assert_allclose(
        got, numeric_grad(f, [w0.astype(np.float64)], 0), rtol=1e-3, atol=1e-9
    )


def test_exported_pow_half_is_sqrt_in_onnxruntime(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    x = gc.input("x", ("N", X.shape[1]))
    model = gc.compile(gc.pow(x, 0.5))
    path = model.to_onnx(os.path.join(tmp_path, "m.onnx"))
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    np.testing.assert_array_equal(np.asarray(model.predict(X)), want)


def test_numpy_integer_axes_and_attrs_are_plain_ints() -> None:
    """np.int64 axes (from a shape computation) reduce, slice and pick like Python ints (before:
    TypeError in sum, a refusal in slice); a float, bool or string axis is a ShapeError."""
    from graphc.ir.errors import ShapeError

    xv = np.random.default_rng(4).standard_normal((2, 3, 4)).astype(np.float32)
    x = gc.input("x", ("N", 3, 4))
    i1, i2 = np.int64(1), np.int32(2)
    outs = [
        gc.sum(x, i1),
        gc.mean(x, (i2, i1)),
        gc.max(x, [np.int64(-1)]),
        gc.slice(x, axes=(i2,), starts=(np.int64(1),), ends=(np.int64(3),)),
    ]
    got = gc.compile(outs).predict(xv)
    got = list(got.values()) if isinstance(got, dict) else got
    want = [xv.sum(1), xv.mean((1, 2)), xv.max(-1), xv[:, :, 1:3]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-6)
    for bad in (1.0, True, "1", (1, 2.0)):
        with pytest.raises(ShapeError, match="axes must be an int or a sequence of ints"):
            gc.sum(x, bad)


def test_number_attrs_are_finite_numbers_when_declared() -> None:
    """A string alpha failed inside the lowering (struct.error, not a GraphcError) and a NaN
    alpha computed NaN: both are refused at declaration, naming the op and the attr."""
    from graphc.ir.errors import ShapeError

    x = gc.input("x", ("N", 3))
    with pytest.raises(ShapeError, match="leaky_relu: attr alpha must be a number, got 'a'"):
        gc.leaky_relu(x, alpha="a")
    with pytest.raises(ShapeError, match="elu: attr alpha must be finite, got nan"):
        gc.elu(x, alpha=float("nan"))
    with pytest.raises(ShapeError, match="hard_sigmoid: attr beta must be a number"):
        gc.hard_sigmoid(x, beta=True)
    assert gc.elu(x, alpha=np.float32(0.5)).type == x.type  # numpy numbers are numbers
