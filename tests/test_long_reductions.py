"""float32 sums and means over many terms per output (a long row, several reduced axes) against
numpy in float64: the row-by-row float64 accumulation and the chunked row sum of
codegen.kernels.emit_reduce (a float32 register sum drifted 2.5e-3 over 2^23 terms)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((2, 1 << 21), 1),  # one long row per batch row
        ((2, 1 << 20, 2), (1, 2)),  # several reduced axes, the innermost short
        ((2, 1 << 20, 2), 1),  # a reduced axis that is not the innermost
        ((1, 4100, 4100), 2),  # more than ACC64_MAX outputs per row: chunked rows
        ((1, 4100, 4100), 1),  # the same, over a reduced axis that is not the innermost
        ((4200, 4100), 0),  # the batch axis N into more than ACC64_MAX outputs
    ],
)
def test_long_float32_sums_are_accurate(shape, axes) -> None:
    x = gc.input("x", ("N",) + shape[1:])
    m = gc.compile([gc.sum(x, axes=axes), gc.mean(x, axes=axes)], name="longsum")
    # every term 0.1 (and some noise): float32 register sums round the same way every add
    X = np.full(shape, 0.1, np.float32)
    X[:, :7] += np.random.default_rng(0).random(X[:, :7].shape).astype(np.float32)
    s, mu = list(m.predict(X).values())
    ref = X.astype(np.float64).sum(axis=axes)
    terms = X.size // ref.size
    np.testing.assert_allclose(s, ref, rtol=2e-6)  # was 2.5e-3 (row), 4e-2 (axis 1)
    np.testing.assert_allclose(mu, ref / terms, rtol=2e-6)


def test_softmax_and_its_cross_entropy_over_many_classes_are_accurate() -> None:
    # the row's sum of exponentials: 1.2e-3 off at 2^22 classes, 8.6e-5 at 2^20 in float32
    k = 1 << 20
    x = gc.input("x", ("N", k))
    y = gc.input("y", ("N",), "i32")
    z = x + gc.param("b", (k,), init="zeros")
    m = gc.compile([gc.softmax(z), gc.log_softmax(z)], gc.softmax_cross_entropy(z, y))
    X = np.zeros((2, k), np.float32)
    X[:, 0] = 1.0  # every other exponential e^-1: float32 register sums round alike
    labels = np.array([0, 5], np.int32)
    sm, lsm = list(m.predict(X).values())
    e = np.exp(X.astype(np.float64) - 1.0)
    ref = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(sm, ref, rtol=3e-6)
    np.testing.assert_allclose(lsm, np.log(ref), atol=3e-6)
    want = -np.log(ref[[0, 1], labels]).mean()
    assert abs(m.evaluate(X, labels)["loss"] - want) < 3e-6 * want
