"""Movement ops with static bounds: slice, pad (zeros; slice's VJP), concat and reverse.

None of them may cut, pad or join along the batch axis N (its length is known only at run
time); every other bound is a compile-time int.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ShapeError
from ..types import BATCH, TensorType
from .base import REQUIRED, Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


def _ints(op: str, key: str, v: Any, count: int | None = None) -> tuple[int, ...]:
    v = (v,) if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(v, tuple | list) or any(
        not isinstance(i, int) or isinstance(i, bool) for i in v
    ):
        raise ShapeError(f"{op}: attr {key} must be a tuple of ints, got {v!r}")
    if count is not None and len(v) != count:
        raise ShapeError(f"{op}: attr {key} has {len(v)} entries, axes has {count}")
    return tuple(v)


def _static_axes(op: str, t: TensorType, axes: Any) -> tuple[int, ...]:
    """``axes`` normalized (negative counts from the end), none of them the batch axis."""
    out = []
    for a in _ints(op, "axes", axes):
        if not -t.rank <= a < t.rank:
            raise ShapeError(f"{op}: axis {a} is out of range for {t}")
        a %= t.rank
        if t.shape[a] == BATCH:
            raise ShapeError(f"{op}: cannot work along the batch axis {a} of {t} (length N)")
        out.append(a)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return tuple(out)


def slice_bounds(t: TensorType, attrs: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """Axis -> (start, stop) of a slice of ``t``: Python's rules for negative and out-of-range
    bounds (counted from the end, then clamped to [0, length]), step 1.

    Raises:
        ShapeError: bad attrs, the batch axis, or an empty result.
    """
    axes = _static_axes("slice", t, attrs.get("axes"))
    starts = _ints("slice", "starts", attrs.get("starts"), len(axes))
    ends = _ints("slice", "ends", attrs.get("ends"), len(axes))
    out = {}
    for a, s, e in zip(axes, starts, ends):
        lo, hi, _ = slice(s, e).indices(int(t.shape[a]))
        if hi <= lo:
            raise ShapeError(f"slice: [{s}:{e}] of axis {a} of {t} is empty")
        out[a] = (lo, hi)
    return out


@register
class Slice(Op):
    """y = x[..., starts[k]:ends[k], ...] along each of ``axes`` (static bounds, step 1; Python's
    rules for negative and too-large bounds).   VJP: dx = pad(dy) with zeros back to x's shape."""

    name = "slice"
    arity = 1
    kind = Kind.MOVEMENT
    attrs: ClassVar[dict[str, Any]] = {"axes": REQUIRED, "starts": REQUIRED, "ends": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        same_float_dtype(self.name, types)
        b = slice_bounds(t, attrs)
        shape = tuple((b[a][1] - b[a][0]) if a in b else d for a, d in enumerate(t.shape))
        return TensorType(shape, t.dtype)

    def reference(self, x, *, axes, starts, ends):
        idx = [slice(None)] * x.ndim
        for a, s, e in zip(axes, starts, ends):
            idx[a % x.ndim] = slice(s, e)
        return x[tuple(idx)].copy()

    def grad(self, b: Builder, node: Node, dy: str):
        xt = b.type_of(node.inputs[0])
        bounds = slice_bounds(xt, dict(node.attrs))
        axes = tuple(sorted(bounds))
        before = tuple(bounds[a][0] for a in axes)
        after = tuple(int(xt.shape[a]) - bounds[a][1] for a in axes)
        return (b.pad(dy, axes=axes, before=before, after=after),)


@register
class Pad(Op):
    """y = x with ``before[k]`` zeros in front and ``after[k]`` zeros behind along ``axes[k]``.

    VJP: dx = slice of dy (the inner block).
    """

    name = "pad"
    arity = 1
    kind = Kind.MOVEMENT
    attrs: ClassVar[dict[str, Any]] = {"axes": REQUIRED, "before": REQUIRED, "after": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        same_float_dtype(self.name, types)
        axes = _static_axes(self.name, t, attrs.get("axes"))
        before = _ints(self.name, "before", attrs.get("before"), len(axes))
        after = _ints(self.name, "after", attrs.get("after"), len(axes))
        if any(v < 0 for v in before + after):
            raise ShapeError(f"pad: widths must be >= 0, got before={before} after={after}")
        add = {a: lo + hi for a, lo, hi in zip(axes, before, after)}
        return TensorType(
            tuple(int(d) + add[a] if a in add else d for a, d in enumerate(t.shape)), t.dtype
        )

    def reference(self, x, *, axes, before, after):
        widths = [(0, 0)] * x.ndim
        for a, lo, hi in zip(axes, before, after):
            widths[a % x.ndim] = (lo, hi)
        return np.pad(x, widths)

    def grad(self, b: Builder, node: Node, dy: str):
        axes = tuple(self.attr(node, "axes"))
        xt = b.type_of(node.inputs[0])
        before = tuple(self.attr(node, "before"))
        ends = tuple(lo + int(xt.shape[a % xt.rank]) for a, lo in zip(axes, before))
        return (b.slice(dy, axes=axes, starts=before, ends=ends),)


@register
class Concat(Op):
    """y = the operands joined along ``axis`` (all other dimensions equal; not the batch axis).

    VJP: each operand's gradient is its slice of dy.
    """

    name = "concat"
    arity = None
    kind = Kind.MOVEMENT
    attrs: ClassVar[dict[str, Any]] = {"axis": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        if not types:
            raise ShapeError("concat: expects at least one operand")
        same_float_dtype(self.name, types)
        t0 = types[0]
        (a,) = _static_axes(self.name, t0, attrs.get("axis"))
        for t in types[1:]:
            if t.rank != t0.rank or any(
                d != e for k, (d, e) in enumerate(zip(t.shape, t0.shape)) if k != a
            ):
                raise ShapeError(f"concat: operands must match except along axis {a}: {t0} vs {t}")
            if t.shape[a] == BATCH:
                raise ShapeError(f"concat: cannot join along the batch axis {a} of {t}")
        total = sum(int(t.shape[a]) for t in types)
        return TensorType(tuple(total if k == a else d for k, d in enumerate(t0.shape)), t0.dtype)

    def reference(self, *xs, axis):
        return np.concatenate(xs, axis=axis)

    def grad(self, b: Builder, node: Node, dy: str):
        types = [b.type_of(i) for i in node.inputs]
        a = self.attr(node, "axis") % types[0].rank
        out, start = [], 0
        for t in types:
            stop = start + int(t.shape[a])
            out.append(b.slice(dy, axes=(a,), starts=(start,), ends=(stop,)))
            start = stop
        return tuple(out)


@register
class Reverse(Op):
    """y = x with the order of its elements reversed along each of ``axes`` (numpy's
    ``np.flip(x, axes)``; ONNX's Slice with step -1 over a whole axis, torch's ``flip``).
    Not along the batch axis N. Exact: values are moved, never computed.

    VJP: dx = reverse(dy) along the same axes.
    """

    name = "reverse"
    arity = 1
    kind = Kind.MOVEMENT
    attrs: ClassVar[dict[str, Any]] = {"axes": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        same_float_dtype(self.name, types)
        _static_axes(self.name, t, attrs.get("axes"))
        return t

    def reference(self, x, *, axes):
        return np.flip(x, tuple(a % x.ndim for a in axes)).copy()

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.reverse(dy, axes=tuple(self.attr(node, "axes"))),)


def permutation(t: TensorType, perm: Any) -> tuple[int, ...]:
    """``perm`` checked as a permutation of ``t``'s axes (non-negative ints) that keeps the
    batch axis N where it is.

    Raises:
        ShapeError: not a tuple of ints, not a permutation of 0 .. rank-1, or N moved.
    """
    p = _ints("permute", "perm", perm)
    if sorted(p) != list(range(t.rank)):
        raise ShapeError(f"permute: perm={list(p)} is not a permutation of the axes of {t}")
    if BATCH in t.shape and p[t.shape.index(BATCH)] != t.shape.index(BATCH):
        raise ShapeError(f"permute: perm={list(p)} moves the batch axis N of {t}")
    return p


@register
class Permute(Op):
    """y = np.transpose(x, perm): axis i of y is axis ``perm[i]`` of x (ONNX's Transpose,
    torch's permute), any rank, the batch axis N kept where it is (so a row stays a row).
    Exact: values are moved, never computed; one strided copy (codegen.movement).

    VJP: dx = permute(dy) by the inverse permutation (axis perm[i] of dx is axis i of dy).
    """

    name = "permute"
    arity = 1
    kind = Kind.MOVEMENT
    attrs: ClassVar[dict[str, Any]] = {"perm": REQUIRED}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        same_float_dtype(self.name, types)
        p = permutation(t, attrs.get("perm"))
        return TensorType(tuple(t.shape[a] for a in p), t.dtype)

    def reference(self, x, *, perm):
        return np.ascontiguousarray(np.transpose(x, tuple(perm)))

    def grad(self, b: Builder, node: Node, dy: str):
        perm = list(self.attr(node, "perm"))
        inverse = tuple(perm.index(i) for i in range(len(perm)))
        return (b.permute(dy, perm=inverse),)
