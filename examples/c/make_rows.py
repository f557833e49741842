"""Write the C examples' input files from examples/data/digits.csv.gz (raw pixel values 0..16):

    digits_rows.txt    the test split: 64 numbers per line (input of ./predict)
    digits_train.txt   the training split: 64 numbers, then the class label, per line (./train)

The split is examples/digits.py's (seed 0, 80/20). Run by `make rows`.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from data_utils import load  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=HERE, help="folder of the two files (examples/c)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = load("digits", seed=args.seed, labels="int", standardize=False)
    rows = os.path.join(args.out, "digits_rows.txt")
    train = os.path.join(args.out, "digits_train.txt")
    np.savetxt(rows, data.x_test, fmt="%g")
    np.savetxt(train, np.hstack([data.x_train, data.y_train[:, None]]), fmt="%g")
    print(f"wrote {rows} ({len(data.x_test)} rows) and {train} ({len(data.x_train)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
