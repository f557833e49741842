"""Training entries flush subnormal floats to zero; inference and the caller keep IEEE subnormals.

Subnormal float32 values (below 2**-126 ~ 1.18e-38) take a microcode assist on x86 for every
instruction that touches one, which made training steps 3-4x slower once a network had learnt
its data (codegen/fpenv.py). The references are exact arithmetic: 1e-20 ** 2 = 1e-40 is
subnormal in float32, so IEEE keeps it and a flushing entry makes it 0.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

import graphc as gc

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"),
    reason="only x86-64 and AArch64 have a flush-to-zero mode graphc sets",
)

TINY = np.float32(1e-20)  # its square, 1e-40, is a float32 subnormal


def _caller_keeps_subnormals() -> bool:
    """numpy on this thread still makes subnormals (the control register was restored)."""
    return bool(np.float32(1e-38) / np.float32(100) != 0)


def _identity_mse(name: str):
    """out = x @ w with w = [[1]] and MSE against y; SGD at lr 0 leaves w as it is."""
    x = gc.input("x", ("N", 1))
    y = gc.input("y", ("N", 1))
    out = gc.matmul(x, gc.param("w", (1, 1), init="ones"))
    return gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=0.0), name=name)


def test_train_step_flushes_evaluate_and_predict_keep_ieee():
    m = _identity_mse("sub_mse")
    xs, ys = np.full((1, 1), TINY), np.zeros((1, 1), np.float32)
    # (1e-20 - 0)^2 = 1e-40: flushed in training, kept by evaluate (inference)
    assert m.train_step(xs, ys) == 0.0
    assert m.evaluate(xs, ys)["loss"] == pytest.approx(1e-40, rel=1e-4)
    assert _caller_keeps_subnormals()
    # predict keeps subnormal inputs and results: 1e-40 * 1 = 1e-40
    sub = np.full((1, 1), np.float32(1e-40))
    assert m.predict(sub)[0, 0] == sub[0, 0]
    assert _caller_keeps_subnormals()


@pytest.mark.parametrize("threads", [1, 2])
def test_every_thread_of_a_split_product_flushes(threads):
    """dW = x^T @ r of products 1e-20 * 1e-20 (subnormal): 0 on the caller and the pool's
    workers alike; IEEE arithmetic (the numpy reference) gives W a nonzero step."""
    n, k, width = 256, 512, 64
    x = gc.input("x", ("N", k))
    y = gc.input("y", ("N", width))
    w = gc.param("w", (k, width), init="zeros")
    out = gc.matmul(x, w)
    lr = 1e32
    m = gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=lr), name=f"sub_split{threads}")
    m.threads = threads
    xs = np.full((n, k), TINY)
    ys = np.full((n, width), -TINY)
    name = m.program.name
    # IEEE reference in float64: dL/dW = 2/(n*width) * x^T (x W - y), W = 0
    grad = 2.0 / (n * width) * xs.astype(np.float64).T @ (-ys.astype(np.float64))
    assert np.all(-lr * grad < -1e-12)  # what an entry without the flush would store
    before = m.jit.dispatches(name)
    for _ in range(20):  # a worker that is late leaves its share to the caller: try again
        m.train_step(xs, ys)
        assert np.all(m.get_weights()["w"] == 0.0)
    if threads > 1:
        assert m.jit.dispatches(name) > before  # the products were split over the pool
    assert _caller_keeps_subnormals()


def test_fit_flushes_and_restores():
    m = _identity_mse("sub_fit")
    xs, ys = np.full((8, 1), TINY), np.zeros((8, 1), np.float32)
    m.fit(xs, ys, epochs=2, batch_size=4, verbose=0)
    assert m.history["loss"] == [0.0, 0.0]
    assert _caller_keeps_subnormals()
