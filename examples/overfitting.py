"""Over-fitting, and two cures: dropout and early stopping, on the handwritten-digits data set.

A wide MLP (64-256-256-10) trained on only 150 digits memorizes them: its training loss goes to
zero while the validation loss turns up. The same network with dropout (p = 0.5 after each
hidden layer) and early stopping on the validation loss (patience 15, best weights restored)
ends with a much smaller gap between the two losses.

    python examples/overfitting.py [--epochs 100] [--train-rows 150] [--lr 3e-3] [--plot PNG]

Prints, for each run, the final training and validation losses (evaluated without dropout),
their gap, the best epoch and the validation accuracy; writes the learning curves when
matplotlib is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_utils import load

import graphc as gc
from graphc.plot import MISSING, have_matplotlib


def build(p_drop: float, seed: int, hidden: int = 256):
    """64-H-H-10 relu MLP (H = ``hidden``); dropout with rate ``p_drop`` after each hidden layer
    (0: none)."""
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    h = gc.dropout(gc.dense(x, hidden, "relu", name="h1"), p_drop, seed=seed)
    h = gc.dropout(gc.dense(h, hidden, "relu", name="h2"), p_drop, seed=seed)
    logits = gc.dense(h, 10, name="out")
    return logits, gc.softmax_cross_entropy(logits, labels)


def run(
    name: str,
    data,
    xtr,
    ytr,
    *,
    p_drop: float,
    early: bool,
    epochs: int,
    seed: int,
    lr: float,
    hidden: int,
) -> dict:
    logits, loss = build(p_drop, seed, hidden)
    model = gc.compile(logits, loss, gc.Adam(lr=lr), name=name, seed=seed)
    callbacks = (
        [gc.EarlyStopping("val_loss", patience=15, restore_best_weights=True)] if early else []
    )
    hist = model.fit(
        xtr,
        ytr,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        verbose=0,
        validation_data=(data.x_test, data.y_test),
        callbacks=callbacks,
    )
    train = model.evaluate(xtr, ytr)  # without dropout, as the validation figures
    val = model.evaluate(data.x_test, data.y_test)
    best = hist.best_epoch if hist.best_epoch is not None else int(np.argmin(hist["val_loss"]))
    return {
        "name": name,
        "history": hist,
        "epochs_run": len(hist.epochs),
        "best_epoch": best + 1,
        "train_loss": train["loss"],
        "val_loss": val["loss"],
        "gap": val["loss"] - train["loss"],
        "val_accuracy": val["accuracy"],
        "min_val_loss": min(hist["val_loss"]),
    }


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), sharey=True)
    for ax, r in zip(axes, results):
        h = r["history"]
        ep = np.arange(1, len(h.epochs) + 1)
        ax.plot(ep, h["loss"], label="training loss (with dropout, if any)")
        ax.plot(ep, h["val_loss"], label="validation loss")
        ax.axvline(
            r["best_epoch"], color="gray", linestyle="--", label=f"best epoch {r['best_epoch']}"
        )
        ax.set_title(r["name"])
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("cross-entropy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--train-rows", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, default=256, help="units per hidden layer")
    ap.add_argument(
        "--plot",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "overfitting.png"),
        help="PNG of the learning curves ('' for none)",
    )
    args = ap.parse_args(argv)

    data = load("digits", seed=args.seed, labels="int")
    xtr, ytr = data.x_train[: args.train_rows], data.y_train[: args.train_rows]
    print(f"digits: training on {len(xtr)} rows, validating on {len(data.x_test)} held-out rows")
    t0 = time.perf_counter()
    common = dict(epochs=args.epochs, seed=args.seed, lr=args.lr, hidden=args.hidden)
    results = [
        run("plain", data, xtr, ytr, p_drop=0.0, early=False, **common),
        run("dropout_early_stopping", data, xtr, ytr, p_drop=0.5, early=True, **common),
    ]
    print(
        f"{'run':<24}{'epochs':>7}{'best':>6}{'train loss':>12}{'val loss':>10}{'gap':>9}"
        f"{'min val':>9}{'val acc':>9}"
    )
    for r in results:
        print(
            f"{r['name']:<24}{r['epochs_run']:>7}{r['best_epoch']:>6}{r['train_loss']:>12.4f}"
            f"{r['val_loss']:>10.4f}{r['gap']:>9.4f}{r['min_val_loss']:>9.4f}{r['val_accuracy']:>9.3f}"
        )
    plain, reg = results
    print(
        f"validation minus training loss: {plain['gap']:.3f} without, {reg['gap']:.3f} with dropout "
        f"and early stopping ({time.perf_counter() - t0:.1f} s)"
    )
    if args.plot:
        if have_matplotlib():
            os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
            plot(results, args.plot)
            print(f"learning curves written to {args.plot}")
        else:
            print(MISSING)
    return results


if __name__ == "__main__":
    main()
