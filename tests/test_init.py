"""Initializers: the documented mean, variance and bounds, checked statistically; seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphc.init import INITIALIZERS, fans, initialize
from graphc.ir.errors import GraphcError

SHAPE = (300, 500)  # fan_in 300, fan_out 500, 150 000 draws
FAN_IN, FAN_OUT = SHAPE

# name, args, documented variance, bound of |w| (None: unbounded)
CASES = [
    ("uniform", {"low": -0.2, "high": 0.2}, 0.4**2 / 12, 0.2),
    ("normal", {"mean": 0.0, "std": 0.3}, 0.09, None),
    ("glorot_uniform", {}, 2.0 / (FAN_IN + FAN_OUT), math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
    ("glorot_normal", {}, 2.0 / (FAN_IN + FAN_OUT), None),
    ("he_uniform", {}, 2.0 / FAN_IN, math.sqrt(6.0 / FAN_IN)),
    ("he_normal", {}, 2.0 / FAN_IN, None),
]


@pytest.mark.parametrize("name,args,var,bound", CASES, ids=[c[0] for c in CASES])
def test_documented_variance_mean_and_bounds(name, args, var, bound) -> None:
    w = initialize(name, SHAPE, np.random.default_rng(0), np.float64, **args)
    n = w.size
    assert w.shape == SHAPE
    assert abs(w.mean()) < 5 * math.sqrt(var / n)
    # the sample variance's relative standard deviation is at most sqrt(2 / n) (normal case)
    assert abs(w.var() / var - 1) < 5 * math.sqrt(2.0 / n)
    if bound is not None:
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound


def test_uniform_and_normal_honour_their_arguments() -> None:
    w = initialize("uniform", (100_000,), np.random.default_rng(1), np.float64, low=1.0, high=3.0)
    assert w.min() >= 1.0 and w.max() < 3.0 and abs(w.mean() - 2.0) < 0.01
    w = initialize("normal", (100_000,), np.random.default_rng(1), np.float64, mean=5.0, std=0.5)
    assert abs(w.mean() - 5.0) < 0.01 and abs(w.std() - 0.5) < 0.01


def test_constant_initializers() -> None:
    rng = np.random.default_rng(0)
    assert np.array_equal(initialize("zeros", (3, 4), rng), np.zeros((3, 4), np.float32))
    assert np.array_equal(initialize("ones", (5,), rng), np.ones(5, np.float32))
    assert np.array_equal(
        initialize("constant", (2, 2), rng, value=0.25), np.full((2, 2), 0.25, np.float32)
    )


def test_seeded_and_typed() -> None:
    a = initialize("he_normal", (20, 30), np.random.default_rng(42))
    b = initialize("he_normal", (20, 30), np.random.default_rng(42))
    c = initialize("he_normal", (20, 30), np.random.default_rng(43))
    assert a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_fans_of_vectors_matrices_and_kernels() -> None:
    assert fans((7,)) == (7, 7)
    assert fans((3, 5)) == (3, 5)
    # conv filters [out, in, 2, 2] (receptive field 2x2): torch.nn.init's fans
    assert fans((3, 5, 2, 2)) == (20, 12)


def test_every_listed_initializer_runs_and_unknowns_are_rejected() -> None:
    for name in INITIALIZERS:
        args = {"value": 1.0} if name == "constant" else {}
        assert initialize(name, (4, 3), np.random.default_rng(0), **args).shape == (4, 3)
    with pytest.raises(GraphcError, match="unknown initializer"):
        initialize("xavier", (2, 2), np.random.default_rng(0))
    with pytest.raises(GraphcError, match="takes no argument"):
        initialize("he_normal", (2, 2), np.random.default_rng(0), std=1.0)
