"""Plots of training runs (PNG, through matplotlib, an optional extra: ``pip install -e ".[plot]"``).

history = model.fit(x, y, epochs=50, validation_split=0.2)
graphc.plot.learning_curves(history, "curves.png")
"""

from __future__ import annotations

import math
from typing import Any

from graphc.ir.errors import GraphcError, install_hint

MISSING = "matplotlib is not installed, so no plot was written; " + install_hint(
    "matplotlib", "plot"
)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or GraphcError with the install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GraphcError(MISSING) from None
    return plt


def _save(fig: Any, path: str, plt: Any) -> None:
    """Write ``fig`` to ``path`` and close it.

    Raises:
        GraphcError: the file cannot be written (naming it and the errno).
    """
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise GraphcError(f"cannot write {path!r} ([Errno {e.errno}] {e.strerror})") from None
    finally:
        plt.close(fig)


def learning_curves(
    history: Any, path: str, *, title: str | None = None, metrics: tuple[str, ...] = ("loss",)
) -> str:
    """Write a PNG of training and validation figures per epoch (one panel per metric).

    Under-fitting shows as both curves staying high; over-fitting as the validation curve
    turning up while the training curve keeps falling. The best epoch (``history.best_epoch``,
    set by EarlyStopping, else the minimum of val_loss) is marked.

    Args:
        history: a ``History`` from ``Model.fit`` (or a dict name -> list of per-epoch values).
        path: where to write the PNG.
        title: the figure's title.
        metrics: base names to plot; each gets its ``val_`` twin when recorded.

    Returns:
        ``path``.

    Raises:
        GraphcError: matplotlib is missing (the message says how to install it), the
            history holds none of ``metrics``, or ``path`` cannot be written.
    """
    figures = history.metrics if hasattr(history, "metrics") else dict(history)
    shown = [m for m in metrics if m in figures or f"val_{m}" in figures]
    if not shown:
        raise GraphcError(
            f"learning_curves: the history holds none of {metrics} (it has {sorted(figures)})"
        )
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4), squeeze=False)
    best = getattr(history, "best_epoch", None)
    if best is None and "val_loss" in figures:
        best = min(range(len(figures["val_loss"])), key=figures["val_loss"].__getitem__)
    for ax, m in zip(axes[0], shown):
        for key, label in ((m, "training"), (f"val_{m}", "validation")):
            if key in figures:
                ys = figures[key]
                ax.plot(range(1, len(ys) + 1), ys, label=label)
        if best is not None:
            ax.axvline(
                best + 1, color="gray", linestyle="--", linewidth=1, label=f"best epoch {best + 1}"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, plt)
    return path


def lr_curve(
    lrs: list[float],
    losses: list[float],
    path: str,
    *,
    suggestion: float | None = None,
    raw: list[float] | None = None,
) -> str:
    """Write a PNG of loss against learning rate (log axis), marking the suggested rate.

    Raises:
        GraphcError: matplotlib is missing, or ``path`` cannot be written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if raw is not None:
        ax.plot(lrs[: len(raw)], raw, alpha=0.3, label="loss")
    ax.plot(lrs[: len(losses)], losses, label="smoothed loss")
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.2e}")
    finite = [v for v in losses if math.isfinite(v)]
    if finite:  # the diverging tail would squash the useful part: clip at 1.25x the start
        lo = min(finite + [v for v in (raw or []) if math.isfinite(v)])
        ax.set_ylim(lo - 0.05 * abs(lo), 1.25 * max(finite[: finite.index(min(finite)) + 1]))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path, plt)
    return path
