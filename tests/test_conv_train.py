"""The convolution DSL (gc.conv / conv1d / conv2d, max_pool, avg_pool, flatten, the Sequential
layers) end to end: pooling against numpy, a first SGD step's loss against a float64 numpy
re-computation, a small CNN trained with fit on the digits images (8x8) and exported as a
shared library that predicts and trains like the in-process model; DSL errors. ~6 s."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import GraphcError, ShapeError
from graphc.ir.ops import OPS

DIGITS = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "digits.csv.gz")


def _digits(rows: int):
    with gzip.open(DIGITS, "rt") as f:
        f.readline()
        data = np.loadtxt(f, delimiter=",", ndmin=2)[:rows]
    x = (data[:, :-1] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x, data[:, -1].astype(np.int32)


def _np_pool(x: np.ndarray, k: tuple, s: tuple, kind: str) -> np.ndarray:
    out = [(d - kk) // ss + 1 for d, kk, ss in zip(x.shape[2:], k, s)]
    y = np.empty((*x.shape[:2], *out))
    for o in np.ndindex(*out):
        win = x[
            (
                slice(None),
                slice(None),
                *(slice(oi * si, oi * si + ki) for oi, si, ki in zip(o, s, k)),
            )
        ]
        axes = tuple(range(2, x.ndim))
        y[(slice(None), slice(None), *o)] = win.max(axes) if kind == "max" else win.mean(axes)
    return y


def test_pooling_matches_numpy() -> None:
    x2 = gc.input("x2", ("N", 3, 7, 9))
    x1 = gc.input("x1", ("N", 2, 11))
    outs = [
        gc.max_pool(x2, 2),
        gc.avg_pool(x2, (3, 2)),
        gc.max_pool(x2, 3, strides=2),
        gc.avg_pool(x2, (2, 3), strides=(1, 2)),
        gc.max_pool(x1, 3, strides=2),
        gc.global_avg_pool(x2),
        gc.flatten(gc.max_pool(x2, 2)),
    ]
    m = gc.compile(outs)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3, 7, 9)).astype(np.float32)
    b = rng.standard_normal((3, 2, 11)).astype(np.float32)
    got = list(m.predict({"x2": a, "x1": b}).values())
    want = [
        _np_pool(a, (2, 2), (2, 2), "max"),
        _np_pool(a, (3, 2), (3, 2), "avg"),
        _np_pool(a, (3, 3), (2, 2), "max"),
        _np_pool(a, (2, 3), (1, 2), "avg"),
        _np_pool(b, (3,), (2,), "max"),
        a.astype(np.float64).mean((2, 3)),
        _np_pool(a, (2, 2), (2, 2), "max").reshape(3, -1),
    ]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _cnn():
    x = gc.input("x", ("N", 1, 8, 8))
    h = gc.conv2d(x, 6, 3, padding="same", activation="relu", name="c1")
    h = gc.max_pool(h, 2)
    h = gc.conv(h, 8, 3, groups=2, activation="tanh", name="c2")
    logits = gc.dense(gc.flatten(h), 10, name="out")
    labels = gc.input("labels", ("N",), dtype="i32")
    return logits, gc.softmax_cross_entropy(logits, labels)


def test_first_step_loss_equals_float64_numpy() -> None:
    logits, loss = _cnn()
    m = gc.compile(logits, loss, gc.SGD(lr=0.1), name="cnn_step", seed=3)
    x, y = _digits(16)
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    conv = OPS["conv"].evaluate
    h = np.maximum(
        conv(x.astype(np.float64), p["c1.w"], pads=(1, 1, 1, 1)) + p["c1.b"][:, None, None], 0
    )
    h = h.reshape(16, 6, 4, 2, 4, 2).max((3, 5))
    h = np.tanh(conv(h, p["c2.w"], groups=2) + p["c2.b"][:, None, None])
    z = h.reshape(16, -1) @ p["out.w"] + p["out.b"]
    zmax = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
    want = float(np.mean(lse - z[np.arange(16), y]))
    first = m.train_step(x, y)
    np.testing.assert_allclose(first, want, rtol=2e-6)
    later = [m.train_step(x, y) for _ in range(20)]
    assert later[-1] < 0.75 * first and later[-1] < later[0]


def test_cnn_trains_with_fit_and_exports_a_library(tmp_path) -> None:
    x, y = _digits(600)
    model = gc.Sequential(
        [
            gc.Conv(8, 3, padding=1, activation="relu"),
            gc.MaxPool(2),
            gc.Conv(16, 3, activation="relu"),
            gc.Flatten(),
            gc.Dense(10),
        ],
        name="digits_cnn",
    )
    xin = gc.input("x", ("N", 1, 8, 8))
    logits = model(xin)
    loss = gc.softmax_cross_entropy(logits, gc.input("labels", ("N",), dtype="i32"))
    m = gc.compile(logits, loss, gc.Adam(lr=0.01), name="digits_cnn", seed=0)
    assert {"digits_cnn.l0.w", "digits_cnn.l0.b", "digits_cnn.l2.w"} <= set(m.params)
    hist = m.fit(x[:500], y[:500], epochs=6, batch_size=32, verbose=0)
    losses = hist.history["loss"] if hasattr(hist, "history") else hist["loss"]
    assert losses[-1] < 0.3 * losses[0]
    acc = float(np.mean(np.argmax(m.predict(x[500:]), 1) == y[500:]))
    assert acc > 0.85, acc
    lib_path = str(tmp_path / "libcnn.so")
    m.export(lib_path)
    lib = gc.load(lib_path)
    np.testing.assert_allclose(lib.predict(x[500:]), m.predict(x[500:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        lib.train_step(x[:40], y[:40]), m.train_step(x[:40], y[:40]), rtol=1e-5
    )


def test_dsl_errors() -> None:
    x = gc.input("img", ("N", 3, 8, 8))
    with pytest.raises(ShapeError, match="groups=2 must divide the input channels"):
        gc.conv(x, 4, 3, groups=2)
    with pytest.raises(GraphcError, match="kernel_size must be an int >= 1 or 2 of them"):
        gc.conv(x, 4, (3, 3, 3))
    with pytest.raises(GraphcError, match="padding must be 'valid', 'same' or ints"):
        gc.conv(x, 4, 3, padding="full")
    with pytest.raises(ShapeError, match="expects 1 spatial axes"):
        gc.conv1d(x, 4, 3)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        gc.conv(x, 4, 9)
    with pytest.raises(ShapeError, match="channels first"):
        gc.conv(gc.input("flat", ("N", 64)), 4, 3)
    with pytest.raises(GraphcError, match="unknown activation"):
        gc.conv(x, 4, 3, activation="relux")
    with pytest.raises(ShapeError, match="larger than the input"):
        gc.max_pool(x, 9)
    y = gc.conv(x, 5, (3, 1), strides=2, padding="same", dilation=(1, 2))
    assert y.shape == ("N", 5, 4, 4)
