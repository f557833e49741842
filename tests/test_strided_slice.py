"""graphc.convolution.strided_slice, the one strided pick that pooling and the ONNX importer's
_take (Slice with steps, Gather, MaxPool / AveragePool offsets) share: values against numpy's
basic slicing, the gradient against numpy's scatter of dy (float64), and its refusal of picks
outside the axis. One compile; ~1 s."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.convolution import strided_slice
from graphc.ir.errors import ShapeError

# (start, step, count) along an axis of 11: runs, whole axis, a tail past the end (padded for
# the reshape), a block that ends exactly at the axis's end, one element, a step wider than half
CASES = [(0, 1, 11), (2, 1, 5), (0, 2, 6), (1, 2, 5), (1, 3, 4), (2, 3, 3), (0, 5, 3), (10, 4, 1)]


def test_strided_slice_matches_numpy_values_and_gradient() -> None:
    x = gc.input("x", ("N", 3, 11))
    p = gc.param("p", (3, 11), init="zeros")
    h = x + p
    outs = [strided_slice(h, 2, a, s, n) for a, s, n in CASES]
    outs.append(strided_slice(strided_slice(h, 1, 0, 2, 2), 2, 1, 3, 4))  # two axes
    loss = gc.sum(outs[0] * outs[0])
    for k, y in enumerate(outs[1:], 1):
        loss = loss + gc.sum(y * y) * float(k + 1)
    m = gc.compile(outs, loss, gc.SGD(lr=0.0), seed=0)
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((4, 3, 11)).astype(np.float32)
    got = list(m.predict(xv).values())
    want = [xv[:, :, a : a + s * n : s] for a, s, n in CASES]
    want.append(xv[:, 0:4:2, 1:13:3])
    grad = np.zeros((3, 11))
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)  # moved, never computed
        view = np.zeros((4, 3, 11))
        if k < len(CASES):
            a, s, n = CASES[k]
            view[:, :, a : a + s * n : s] += 2.0 * (k + 1) * w
        else:
            view[:, 0:4:2, 1:13:3] += 2.0 * (k + 1) * w
        grad += view.sum(0)
    np.testing.assert_allclose(m.gradients(xv)["p"], grad, rtol=1e-5, atol=1e-5)


def test_strided_slice_refuses_a_pick_outside_the_axis() -> None:
    x = gc.input("x", ("N", 3, 11))
    for a, s, n in [(-1, 1, 2), (0, 0, 3), (0, 1, 0), (9, 1, 3), (1, 5, 3)]:
        with pytest.raises(ShapeError, match=r"do not lie in axis 2 of"):
            strided_slice(x, 2, a, s, n)
