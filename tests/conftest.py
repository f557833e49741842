"""Shared test helpers."""

from __future__ import annotations

import numpy as np


def numeric_grad(f, xs: list[np.ndarray], i: int, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f(*xs) with respect to xs[i], in float64."""
    xs = [np.asarray(x, dtype=np.float64) if x.dtype.kind == "f" else x for x in xs]
    grad = np.zeros_like(xs[i])
    for idx in np.ndindex(grad.shape):
        step = np.zeros_like(xs[i])
        step[idx] = eps
        hi = f(*xs[:i], xs[i] + step, *xs[i + 1:])
        lo = f(*xs[:i], xs[i] - step, *xs[i + 1:])
        grad[idx] = (hi - lo) / (2 * eps)
    return grad
