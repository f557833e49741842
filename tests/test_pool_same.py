"""max_pool / avg_pool (and the MaxPool / AvgPool layers) with padding="same": TensorFlow's
'SAME' (ONNX auto_pad SAME_UPPER where its total pad is >= 0), written here from the formula
O = ceil(D / s), total = max((O - 1) s + K - D, 0), floor(total / 2) before, the rest after;
values against a float64 numpy loop over the windows, gradients against central differences of
that loop, and, where torch is installed, torch's pooling of the same explicitly padded input
(-inf padding for the maximum, zeros with count_include_pad True / False for the mean). ~3 s."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import np_pool, numeric_grad, torch_or_skip

import graphc as gc
from graphc.ir.errors import GraphcError

# (x shape without N, pool_size, strides): odd and even sizes, strides above, at and below the
# window, a window of 1 with a stride of 3 (no pad), 1-D and 3-D
CASES = [
    ((2, 7, 9), (3, 3), (2, 2)),
    ((2, 6, 5), (2, 3), (2, 1)),
    ((1, 8, 7), (4, 2), (3, 3)),
    ((3, 5, 5), (3, 3), (1, 1)),
    ((2, 8, 7), (1, 2), (3, 3)),
    ((2, 11), (4,), (3,)),
    ((1, 5, 4, 3), (2, 3, 2), (2, 2, 1)),
]


def _same(sizes, ks, ss):
    outs, pads = [], []
    for d, k, s in zip(sizes, ks, ss):
        o = -(-d // s)
        total = max((o - 1) * s + k - d, 0)
        outs.append(o)
        pads.append((total // 2, total - total // 2))
    return outs, pads


def np_pool_same(x: np.ndarray, ks, ss, kind: str, include: bool = False) -> np.ndarray:
    """TensorFlow 'SAME' pooling in float64: conftest's window loop with _same's pads."""
    return np_pool(x, ks, ss, _same(x.shape[2:], ks, ss)[1], kind, include)


VARIANTS = [("max", False), ("avg", False), ("avg", True)]


def _pool(kind, include, x, ks, ss):
    if kind == "max":
        return gc.max_pool(x, ks, ss, padding="same")
    return gc.avg_pool(x, ks, ss, padding="same", count_include_pad=include)


def test_same_pooling_matches_numpy_float64() -> None:
    rng = np.random.default_rng(0)
    ins, outs, want = {}, [], []
    for c, (shape, ks, ss) in enumerate(CASES):
        x = gc.input(f"x{c}", ("N", *shape), dtype="f64")
        ins[f"x{c}"] = rng.standard_normal((3, *shape))
        for kind, include in VARIANTS:
            y = _pool(kind, include, x, ks, ss)
            ref = np_pool_same(ins[f"x{c}"], ks, ss, kind, include)
            assert tuple(y.shape[1:]) == ref.shape[1:], (c, kind, include)
            outs.append(y)
            want.append(ref)
    m = gc.compile(outs)
    for k, (g, w) in enumerate(zip(m.predict(ins).values(), want)):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-14, err_msg=str(k))


@pytest.mark.parametrize("kind,include", VARIANTS)
def test_same_pooling_gradient_matches_central_differences(kind, include) -> None:
    shape, ks, ss = (2, 5, 6), (3, 2), (2, 3)
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((2, *shape))
    x = gc.input("x", ("N", *shape), dtype="f64")
    p = gc.param("p", shape, init="zeros", dtype="f64")
    y = _pool(kind, include, x + p, ks, ss)
    m = gc.compile(y, gc.sum(y * y), gc.SGD(lr=0.0))
    got = m.gradients(xv)["p"]

    def f(pv):
        return float(np.sum(np_pool_same(xv + pv, ks, ss, kind, include) ** 2))

    np.testing.assert_allclose(got, numeric_grad(f, [np.zeros(shape)], 0), rtol=1e-6, atol=1e-8)


def test_same_pooling_matches_torch_on_the_padded_input() -> None:
    torch = torch_or_skip()
    f = torch.nn.functional
    rng = np.random.default_rng(2)
    for c, (shape, ks, ss) in enumerate(CASES[:5]):
        xv = rng.standard_normal((2, *shape)).astype(np.float32)
        x = gc.input("x", ("N", *shape))
        m = gc.compile([_pool(kind, inc, x, ks, ss) for kind, inc in VARIANTS])
        got = list(m.predict(xv).values())
        _, pads = _same(shape[1:], ks, ss)
        flat = [v for p in reversed(pads) for v in p]  # torch's F.pad: last axis first
        t = torch.from_numpy(xv)
        ref_max = f.max_pool2d(f.pad(t, flat, value=-float("inf")), ks, ss)
        ref_inc = f.avg_pool2d(f.pad(t, flat), ks, ss)
        if all(p[0] == p[1] for p in pads):  # torch pads both sides alike
            sym = tuple(p[0] for p in pads)
            ref_exc = f.avg_pool2d(t, ks, ss, padding=sym, count_include_pad=False)
            np.testing.assert_allclose(got[1], ref_exc.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got[0], ref_max.numpy(), rtol=1e-6, atol=1e-6, err_msg=str(c))
        np.testing.assert_allclose(got[2], ref_inc.numpy(), rtol=1e-6, atol=1e-6, err_msg=str(c))


def test_pool_layers_take_padding_and_refuse_other_values() -> None:
    x = gc.input("x", ("N", 2, 7, 9))
    assert gc.MaxPool(3, 2, padding="same")(x).shape == ("N", 2, 4, 5)
    assert gc.AvgPool((2, 4), padding="same", count_include_pad=True)(x).shape == ("N", 2, 4, 3)
    assert gc.max_pool(x, 3, 2).shape == ("N", 2, 3, 4)  # "valid" stays the default
    with pytest.raises(GraphcError, match="padding must be 'valid', 'same' or ints, got 'full'"):
        gc.max_pool(x, 3, padding="full")
    with pytest.raises(GraphcError, match="count_include_pad"):
        gc.avg_pool(x, 3, padding="same", count_include_pad=1)
