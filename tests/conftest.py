"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys

import numpy as np
import pytest

from graphc.codegen.threads import FAR_NS

# The thread pools take this dispatch cost (between cores that share a cache) instead of
# measuring it (codegen/threads.py): which work splits over threads is then the same on a quiet
# and on a loaded machine (the tests that count dispatches), the thresholds as measured;
# tests/test_threads.py measures it where it tests the probe.
os.environ.setdefault("GRAPHC_DISPATCH_NS", str(FAR_NS // 2))


def numeric_grad(f, xs: list[np.ndarray], i: int, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f(*xs) with respect to xs[i], in float64."""
    xs = [np.asarray(x, dtype=np.float64) if x.dtype.kind == "f" else x for x in xs]
    grad = np.zeros_like(xs[i])
    for idx in np.ndindex(grad.shape):
        step = np.zeros_like(xs[i])
        step[idx] = eps
        hi = f(*xs[:i], xs[i] + step, *xs[i + 1 :])
        lo = f(*xs[:i], xs[i] - step, *xs[i + 1 :])
        grad[idx] = (hi - lo) / (2 * eps)
    return grad


def torch_or_skip():
    """torch, or a skip saying why; a failed import is remembered for the rest of the session
    (importing a broken torch install takes seconds)."""
    why = os.environ.get("GRAPHC_TEST_TORCH_MISSING")
    spec = importlib.util.find_spec("torch")
    if spec is None:
        why = "not installed"
    elif sys.platform == "linux" and spec.origin:
        # torch/__init__ loads lib/libtorch_global_deps.so first; without it the import fails
        # after many seconds of searching, so an incomplete install is recognized up front
        lib = os.path.join(os.path.dirname(spec.origin), "lib")
        if os.path.isdir(lib) and not os.path.exists(os.path.join(lib, "libtorch_global_deps.so")):
            why = "incomplete install: lib/libtorch_global_deps.so is missing"
    if why:
        pytest.skip(f"torch is not importable ({why}): comparison with torch skipped")
    try:
        import torch
    except Exception as e:
        os.environ["GRAPHC_TEST_TORCH_MISSING"] = type(e).__name__
        pytest.skip(f"torch is not importable ({type(e).__name__}): comparison with torch skipped")
    return torch


def _pool_outs(sizes, ks, ss, pads, ceil):
    """torch's output sizes: floor or ceil of (D + pads - K) / s, plus one; with ceil, one less
    when the last window would start past the input and its begin pad."""
    outs = []
    for d, k, s, (b, e) in zip(sizes, ks, ss, pads):
        o = (-(-(d + b + e - k) // s) if ceil else (d + b + e - k) // s) + 1
        outs.append(o - 1 if ceil and (o - 1) * s >= d + b else o)
    return outs


def np_pool(x, ks, ss, pads, kind: str, include: bool = False, ceil: bool = False):
    """Max or average pooling ("max" / "avg") of x [N, C, D1..Dk] with pads [(before, after)]
    per spatial axis, window by window, in float64: the maximum over the window's elements
    inside x; the mean divided by their count or, with ``include``, by the window's positions
    inside the padded input (torch's divisor); ``ceil``: torch's ceil_mode."""
    outs = _pool_outs(x.shape[2:], ks, ss, pads, ceil)
    y = np.empty((*x.shape[:2], *outs))
    for o in itertools.product(*(range(v) for v in outs)):
        lo = [oi * s - p[0] for oi, s, p in zip(o, ss, pads)]
        win = x[
            (
                slice(None),
                slice(None),
                *(slice(max(b, 0), min(b + k, d)) for b, k, d in zip(lo, ks, x.shape[2:])),
            )
        ]
        axes = tuple(range(2, x.ndim))
        if kind == "max":
            y[(slice(None), slice(None), *o)] = win.max(axes)
        else:
            inside = [min(b + k, d + p[1]) - b for b, k, d, p in zip(lo, ks, x.shape[2:], pads)]
            n = int(np.prod(inside)) if include else int(np.prod(win.shape[2:]))
            y[(slice(None), slice(None), *o)] = win.sum(axes) / n
    return y
