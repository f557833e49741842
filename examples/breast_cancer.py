"""Breast cancer (Wisconsin diagnostic): a 30-16-1 tanh network, binary cross-entropy from
logits, SGD with momentum. Prints the loss per epoch and the held-out accuracy.

    python examples/breast_cancer.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_utils import load

import graphc as gc


def main(epochs: int = 40, verbose: int = 1) -> dict:
    data = load("breast_cancer", seed=0)
    x = gc.input("x", ("N", 30))
    y = gc.input("y", ("N", 1))
    logit = gc.dense(gc.dense(x, 16, "tanh", name="hidden"), 1, name="out")
    loss = gc.binary_cross_entropy(logit, y)
    model = gc.compile(logit, loss, gc.SGD(lr=0.01, momentum=0.9), name="breast_cancer")
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, seed=0, verbose=verbose)
    result = model.evaluate(data.x_test, data.y_test)
    print(f"breast cancer: test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["accuracy"] >= 0.95 else 1)
