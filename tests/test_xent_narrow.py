"""Softmax cross-entropy over narrow rows (fewer than SMALL_ROW = 16 classes: one vector per
row, codegen.kernels._xent_narrow_rows) and wider ones (the general loop): the loss, the
logits' gradient and its column sums (the bias gradient) against numpy float64.

Logits spread over +-60 put many exp(z - max) deep in the float32 subnormal range or at 0.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.mark.filterwarnings("ignore::graphc.dsl.LossInputWarning")  # one class, on purpose
@pytest.mark.parametrize("classes", [1, 3, 10, 15, 16])
def test_loss_and_gradients_match_float64(classes: int) -> None:
    rows = 37
    rng = np.random.default_rng(classes)
    z = (rng.standard_normal((rows, classes)) * 20).astype(np.float32)
    z[0] = 0.0  # a row of ties
    if classes > 2:
        z[1, :2] = 1e30  # one row with two huge, equal logits
    y = rng.integers(0, classes, rows).astype(np.int32)
    x = gc.input("x", ("N", classes))
    labels = gc.input("y", ("N",), dtype="i32")
    out = gc.dense(x, classes, name="o")  # W = I, b = 0: the logits are x
    m = gc.compile(out, gc.softmax_cross_entropy(out, labels), gc.SGD(lr=1e-3), name=f"xn{classes}")
    m.set_weights({"o.w": np.eye(classes, dtype=np.float32), "o.b": np.zeros(classes, np.float32)})

    zd = z.astype(np.float64)
    shifted = zd - zd.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(shifted).sum(axis=1))
    nll = (logsum - shifted[np.arange(rows), y]).mean()
    dz = np.exp(shifted - logsum[:, None])
    dz[np.arange(rows), y] -= 1.0
    dz /= rows

    np.testing.assert_allclose(m.evaluate(z, y, batch_size=rows)["loss"], nll, rtol=2e-6)
    g = m.gradients(z, y)
    np.testing.assert_allclose(g["o.b"], dz.sum(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g["o.w"], zd.T @ dz, rtol=1e-5, atol=1e-6 * np.abs(zd).max())
    np.testing.assert_allclose(m.train_step(z, y), nll, rtol=2e-6)  # loss + gradient kernel
