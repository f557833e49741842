"""Weight initializers, seeded: zeros, constant, uniform, normal, Glorot/Xavier and He/Kaiming.

Formulas (fan_in, fan_out = shape[0], shape[1] for a [in, out] weight; a vector has fan_in =
fan_out = its length; a convolution's filters [out, in/groups, K1, ...] have fan_in =
shape[1] * prod(K), fan_out = shape[0] * prod(K), as torch.nn.init computes them):
    glorot_uniform  U(-a, a), a = sqrt(6 / (fan_in + fan_out))      Glorot & Bengio (2010)
    glorot_normal   N(0, 2 / (fan_in + fan_out))                    Glorot & Bengio (2010)
    he_uniform      U(-a, a), a = sqrt(6 / fan_in)                  He et al. (2015)
    he_normal       N(0, 2 / fan_in)                                He et al. (2015)
    orthogonal      Q of the QR factorization of a N(0, 1) draw, its columns' signs set
                    by sign(diag(R)) (Saxe et al. 2014; Keras's Orthogonal, gain 1): each
                    trailing [rows, cols] matrix has orthonormal columns (rows >= cols) or
                    rows (rows < cols); a leading axis (one matrix per recurrent direction)
                    draws one such matrix per index; a vector is drawn as one row
These match torch.nn.init's xavier_*/kaiming_* (gain 1 and sqrt(2), respectively; normal, not
truncated normal).

``array`` marks a source whose values the program brings (``Program.constants``): a
``gc.constant``, an imported ONNX model's weights, a model file's constants. The graph holds
no values, so graph hashes and compile caches stay small; ``initialize`` refuses to draw it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import GraphcError

INITIALIZERS = (
    "zeros",
    "ones",
    "constant",
    "uniform",
    "normal",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "orthogonal",
)
# Not for users' params: "array" marks a source whose values come with the program
# (Program.constants: gc.constant, ONNX weights, model files), never a draw.
INTERNAL_INITIALIZERS = ("array",)
_ARGS = {
    "constant": {"value"},
    "uniform": {"low", "high"},
    "normal": {"mean", "std"},
}


def check_initializer(name: str, args: dict[str, Any], dtype: Any = None) -> None:
    """Raises GraphcError for an unknown initializer, an argument it does not take, or a bad
    argument value: not a finite real number (a bool, a string: numpy's ValueError came
    later; value=inf filled a param with inf), std < 0, or low > high; with ``dtype`` (the
    parameter's numpy float dtype), a value, bound or mean beyond its range (value=1e39 in
    float32 filled the param with inf as value=inf did)."""
    if name not in INITIALIZERS and name not in INTERNAL_INITIALIZERS:
        raise GraphcError(f"unknown initializer {name!r}; choose one of {', '.join(INITIALIZERS)}")
    extra = set(args) - _ARGS.get(name, set()) - {"zero_row"}
    if extra:
        raise GraphcError(f"initializer {name!r} takes no argument(s) {sorted(extra)}")
    for k, v in args.items():
        if (
            isinstance(v, bool | np.bool_)
            or not isinstance(v, numbers.Real)
            or not math.isfinite(v)
        ):
            raise GraphcError(f"initializer {name!r}: {k} must be a finite number, got {v!r}")
    big = float(np.finfo(dtype).max) if dtype is not None and np.dtype(dtype).kind == "f" else None
    for k in ("value", "low", "high", "mean"):
        if big is not None and k in args and abs(args[k]) > big:
            raise GraphcError(
                f"initializer {name!r}: {k} {args[k]!r} is beyond {np.dtype(dtype).name}'s "
                f"range (largest {big:.4g}): the parameter would hold inf"
            )
    row = args.get("zero_row", 0)
    if row < 0 or row != int(row):
        raise GraphcError(
            f"initializer {name!r}: zero_row must be a whole number >= 0, got {row!r}"
        )
    if args.get("std", 0.0) < 0:
        raise GraphcError(f"initializer {name!r}: std must be >= 0, got {args['std']!r}")
    if name == "uniform" and args.get("low", -0.05) > args.get("high", 0.05):
        raise GraphcError(
            f"initializer 'uniform': low {args.get('low', -0.05)!r} is above "
            f"high {args.get('high', 0.05)!r}"
        )


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))  # conv filters [out, in/groups, K1, ...]
    return shape[1] * receptive, shape[0] * receptive


def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One orthogonal [rows, cols] matrix per index of the leading axes (see the module
    docstring): QR of the taller orientation of a N(0, 1) draw, Q's columns' signs fixed by
    R's diagonal so that Q is uniform over the orthogonal matrices (Mezzadri 2007)."""
    if len(shape) == 0:
        return np.ones(())
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape[-2:]
    lead = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    mats = []
    for _ in range(lead):
        a = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
        mats.append(q if rows >= cols else q.T)
    return np.stack(mats).reshape(shape)


def initialize(
    name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, **args: float
) -> np.ndarray:
    """An array of ``shape`` drawn by initializer ``name`` from ``rng`` (float64 math, cast).
    ``zero_row=r`` (any initializer) then sets row r (along the first axis) to 0: torch's
    Embedding(padding_idx=r) starts its padding row at zeros. Raises GraphcError: a bad
    initializer or argument (check_initializer), r outside the first axis, or a draw beyond
    ``dtype``'s range."""
    check_initializer(name, args, dtype)
    row = args.pop("zero_row", None)
    if row is not None and not (len(shape) and int(row) < shape[0]):
        raise GraphcError(f"initializer {name!r}: zero_row {row!r} is outside shape {shape}")
    fan_in, fan_out = fans(shape)
    if name == "zeros":
        out = np.zeros(shape)
    elif name == "ones":
        out = np.ones(shape)
    elif name == "constant":
        out = np.full(shape, args.get("value", 0.0))
    elif name == "uniform":
        out = rng.uniform(args.get("low", -0.05), args.get("high", 0.05), shape)
    elif name == "normal":
        out = rng.normal(args.get("mean", 0.0), args.get("std", 0.05), shape)
    elif name == "glorot_uniform":
        a = math.sqrt(6.0 / (fan_in + fan_out))
        out = rng.uniform(-a, a, shape)
    elif name == "glorot_normal":
        out = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif name == "array":
        raise GraphcError(
            "initializer 'array': the values of this constant come with the program "
            "(Program.constants) and are missing; rebuild it from the model file or the ONNX file"
        )
    elif name == "he_uniform":
        a = math.sqrt(6.0 / fan_in)
        out = rng.uniform(-a, a, shape)
    elif name == "orthogonal":
        out = _orthogonal(shape, rng)
    else:  # he_normal
        out = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    if row is not None:
        out = np.array(out)
        out[int(row)] = 0.0
    with np.errstate(over="ignore"):
        res = np.asarray(out, dtype=dtype)
    if not np.all(np.isfinite(res)):  # a normal draw with a huge std: inf in the parameter
        raise GraphcError(
            f"initializer {name!r} drew values beyond {np.dtype(dtype).name}'s range "
            f"({', '.join(f'{k}={v!r}' for k, v in sorted(args.items()))}): the parameter "
            "would hold inf"
        )
    return res
