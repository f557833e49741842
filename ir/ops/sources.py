"""Sources and constants: input (data placeholder), param (trainable), state (slot), const, size."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import REQUIRED, Kind, Op, normalize_axes, register


class Source(Op):
    """A value that enters the graph from outside; its type is given by the ``shape``/``dtype``
    recorded on the node itself (the builder passes the declared type)."""

    arity = 0
    kind = Kind.SOURCE
    nondifferentiable = True

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        raise ShapeError(f"{self.name}: a source node's type is declared, not inferred")


@register
class Input(Source):
    """A data placeholder (features, labels, learning rate, step counter). Attr ``index_rows``
    (an int V, or None): the input holds row indices into a table of V rows (an embedding
    lookup), whole numbers in -V .. V-1; every entry checks that before it runs. Attr
    ``index_low`` (an int, or None for -V): the smallest value let through instead of -V (an
    ONNX import's integer input whose computed indices stay in their table for values L .. H
    only, such as 1 .. V for ids - 1, has index_low L and index_rows H + 1). Attr
    ``index_note`` (a str, or None): why the range is that, added to the refusal's message
    (an ONNX import's lookup node whose computed indices the range keeps in their table);
    ``index_notes`` (a tuple of str, or None): the notes of several uses, which index_note
    lists (narrow_input).
    Attr ``index_nonzero`` (True or a str, or None): with ``index_rows``, 0 is refused too
    (the divisor of an ONNX import's integer Div or Mod, which ONNX leaves undefined at 0); a
    str says which node divides by it, added to the refusal's message (check_note). Attr
    ``index_nonzero_at`` (a tuple of (start, stop) pairs, or None: every position): the
    per-row element positions (row-major, runs of consecutive ones) where 0 is refused, those
    that reach a divisor (a Slice of the input leaves others out); the range is checked at
    every position (zero_runs). Attr ``index_table`` (a bool, or None: True): whether the checked values pick rows of a table
    (a lookup: the refusal says "no row of its lookup table") or only keep what is computed
    from them exact or in range (False: an ONNX import's integer input, sequence lengths)."""

    name = "input"
    attrs = {
        "index_rows": None,
        "index_low": None,
        "index_note": None,
        "index_notes": None,
        "index_nonzero": None,
        "index_nonzero_at": None,
        "index_table": None,
    }


def zero_runs(node: Any) -> tuple[tuple[int, int], ...] | None:
    """The runs (start, stop) of per-row element positions (row-major) in which input
    ``node``'s divisor check refuses 0 (its ``index_nonzero_at``); None: every position."""
    at = node.attr("index_nonzero_at")
    return None if at is None else tuple((int(a), int(b)) for a, b in at)


def check_note(node: Any) -> str:
    """What a refusal of input ``node``'s index or divisor check adds to its message: why 0 is
    refused (a str ``index_nonzero``) and why the range is what it is (``index_note``)."""
    parts = [node.attr("index_nonzero"), node.attr("index_note")]
    return "; ".join(p for p in parts if isinstance(p, str) and p)


def is_table(node: Any) -> bool:
    """Whether input ``node``'s checked values pick rows of a table: its ``index_table``, whose
    None (the declared default) reads as True."""
    return node.attr("index_table") is not False


def index_check(node: Any) -> tuple[str, int, int | None, str, bool]:
    """The check of input ``node``'s whole numbers (it has ``index_rows``), as the entries
    and Model._validate run it: (kind, "divisor" or "index"; rows; low, ``index_low``; the
    note of check_note; whether the values index a table, is_table)."""
    kind = "divisor" if node.attr("index_nonzero") else "index"
    rows = int(node.attr("index_rows"))
    return (
        kind,
        rows,
        node.attr("index_low"),
        check_note(node),
        is_table(node),
    )


def index_range(node: Any) -> tuple[int, int] | None:
    """The whole numbers (lo, hi), both included, that the entries let through for input
    ``node`` (its ``index_rows`` and ``index_low``), or None when its values are not checked
    as indices."""
    rows = node.attr("index_rows")
    if rows is None:
        return None
    low = node.attr("index_low")
    return (-int(rows) if low is None else int(low), int(rows) - 1)


def narrowed_range(node: Any, first: int, last: int, what: str) -> tuple[int, int]:
    """The whole numbers (lo, hi) input ``node`` may hold where a use lets through only
    ``first`` .. ``last``: that range cut to the one already checked (index_range).

    Raises:
        ShapeError: no value fits both (an earlier use limited ``node`` to a range outside
            first .. last); ``what`` names the values ("embedding: ids 'ids'").
    """
    r = index_range(node)
    if r is None:
        return first, last
    lo, hi = max(first, r[0]), min(last, r[1])
    if lo > hi:
        raise ShapeError(
            f"{what} must lie in {first} .. {last} here but are limited to {r[0]} .. {r[1]} "
            "elsewhere (no value fits both)"
        )
    return lo, hi


def narrow_input(node: Any, lo: int, hi: int, note: str, *, lookup: bool) -> Any:
    """Input ``node`` checked to hold whole numbers ``lo`` .. ``hi`` (from narrowed_range),
    with ``note`` (why, for the refusal) added: a second use's note is listed after the
    first's (the notes kept apart in ``index_notes``), followed by the range that applies to
    each (two embeddings, or two recurrent layers of other lengths, on one input).
    ``lookup``: the values pick rows of a table; if not, the input indexes a table only when
    a lookup checked it before (``index_table``)."""
    attrs = dict(node.attrs)
    old = node.attr("index_note")
    if old is None:
        attrs["index_note"] = note
    else:
        notes = node.attr("index_notes") or (old,)
        if note not in notes:
            notes = (*notes, note)
            joined = "; ".join(notes)
            attrs["index_note"] = f"{joined} (the narrower range, {lo} .. {hi}, applies to each)"
            attrs["index_notes"] = notes
    if not lookup:
        attrs["index_table"] = index_range(node) is not None and is_table(node)
    return node.with_(attrs={**attrs, "index_rows": hi + 1, "index_low": lo})


@register
class Param(Source):
    """A trainable parameter; attr ``init`` names its initializer (e.g. "glorot_uniform")."""

    name = "param"
    # trainable=False: never updated; l1, l2: weight penalties added to the loss
    attrs = {"init": None, "init_args": None, "trainable": None, "l1": None, "l2": None}


@register
class State(Source):
    """Persistent non-trainable state (optimizer slots, counters), updated through Graph.updates."""

    name = "state"
    attrs = {"init": None, "init_args": None, "slot_of": None}


@register
class Const(Op):
    """A scalar constant: ``const() {value=v, dtype} : f32[]``."""

    name = "const"
    arity = 0
    kind = Kind.SCALAR
    inline = True
    nondifferentiable = True
    attrs = {"value": REQUIRED, "dtype": "f32"}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        if not isinstance(attrs.get("value"), int | float) or isinstance(attrs.get("value"), bool):
            raise ShapeError(f"const: value must be a number, got {attrs.get('value')!r}")
        return TensorType((), attrs.get("dtype", "f32"))

    def reference(self, *xs: np.ndarray, **attrs: Any) -> np.ndarray:
        return np.array(attrs["value"])


@register
class Size(Op):
    """The number of elements of ``x`` along ``axes`` as a scalar (N resolved at run time).

    Used by mean's VJP; nondifferentiable.
    """

    name = "size"
    arity = 1
    kind = Kind.SCALAR
    inline = True
    nondifferentiable = True
    attrs = {"axes": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        normalize_axes(self.name, attrs.get("axes"), t.rank)
        return TensorType((), "f32" if t.dtype == "i32" else t.dtype)

    def reference(self, *xs: np.ndarray, axes: Any = None, **attrs: Any) -> np.ndarray:
        (x,) = xs
        axes = normalize_axes(self.name, axes, x.ndim)
        return np.array(float(np.prod([x.shape[a] for a in axes])))
