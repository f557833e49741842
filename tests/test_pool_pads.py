"""max_pool / avg_pool with explicit pads (torch's ``padding=``, ONNX's ``pads``): an int, one
int per spatial axis, or 2k ints (begins, then ends), each below the window. Values against a
float64 numpy loop over the windows written from the formula O = floor((D + before + after -
K) / s) + 1 (the maximum over the window's elements inside the input; the mean divided by the
elements inside the input, or by K's product with count_include_pad), gradients against
central differences of that loop, and torch's pooling where torch is installed. ~3 s."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import np_pool, numeric_grad, torch_or_skip

import graphc as gc
from graphc.ir.errors import GraphcError

# (x shape without N, pool_size, strides, padding as given, (before, after) per axis)
CASES = [
    ((2, 7, 9), (3, 3), (2, 2), 1, [(1, 1), (1, 1)]),
    ((1, 6, 5), (2, 3), (2, 1), (1, 0), [(1, 1), (0, 0)]),
    ((2, 8, 7), (4, 3), (3, 2), (0, 2, 3, 1), [(0, 3), (2, 1)]),
    ((3, 5, 5), (3, 3), (1, 1), (2, 1), [(2, 2), (1, 1)]),
    ((2, 11), (4,), (3,), 3, [(3, 3)]),
    ((1, 5, 4, 3), (2, 3, 2), (2, 2, 1), (1, 1, 1), [(1, 1), (1, 1), (1, 1)]),
]


VARIANTS = [("max", False), ("avg", False), ("avg", True)]


def _pool(kind, include, x, ks, ss, padding, ceil=False):
    if kind == "max":
        return gc.max_pool(x, ks, ss, padding=padding, ceil_mode=ceil)
    return gc.avg_pool(x, ks, ss, padding=padding, count_include_pad=include, ceil_mode=ceil)


@pytest.mark.parametrize("ceil", [False, True])
def test_padded_pooling_matches_numpy_float64(ceil) -> None:
    rng = np.random.default_rng(0)
    ins, outs, want = {}, [], []
    for c, (shape, ks, ss, padding, pads) in enumerate(CASES):
        x = gc.input(f"x{c}", ("N", *shape), dtype="f64")
        ins[f"x{c}"] = rng.standard_normal((3, *shape))
        for kind, include in VARIANTS:
            y = _pool(kind, include, x, ks, ss, padding, ceil)
            ref = np_pool(ins[f"x{c}"], ks, ss, pads, kind, include, ceil)
            assert tuple(y.shape[1:]) == ref.shape[1:], (c, kind, include)
            outs.append(y)
            want.append(ref)
    m = gc.compile(outs)
    for k, (g, w) in enumerate(zip(m.predict(ins).values(), want)):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-14, err_msg=str(k))


@pytest.mark.parametrize("kind,include", VARIANTS)
def test_padded_pooling_gradient_matches_central_differences(kind, include) -> None:
    shape, ks, ss, padding, pads = (2, 5, 6), (3, 2), (2, 3), (0, 1, 2, 1), [(0, 2), (1, 1)]
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((2, *shape))
    x = gc.input("x", ("N", *shape), dtype="f64")
    p = gc.param("p", shape, init="zeros", dtype="f64")
    y = _pool(kind, include, x + p, ks, ss, padding, ceil=True)
    m = gc.compile(y, gc.sum(y * y), gc.SGD(lr=0.0))
    got = m.gradients(xv)["p"]

    def f(pv):
        return float(np.sum(np_pool(xv + pv, ks, ss, pads, kind, include, True) ** 2))

    np.testing.assert_allclose(got, numeric_grad(f, [np.zeros(shape)], 0), rtol=1e-6, atol=1e-8)


def test_padded_pooling_matches_torch() -> None:
    torch = torch_or_skip()
    f = torch.nn.functional
    rng = np.random.default_rng(2)
    overhang = [  # ceil_mode's last window runs past the padded input
        ((2, 8, 7), (3, 3), (2, 2), 1, [(1, 1), (1, 1)]),
        ((1, 6, 7), (2, 2), (2, 2), 0, [(0, 0), (0, 0)]),
    ]
    for c, (shape, ks, ss, padding, pads) in enumerate(CASES[:4] + overhang):
        if any(b != e or 2 * b > k for (b, e), k in zip(pads, ks)):
            continue  # torch pads both sides alike, at most half the window
        sym = tuple(b for b, _ in pads)
        xv = rng.standard_normal((2, *shape)).astype(np.float32)
        x = gc.input("x", ("N", *shape))
        for ceil in (False, True):
            m = gc.compile([_pool(kind, inc, x, ks, ss, padding, ceil) for kind, inc in VARIANTS])
            got = list(m.predict(xv).values())
            t = torch.from_numpy(xv)
            ref = [
                f.max_pool2d(t, ks, ss, padding=sym, ceil_mode=ceil),
                f.avg_pool2d(t, ks, ss, padding=sym, ceil_mode=ceil, count_include_pad=False),
                f.avg_pool2d(t, ks, ss, padding=sym, ceil_mode=ceil, count_include_pad=True),
            ]
            for g, r in zip(got, ref):
                np.testing.assert_allclose(g, r.numpy(), rtol=1e-6, atol=1e-6, err_msg=str(c))


def test_padded_pooling_layers_and_refusals() -> None:
    x = gc.input("x", ("N", 2, 7, 9))
    assert gc.MaxPool(3, 2, padding=1)(x).shape == ("N", 2, 4, 5)
    assert gc.AvgPool((2, 4), padding=(1, 2), count_include_pad=True)(x).shape == ("N", 2, 4, 3)
    with pytest.raises(
        GraphcError, match="padding 3 before / 3 after spatial axis 0 must be below"
    ):
        gc.max_pool(x, 3, padding=3)
    with pytest.raises(GraphcError, match="spatial axis 1 must be below pool_size 2"):
        gc.avg_pool(x, 2, padding=(0, 0, 1, 2))
    with pytest.raises(GraphcError, match="padding must be 'valid', 'same' or ints, got 'full'"):
        gc.max_pool(x, 3, padding="full")
