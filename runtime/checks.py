"""The messages of rejected input values: the row, the value and the rule it broke.

The native entries scan their inputs (codegen/checks.py) and return a code naming the input
slot; only then, on the error path, these functions look at the array again with numpy to
name the first bad row, so the call path stays free of O(n) Python work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, GraphcError, OptionTypeError

F32_MAX = float(np.finfo(np.float32).max)


class InputRejected(ArgumentError):
    """A native entry refused input ``name`` (slot ``slot``) before writing anything."""

    def __init__(self, message: str, slot: int = -1, name: str = "") -> None:
        super().__init__(message)
        self.slot, self.name = slot, name


def check_bool(value: object, option: str) -> bool:
    """``value`` as a bool when it is one (Python's True/False or a numpy bool).

    Boolean options are not read by truth value: ``return_dict="no"`` or ``shuffle=2`` is a
    mistake (a string is always truthy), so anything else is refused. A judgement: Keras
    and torch read such options by truth value, silently; graphc refuses instead, as Python's
    ``operator.index`` refuses what is no integer.

    Raises:
        OptionTypeError: (a TypeError and an ArgumentError) naming ``option`` and the value.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise OptionTypeError(
            f"{option} must be True or False, got {value!r} ({type(value).__name__})"
        )
    return bool(value)


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` when it is an int >= 1 (a bool is not; a numpy integer is).

    Raises:
        ArgumentError: anything else (None, a float, a string, 0, a negative number).
    """
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise ArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` when it is an int in ``[0, 2**64)`` (numpy's ``default_rng`` takes non-negative
    ints; graphc's seeds are 64-bit in the libraries it writes). A bool is not an int here.

    Raises:
        ArgumentError: anything else, naming ``what`` and the value.
    """
    ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_))
    if not ok or not 0 <= int(seed) < 2**64:  # type: ignore[call-overload]
        raise ArgumentError(f"{what} must be an int in [0, 2**64), got {seed!r}")
    return int(seed)  # type: ignore[call-overload]


def check_lr(lr: object) -> float:
    """``lr`` as a float when it is a real number, finite, >= 0 and at most float32's largest
    value (a float32 step takes the rate as float32: 1e39 became inf there, and the step's
    check then said a finite rate was not finite).

    Raises:
        ArgumentError: NaN, +-Inf, a negative value, a value above float32's range, or not a
            real number.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"the learning rate must be a real number, got {lr!r}")
    v = float(lr)
    if not math.isfinite(v) or v < 0:
        raise ArgumentError(
            f"the learning rate must be finite and >= 0, got {v!r}: nothing was changed"
        )
    if v > F32_MAX:
        raise ArgumentError(
            f"the learning rate {v!r} is beyond float32's range (largest {F32_MAX:.4g}), "
            "the type of a float32 step's rate: nothing was changed"
        )
    return v


def input_array(name: str, value: Any) -> np.ndarray:
    """``value`` (an array-like given for input ``name``) as a numpy array.

    Raises:
        ArgumentError: a masked array with masked elements (numpy's conversion keeps the
            values hidden under the mask, which the model read as data, silently), or data
            numpy cannot make one array of (rows of different lengths: ValueError escaped).
    """
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        raise ArgumentError(
            f"input {name!r} is a masked array with {int(np.ma.count_masked(value))} masked "
            "element(s): the model would read the values hidden under the mask; fill them "
            "(a.filled(value)) or drop their rows first"
        )
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise ArgumentError(
            f"input {name!r}: the data is not one array of numbers ({e}); rows of different "
            "lengths?"
        ) from None


def cast_input(name: str, a: np.ndarray, dtype: Any) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype`` (float32 or float64, the compiled input's
    dtype), the array itself when it already is one.

    A finite value that does not fit the narrower float (1e39 given in float64 to a float32
    input) is refused, as set_weights refuses it: numpy's cast makes it inf silently (a
    RuntimeWarning), so predict returned inf or NaN rows and training blamed "NaN or Inf" in
    data that held none. Values below the smallest subnormal round to 0, as any rounding.

    Raises:
        ArgumentError: naming the input, the first such row (index along the first axis),
            its value and the dtype's largest finite value.
    """
    want = np.dtype(dtype)
    if a.dtype.kind != "f" or want.kind != "f" or a.dtype.itemsize <= want.itemsize:
        return np.asarray(a, dtype=want, order="C")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(a, dtype=want, order="C")
    inf = np.isinf(out)
    if inf.any():
        over = inf & np.isfinite(a)
        if over.any():
            at = tuple(int(i) for i in np.argwhere(over)[0])
            raise ArgumentError(
                f"input {name!r}: row {at[0] if at else 0} holds {float(a[at])!r}, beyond "
                f"{want.name}'s range (largest {np.finfo(want).max:.4g}): the input is "
                f"{want.name}, so the cast would make it inf ({int(over.sum())} such "
                "value(s)); scale the data or compile the model in float64"
            )
    return out


def check_count(value: object, option: str, low: int = 0) -> int:
    """``value`` as an int when it is a whole number >= ``low`` (a numpy integer too; a bool,
    a float such as 2.7 or a string is not): a callback's patience, cooldown or epoch count.

    Raises:
        OptionTypeError: not an int, naming ``option`` and the value.
        GraphcError: below ``low``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise OptionTypeError(
            f"{option} must be an int >= {low}, got {value!r} ({type(value).__name__})"
        )
    if value < low:
        raise GraphcError(f"{option} must be an int >= {low}, got {value!r}")
    return int(value)


def check_real(
    value: object, option: str, low: float | None = None, *, open_low: bool = False
) -> float:
    """``value`` as a float when it is a finite real number (a numpy scalar too; not a bool,
    a string or None) and at least ``low`` (above it with ``open_low``): a callback's
    min_delta, factor, threshold or min_lr. NaN is refused: every comparison with it is
    false, so a NaN min_delta made every epoch "not better" and stopped training silently.

    Raises:
        OptionTypeError: not a real number, naming ``option`` and the value.
        GraphcError: not finite, or below (at) ``low``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise OptionTypeError(f"{option} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or (low is not None and (v <= low if open_low else v < low)):
        bound = "" if low is None else f" {'>' if open_low else '>='} {low:g}"
        raise GraphcError(f"{option} must be a finite number{bound}, got {value!r}")
    return v


def label_error(
    name: str, a: np.ndarray, classes: int, low: int = 0, skip: int | None = None
) -> ArgumentError | None:
    """The error for labels ``a`` [N] or [N, ..] (a sequence's, one per position) outside
    low..classes-1 and other than ``skip`` (a loss's ignore_index; None: none): the first bad
    row, its position within the row when ``a`` has more than one axis, the value, and how
    many rows hold one; None when every label is in range."""
    a = np.asarray(a)
    bad = (a < low) | (a >= classes)
    if skip is not None:
        bad &= a != skip
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    rows = bad.reshape(len(bad), -1).any(axis=1) if bad.ndim > 1 else bad
    several = a.ndim > 1 and a[0].size > 1  # a position within the row (not of [N, 1])
    at = f"row {first[0]}" + (f", position {list(first[1:])}," if several else "")
    return ArgumentError(
        f"labels {name!r}: {at} has class {a[first]}, outside {low}..{classes - 1}"
        + ("" if skip is None else f" and not the ignore_index {skip}")
        + f" ({int(rows.sum())} such rows)"
    )


def nonfinite_error(name: str, a: np.ndarray, hint: str = "") -> ArgumentError | None:
    """The error for rows holding NaN or Inf (first bad row, how many), or None."""
    finite = np.isfinite(a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)).all(axis=1)
    if finite.all():
        return None
    row = int(np.flatnonzero(~finite)[0])
    return ArgumentError(
        f"input {name!r}: row {row} holds NaN or Inf ({int((~finite).sum())} rows); "
        f"clean the data{hint}"
    )


def unit_error(name: str, a: np.ndarray) -> ArgumentError | None:
    """The error for binary cross-entropy targets outside [0, 1], or None."""
    outside = ((a < 0) | (a > 1)).reshape(a.shape[0], -1).any(axis=1)
    if not outside.any():
        return None
    row = int(np.flatnonzero(outside)[0])
    return ArgumentError(
        f"targets {name!r}: row {row} holds {a[row].ravel()[:4].tolist()}, outside [0, 1] "
        f"({int(outside.sum())} rows); binary_cross_entropy takes 0/1 labels or probabilities"
    )


def row_indices_valid(
    v: np.ndarray, rows: int, low: int | None = None, nonzero: Any = False
) -> np.ndarray:
    """Elementwise: ``v`` (float64) is a whole number in low..rows-1, low = -rows unless given
    (NaN is not), and with ``nonzero`` not 0: the row indices an embedding lookup into a table
    of ``rows`` rows takes, or an integer input's range (codegen/checks.py's native "index"
    check; "divisor" with ``nonzero``: True, or a bool mask over v's last axis, the positions
    where 0 is refused, zero_mask)."""
    with np.errstate(invalid="ignore"):
        ok = (v >= (-rows if low is None else low)) & (v < rows) & (np.trunc(v) == v)
    if nonzero is False:
        return ok
    return ok & ((v != 0) | np.logical_not(nonzero))


def zero_mask(runs: Any, width: int) -> Any:
    """A divisor check's positions where 0 is refused, as row_indices_valid's ``nonzero``: True
    for every position (``runs`` None), else a bool mask of ``width`` per-row positions set in
    the runs (start, stop) (ir.ops.sources.zero_runs)."""
    if runs is None:
        return True
    mask = np.zeros(width, bool)
    for a, b in runs:
        mask[int(a) : int(b)] = True
    return mask


def index_error(
    name: str,
    a: np.ndarray,
    rows: int,
    note: str = "",
    low: int | None = None,
    nonzero: bool = False,
    table: bool = True,
    zero_at: Any = None,
) -> ArgumentError | None:
    """The error for row indices of an embedding lookup into a table of ``rows`` rows that are
    no whole number in low..rows-1 (low = -rows unless given; NaN included), with ``nonzero``
    for a divisor holding such a value or 0, or None; ``table`` False: the values pick no
    rows, their range only keeps what is computed from them exact (an ONNX import's integer
    input) or in range (sequence lengths); ``zero_at``: the runs of per-row positions where a
    divisor's 0 is refused (None: all, zero_mask)."""
    v = np.asarray(a, dtype=np.float64)
    flat = v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1)
    ok = row_indices_valid(flat, rows, low, nonzero and zero_mask(zero_at, flat.shape[1]))
    bad = ~ok.all(axis=1)
    if not bad.any():
        return None
    row = int(np.flatnonzero(bad)[0])
    value = np.asarray(a).reshape(flat.shape)[row][~ok[row]][0].item()
    span = f"{-rows if low is None else low}..{rows - 1}"
    held = f"{name!r}: row {row} holds {value!r}"
    if nonzero:  # (the reason for 0 said only where the value is 0)
        why = "an integer division by zero is undefined; " if value == 0 else ""
        head = f"divisor {held}, outside the whole numbers {span} other than 0 ({why}"
    elif table:
        head = f"indices {held}, which is no row of its lookup table (whole numbers in {span}; "
    else:
        head = f"input {held}, outside the whole numbers {span} it is checked to hold ("
    return ArgumentError(f"{head}{int(bad.sum())} such rows)" + (f"; {note}" if note else ""))


def explain(
    kind: str,
    name: str,
    a: np.ndarray,
    bound: int = 0,
    hint: str = "",
    low: int | None = None,
    table: bool = True,
    zero_at: Any = None,
) -> ArgumentError:
    """The error naming the first row of ``a`` that fails check ``kind`` (codegen/checks.py;
    ``low``: an index check's smallest value when not -bound; a classes check's ignore_index;
    ``zero_at``: a divisor check's runs of positions where 0 is refused, None: all)."""
    err: ArgumentError | None
    if kind == "lr":
        err = ArgumentError(
            f"the learning rate must be finite and >= 0, got {float(a)!r}: nothing was changed"
        )
    elif kind == "classes":  # low: the ignore_index let through, if any
        err = label_error(name, a, bound, 0, low)
    elif kind == "unit":
        err = nonfinite_error(name, a, hint) or unit_error(name, a)
    elif kind in ("index", "divisor"):
        err = index_error(name, a, bound, hint, low, kind == "divisor", table, zero_at)
    else:
        err = nonfinite_error(name, a, hint)
    return err or ArgumentError(f"input {name!r} was rejected by the native check ({kind})")


def param_value(who: str, params: dict[str, np.ndarray], name: Any, value: Any) -> np.ndarray:
    """``value`` as parameter (or state) ``name``'s new array (its shape and dtype), checked, not
    copied in: Model.set_weights and Library.set_weights.

    Raises:
        ArgumentError: unknown name, another shape, a value that is not numeric or not of a kind
            the dtype holds (numpy's "same_kind" casting), or finite values that overflow it.
    """
    if name not in params:
        raise ArgumentError(
            f"{who}: the model has no parameter {name!r} (it has {', '.join(params)})"
        )
    want = params[name]
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise ArgumentError(f"{who}: {name}: not an array of numbers ({e})") from None
    if a.shape != want.shape:
        raise ArgumentError(f"{who}: {name} expects shape {want.shape}, got {a.shape}")
    if a.dtype.kind not in "biuf" or not np.can_cast(a.dtype, want.dtype, "same_kind"):
        raise ArgumentError(
            f"{who}: {name} is {want.dtype}; got values of dtype {a.dtype}, which do not "
            f"convert to it without changing their kind"
        )
    if want.dtype.kind in "iu" and a.dtype.kind in "iu" and a.size:
        lo, hi = np.iinfo(want.dtype).min, np.iinfo(want.dtype).max
        if int(a.min()) < lo or int(a.max()) > hi:
            raise ArgumentError(f"{who}: {name} holds values outside {want.dtype}'s [{lo}, {hi}]")
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(want.dtype)
    if out.dtype.kind == "f" and a.dtype.kind == "f":
        over = np.isfinite(a) & ~np.isfinite(out)
        if over.any():
            at = tuple(int(i) for i in np.argwhere(over)[0])
            raise ArgumentError(
                f"{who}: {name}{list(at)} = {a[at]!r} does not fit in {want.dtype} "
                f"(largest {np.finfo(want.dtype).max:.4g})"
            )
    return out
