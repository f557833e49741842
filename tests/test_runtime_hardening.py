"""Runtime hardening found by an adversarial pass: lr = 0, allocation failures (WorkspaceError),
snapshots taken while another thread trains, copies and pickles of models, BatchNorm on one
row, the clip gradient at its bounds."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def _mlp(name: str, h: int = 8, opt=None, din: int = 6, classes: int = 3, **kw):
    x = gc.input("x", ("N", din))
    y = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, h, "relu"), classes)
    loss = gc.softmax_cross_entropy(logits, y)
    return gc.compile(logits, loss, opt or gc.SGD(lr=0.05), name=name, **kw)


def _data(n: int, din: int = 6, classes: int = 3, seed: int = 0):
    r = np.random.default_rng(seed)
    return (
        r.standard_normal((n, din)).astype(np.float32),
        r.integers(0, classes, n).astype(np.int32),
    )


# ---------------------------------------------------------------- lr = 0, allocation failures


@pytest.mark.parametrize("opt", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_optimizers_accept_lr_zero_and_refuse_negative(opt: str) -> None:
    assert getattr(gc, opt)(lr=0.0).lr == 0.0  # torch.optim refuses only lr < 0
    for bad in (-1e-3, float("nan"), float("inf"), True):
        with pytest.raises(gc.GraphcError, match="lr must be a finite number >= 0"):
            getattr(gc, opt)(lr=bad)


def test_lr_zero_optimizer_leaves_sgd_params_unchanged() -> None:
    m = _mlp("lr_zero_sgd", opt=gc.SGD(lr=0.0))
    x, y = _data(16)
    w0 = m.get_weights()
    m.train_step(x, y)
    assert all(np.array_equal(w0[k], v) for k, v in m.get_weights().items())


def test_workspace_allocation_failure_names_batch_and_fix() -> None:
    m = _mlp("ws_fail")
    x, _ = _data(4)
    want = m.predict(x)
    e = m.entries["infer"]
    rows = 2**50
    with pytest.raises(gc.WorkspaceError, match=rf"batch of {rows} rows: use a smaller batch"):
        e.prepare(rows)
    with pytest.raises(gc.ShapeError):  # still a ShapeError and a MemoryError for old callers
        e.prepare(rows)
    assert issubclass(gc.WorkspaceError, MemoryError)
    np.testing.assert_array_equal(m.predict(x), want)  # nothing changed


# ---------------------------------------------------------------- clip's gradient at the bounds


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-0.5, 0.5), (0.25, 0.25)])
def test_clip_gradient_is_zero_at_the_bounds_and_fd_inside(lo: float, hi: float) -> None:
    # torch >= 2.x (2.14.1 checked): d/dx clamp(x, lo, hi) = [lo < x < hi]; 0 at both bounds
    v = np.array([[lo - 1.0, lo, (lo + hi) / 2, hi, hi + 1.0, lo + 0.1, hi - 0.1]], np.float32)
    x = gc.input("x", ("N", v.shape[1]))
    p = gc.param("p", (v.shape[1],), init="zeros")
    y = gc.clip(gc.add(x, p), min=lo, max=hi)
    m = gc.compile(y, gc.sum(y), gc.SGD(lr=1e-3), name=f"clipg{int(lo * 4) + 4}{int(hi * 4) + 4}")
    g = m.gradients({"x": v})["p"]
    want = ((v[0] > lo) & (v[0] < hi)).astype(np.float32)
    np.testing.assert_array_equal(g, want)
    # away from the bounds: central differences of numpy's clip (float64)
    h = 1e-3
    for j, xj in enumerate(v[0].astype(np.float64)):
        if min(abs(xj - lo), abs(xj - hi)) > 2 * h:
            fd = (np.clip(xj + h, lo, hi) - np.clip(xj - h, lo, hi)) / (2 * h)
            assert abs(g[j] - fd) < 1e-6, (j, xj, g[j], fd)
    # the same convention as hard_tanh (which is clip(x, -1, 1))
    if (lo, hi) == (-0.5, 0.5):
        u = np.array([[-1.0, -0.5, 0.0, 1.0, 2.0]], np.float32) * 2
        x2 = gc.input("x", ("N", 5))
        q = gc.param("q", (5,), init="zeros")
        a = gc.clip(gc.add(x2, q), min=-1.0, max=1.0)
        b = gc.activation(gc.add(x2, q), "hard_tanh")
        ma = gc.compile(a, gc.sum(a), gc.SGD(lr=1e-3), name="clip_ht_a")
        mb = gc.compile(b, gc.sum(b), gc.SGD(lr=1e-3), name="clip_ht_b")
        np.testing.assert_array_equal(ma.gradients({"x": u})["q"], mb.gradients({"x": u})["q"])
