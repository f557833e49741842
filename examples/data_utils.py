"""Loading the example data sets (examples/data/*.csv): 80/20 split, standardized features.

Features are standardized with the training split's mean and standard deviation only, so no
information from the held-out rows leaks into training.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@dataclass
class Split:
    x_train: np.ndarray  # float32 [n_train, features], standardized
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    mean: np.ndarray
    std: np.ndarray


def read_csv(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features float64 [rows, cols], target [rows], feature names) of examples/data/NAME.csv[.gz]."""
    path = os.path.join(DATA_DIR, name)
    for candidate in (path, path + ".csv", path + ".csv.gz"):
        if os.path.isfile(candidate):
            path = candidate
            break
    else:
        raise FileNotFoundError(f"no data set {name!r} in {DATA_DIR}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        header = f.readline().strip().split(",")
        data = np.loadtxt(f, delimiter=",", ndmin=2)
    return data[:, :-1], data[:, -1], header[:-1]


def load(
    name: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    labels: str = "float",
    standardize: bool = True,
) -> Split:
    """Shuffle with ``seed``, split 80/20, standardize (unless ``standardize=False``: raw
    features, e.g. for a model that normalizes inside its graph with ``gc.Normalization``);
    ``labels``: "int" (class ids) or "float"."""
    x, y, names = read_csv(name)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = round(len(x) * (1 - test_fraction))
    mean = x[:cut].mean(axis=0)
    std = x[:cut].std(axis=0)
    std[std == 0] = 1.0
    x = ((x - mean) / std if standardize else x).astype(np.float32)
    y = y.astype(np.int32) if labels == "int" else y.astype(np.float32)
    return Split(x[:cut], y[:cut], x[cut:], y[cut:], names, mean, std)
