"""The main job: train a 64-32-10 MLP on the handwritten-digits data set, export it as a shared
library with a C header, and check that the library predicts what the in-process model does.

    python examples/digits.py [--epochs 30] [--out examples/out]
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


def build(x_train: np.ndarray):
    """The network: 64 raw pixel values (0..16), standardized inside the graph with the training
    rows' statistics (so the exported library takes raw pixels too), 32 relu units, 10 logits;
    softmax cross-entropy."""
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    norm = gc.Normalization(name="pixels").adapt(x_train)
    h = gc.dense(norm(x), 32, activation="relu", name="hidden")
    logits = gc.dense(h, 10, name="logits")
    loss = gc.softmax_cross_entropy(logits, labels)
    return logits, loss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    )
    args = ap.parse_args(argv)

    data = load("digits", seed=args.seed, labels="int", standardize=False)  # raw pixels
    print(
        f"digits: {len(data.x_train)} training rows, {len(data.x_test)} test rows, 64 features, 10 classes"
    )
    logits, loss = build(data.x_train)
    t0 = time.perf_counter()
    model = gc.compile(logits, loss, gc.Adam(lr=args.lr), name="digits", seed=args.seed)
    print(
        f"compiled in {time.perf_counter() - t0:.2f} s "
        f"({len(model.program.schedules['train_step'].kernels)} kernels in the training step)"
    )
    model.fit(
        data.x_train,
        data.y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        validation_data=(data.x_test, data.y_test),
    )
    result = model.evaluate(data.x_test, data.y_test)
    print(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")

    os.makedirs(args.out, exist_ok=True)
    lib_path = os.path.join(args.out, "libdigits.so")
    export = model.export(lib_path)
    print(f"wrote {export.library} and {export.header}")
    lib = gc.load(lib_path)
    native = lib.predict(data.x_test)  # raw pixels: the library standardizes them itself
    inproc = model.predict(data.x_test)
    diff = float(np.max(np.abs(native - inproc)))
    same = diff <= 1e-5 * max(1.0, float(np.max(np.abs(inproc))))
    print(f"library predictions match the in-process model: {same} (max abs difference {diff:.2e})")
    if not same or result["accuracy"] < 0.95:
        print("FAILED: accuracy below 0.95 or library mismatch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
