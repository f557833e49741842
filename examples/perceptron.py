"""A single perceptron (one sigmoid unit) learns a linearly separable problem (logical AND) but
not XOR; a hidden layer of 4 tanh units learns XOR.

    python examples/perceptron.py
"""

from __future__ import annotations

import sys

import numpy as np

import graphc as gc

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
AND = np.array([0, 0, 0, 1], dtype=np.float32)
XOR = np.array([0, 1, 1, 0], dtype=np.float32)


def train(hidden: int | None, targets: np.ndarray, epochs: int = 500) -> float:
    """Train on the four points (full batch) and return the accuracy of sigmoid(logit) > 0.5."""
    x = gc.input("x", ("N", 2))
    y = gc.input("y", ("N", 1))
    h = x if hidden is None else gc.dense(x, hidden, "tanh", name="hidden")
    logit = gc.perceptron(h, name="unit")
    model = gc.compile(
        logit, gc.binary_cross_entropy(logit, y), gc.Adam(lr=0.1), seed=1, name="perceptron"
    )
    model.fit(X, targets, epochs=epochs, batch_size=4, verbose=0)
    return model.evaluate(X, targets)["accuracy"]


def main() -> dict:
    results = {
        "perceptron AND": train(None, AND),
        "perceptron XOR": train(None, XOR),
        "hidden layer XOR": train(4, XOR),
    }
    for k, v in results.items():
        print(f"{k:18s} accuracy {v:.2f}")
    return results


if __name__ == "__main__":
    r = main()
    ok = r["perceptron AND"] == 1.0 and r["perceptron XOR"] < 1.0 and r["hidden layer XOR"] == 1.0
    sys.exit(0 if ok else 1)
