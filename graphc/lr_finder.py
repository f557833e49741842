"""Learning-rate search: the range test of Smith ("Cyclical Learning Rates for Training Neural
Networks", 2017, section 3.3), in the form popularized by fastai's ``lr_find``.

The rate grows exponentially from ``start_lr`` to ``end_lr`` over ``num_steps`` training
steps; the loss of each step is recorded and smoothed with a bias-corrected exponential moving
average; the search stops early once the smoothed loss exceeds ``diverge`` times its minimum
(for a loss that goes below 0, once it exceeds the minimum by ``diverge - 1`` times the
minimum's magnitude: see ``find_lr``).
The suggested rate is where the smoothed loss falls fastest against log(lr) (the minimum of
its numerical derivative). The model's parameters, optimizer state (the step counter
included), ``lr`` and ``initial_lr`` (the schedules' base rate) are restored afterwards, so the
search leaves no trace. Because the rate
is a runtime input of the compiled step, nothing is recompiled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError

from . import plot as _plot


@dataclass
class LRFinderResult:
    """The sweep: rates tried, raw and smoothed losses, and the suggested rate."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped_early: bool = False

    def __repr__(self) -> str:
        """One line: the sweep's range and the suggestion (the curve is in the fields)."""
        span = f"{self.lrs[0]:.3g} to {self.lrs[-1]:.3g}" if self.lrs else "none"
        best = "None" if self.suggestion is None else f"{self.suggestion:.3g}"
        return (
            f"LRFinderResult(suggestion={best}, {len(self.lrs)} rates from {span}, "
            f"stopped_early={self.stopped_early}; the curve: .lrs, .losses, .smoothed)"
        )

    def plot(self, path: str) -> str:
        """Write the loss-vs-rate curve as a PNG (needs matplotlib; GraphcError otherwise)."""
        return _plot.lr_curve(
            self.lrs, self.smoothed, path, suggestion=self.suggestion, raw=self.losses
        )


def steepest(
    lrs: list[float], smoothed: list[float], skip_start: int = 0, skip_end: int = 0
) -> float | None:
    """The rate where d(smoothed)/d(log lr) is most negative (None with fewer than 3 points)."""
    hi = len(smoothed) - skip_end
    xs, ys = np.log(np.asarray(lrs[skip_start:hi])), np.asarray(smoothed[skip_start:hi])
    if len(xs) < 3:
        return None
    slope = np.gradient(ys, xs)
    return float(np.exp(xs[int(np.argmin(slope))]))


def find_lr(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int = 32,
    beta: float = 0.98,
    diverge: float = 4.0,
    seed: int = 0,
    plot: str | None = None,
    verbose: int = 0,
) -> LRFinderResult:
    """Sweep the learning rate exponentially over a short training run and suggest one.

    Args:
        model: a compiled trainable Model.
        x, y: training data (as for ``fit``); batches are drawn in a shuffled cycle.
        start_lr, end_lr: the sweep's first and last rate (0 < start_lr < end_lr).
        num_steps: training steps (one rate each, >= 3).
        batch_size: rows per step.
        beta: smoothing factor of the moving average of the loss.
        diverge: stop when the smoothed loss exceeds this multiple of its minimum; in general
            when it rises above the minimum m by more than ``(diverge - 1) * |m|``, the same
            test for a loss >= 0 and one that still works for losses that go below 0 (a
            negative log-likelihood, an offset loss: ``sm > diverge * m`` held at once for a
            negative m, and the sweep stopped after 2 steps with no suggestion, as fastai's
            lr_find did, fastai issue #962).
        seed: seeds the batch order.
        plot: write the curve to this PNG path (a message instead when matplotlib is missing).
        verbose: 1 prints the suggestion.

    Returns:
        LRFinderResult (rates, losses, smoothed losses, suggestion).

    Raises:
        ArgumentError: bad rates, step count or ``diverge``; data errors as in ``fit``.
    """
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ArgumentError(f"find_lr: need 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if num_steps < 3:
        raise ArgumentError(f"find_lr: num_steps must be >= 3, got {num_steps}")
    if not (isinstance(diverge, int | float) and diverge > 1 and math.isfinite(diverge)):
        raise ArgumentError(f"find_lr: diverge must be a finite number > 1, got {diverge!r}")
    feeds, n = model._as_feeds(x, y, need_labels=True)
    model._validate(feeds)
    saved_params = model.get_weights()
    saved_state = {k: v.copy() for k, v in model.state.items()}
    saved_lr, saved_initial = model.lr, model.initial_lr
    res = LRFinderResult()
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(n), 0
    bs = min(batch_size, n)
    avg, best = 0.0, math.inf
    try:
        for i in range(num_steps):
            lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos : pos + bs]
            pos += bs
            model.lr = lr
            loss = model.train_step(
                {k: v[idx] for k, v in feeds.items() if k in model.program.feature_inputs},
                {k: v[idx] for k, v in feeds.items() if k in model.program.label_inputs},
            )
            avg = beta * avg + (1 - beta) * loss
            sm = avg / (1 - beta ** (i + 1))
            res.lrs.append(lr)
            res.losses.append(float(loss))
            res.smoothed.append(float(sm))
            if not math.isfinite(sm) or sm - best > (diverge - 1) * abs(best):
                res.stopped_early = True
                break
            best = min(best, sm)
    finally:
        model.set_weights(saved_params)
        for k, v in saved_state.items():
            model.state[k][...] = v
        model.lr = saved_lr
        model.initial_lr = saved_initial  # (setting lr outside fit sets it too)
    finite = [k for k, s in enumerate(res.smoothed) if math.isfinite(s)]
    upto = finite[-1] + 1 if finite else 0
    # skip the first tenth (the average is still warming up) and a diverging last point
    res.suggestion = steepest(
        res.lrs[:upto],
        res.smoothed[:upto],
        skip_start=max(1, upto // 10),
        skip_end=1 if res.stopped_early else 0,
    )
    if plot:
        if _plot.have_matplotlib():
            res.plot(plot)
        else:
            logging.getLogger(__name__).warning("find_lr: %s", _plot.MISSING)
    if verbose and res.suggestion is not None:
        print(
            f"find_lr: suggested learning rate {res.suggestion:.3g} "
            f"({len(res.lrs)} steps from {start_lr:g} to {res.lrs[-1]:.3g})"
        )
    return res
