"""Gradients at kinks, ties and singular points: graphc's convention, pinned (trust2, stop 13).

graphc follows PyTorch where PyTorch and JAX differ: abs'(0) = 0 (JAX: 1), leaky_relu'(0) =
alpha (JAX: 1), d/dx x**0 = 0 at x = 0 (JAX: NaN), sqrt'(0) = +inf (both). One deliberate
difference from both: clip (and so relu6 = clip(x, 0, 6)) passes 0 at its bounds, the
minimum-norm subgradient (torch 2.13's clamp passes 1 there, JAX's clip 0.5), as hard_tanh
(0 at +-1 in torch too) and relu (0 at 0). At -0.0, sqrt' is 1 / (2 sqrt(-0)) = -inf (torch
and JAX) and pow(x, 0.5)' is 0.5 * (-0)**-0.5 = +inf (C's pow; JAX too, torch -inf). The expected values are the documented formulas
(README, "NaN" paragraph); where torch is installed the test also checks every value except
the clip bounds against torch.autograd in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc

INF = math.inf
PTS = [0.0, -0.0, 1.0, -1.0, 6.0]
# name: (graphc function, torch function name or None, expected d/dx at PTS)
CASES = {
    "relu": (gc.relu, "relu", [0, 0, 1, 0, 1]),
    "abs": (gc.abs, "abs", [0, 0, 1, -1, 1]),
    "leaky_relu": (gc.leaky_relu, "leaky_relu", [0.01, 0.01, 1, 0.01, 1]),
    "elu": (gc.elu, "elu", [1, 1, 1, math.exp(-1), 1]),
    "hard_tanh": (gc.hard_tanh, "hardtanh", [1, 1, 0, 0, 0]),
    "clip": (lambda w: gc.clip(w, min=-1.0, max=1.0), None, [1, 1, 0, 0, 0]),
    "relu6": (lambda w: gc.clip(w, min=0.0, max=6.0), None, [0, 0, 1, 0, 0]),
    "sqrt": (gc.sqrt, "sqrt", [INF, -INF, 0.5, math.nan, 0.5 / math.sqrt(6)]),
    "pow_half": (lambda w: gc.pow(w, 0.5), None, [INF, INF, 0.5, math.nan, 0.5 / 6**0.5]),
    "pow_zero": (lambda w: gc.pow(w, 0.0), "pow_zero", [0, 0, 0, 0, 0]),
    "pow_three_halves": (
        lambda w: gc.pow(w, 1.5),
        "pow_three_halves",
        [0, 0, 1.5, math.nan, 1.5 * 6**0.5],
    ),
    "log": (gc.log, "log", [INF, -INF, 1, -1, 1 / 6]),
    "reciprocal": (gc.reciprocal, "reciprocal", [-INF, -INF, -1, -1, -1 / 36]),
}


def _torch_fn(torch, name):
    f = torch.nn.functional
    return {
        "relu": torch.relu,
        "abs": torch.abs,
        "leaky_relu": lambda w: f.leaky_relu(w, 0.01),
        "elu": f.elu,
        "hardtanh": f.hardtanh,
        "sqrt": torch.sqrt,
        "pow_zero": lambda w: w**0.0,
        "pow_three_halves": lambda w: w**1.5,
        "log": torch.log,
        "reciprocal": torch.reciprocal,
    }[name]


@pytest.fixture(scope="module")
def grads() -> dict[str, np.ndarray]:
    """d/dw of sum(f(w)) for every case at PTS, float64, one compiled model."""
    x = gc.input("x", ("N", 1))
    loss = gc.sum(gc.cast(x, dtype="f64")) * 0.0
    for name, (fn, _, _) in CASES.items():
        loss = loss + gc.sum(fn(gc.param(name, (len(PTS),), init="zeros", dtype="f64")))
    m = gc.compile(loss, loss, gc.SGD(lr=0.0), name="trust_kinks")
    m.set_weights({name: np.array(PTS) for name in CASES})
    return m.gradients(np.zeros((2, 1), np.float32))


@pytest.mark.parametrize("name", list(CASES))
def test_kink_gradient_follows_the_documented_convention(grads, name):
    want = np.array(CASES[name][2], np.float64)
    # NaN where NaN, infinities of the same sign, finite values to the last bit or so
    np.testing.assert_allclose(grads[name], want, rtol=1e-15, atol=0, err_msg=name)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[1] is not None])
def test_kink_gradient_equals_torch(grads, name):
    torch = pytest.importorskip("torch")
    w = torch.tensor(PTS, dtype=torch.float64, requires_grad=True)
    _torch_fn(torch, CASES[name][1])(w).sum().backward()
    np.testing.assert_allclose(grads[name], w.grad.numpy(), rtol=1e-15, atol=0, err_msg=name)
