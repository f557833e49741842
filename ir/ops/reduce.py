"""Reductions: sum, mean, max and min over axes; argmax along one axis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Kind, Op, Reduce, normalize_axes, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


def _expand_back(b: Builder, node: Node, dy: str) -> str:
    """dy reshaped to keepdims form, then broadcast to the reduced operand's shape."""
    x = node.inputs[0]
    xt = b.type_of(x)
    axes = normalize_axes(node.op, node.attr("axes"), xt.rank)
    if not node.attr("keepdims", False) and axes:
        kept = tuple(1 if i in axes else d for i, d in enumerate(xt.shape))
        dy = b.reshape(dy, shape=kept)
    return b.broadcast_to(dy, x)


@register
class Sum(Reduce):
    """y = sum of x over ``axes``.   VJP: dx = broadcast of dy back to x's shape."""

    name = "sum"

    def reference(self, x, *, axes=None, keepdims=False):
        return np.sum(x, axis=normalize_axes("sum", axes, x.ndim), keepdims=keepdims)

    def grad(self, b: Builder, node: Node, dy: str):
        return (_expand_back(b, node, dy),)


@register
class Mean(Reduce):
    """y = mean of x over ``axes``.   VJP: dx = broadcast of dy back to x's shape / count."""

    name = "mean"

    def reference(self, x, *, axes=None, keepdims=False):
        return np.mean(x, axis=normalize_axes("mean", axes, x.ndim), keepdims=keepdims)

    def grad(self, b: Builder, node: Node, dy: str):
        count = b.size(node.inputs[0], axes=node.attr("axes"))
        return (b.div(_expand_back(b, node, dy), count),)


def _tie_split(b: Builder, node: Node, dy: str) -> str:
    """dx for max/min: dy goes to the elements equal to the result, split evenly among ties."""
    x = node.inputs[0]
    xt = b.type_of(x)
    axes = normalize_axes(node.op, node.attr("axes"), xt.rank)
    hit = b.equal(x, _expand_back(b, node, node.name))
    count = b.sum(hit, axes=axes, keepdims=True)
    return b.div(b.mul(_expand_back(b, node, dy), hit), count)


@register
class Max(Reduce):
    """y = max of x over ``axes`` (NaN if any is NaN).

    VJP: dx = dy * [x == y] / (number of elements equal to y): at a tie the gradient is split
    evenly among the maxima (as tf.reduce_max and torch.amax do).
    """

    name = "max"

    def reference(self, x, *, axes=None, keepdims=False):
        return np.max(x, axis=normalize_axes("max", axes, x.ndim), keepdims=keepdims)

    def grad(self, b: Builder, node: Node, dy: str):
        return (_tie_split(b, node, dy),)


@register
class Min(Reduce):
    """y = min of x over ``axes`` (NaN if any is NaN).

    VJP: dx = dy * [x == y] / (number of elements equal to y) (ties split evenly, as for max).
    """

    name = "min"

    def reference(self, x, *, axes=None, keepdims=False):
        return np.min(x, axis=normalize_axes("min", axes, x.ndim), keepdims=keepdims)

    def grad(self, b: Builder, node: Node, dy: str):
        return (_tie_split(b, node, dy),)


@register
class Argmax(Op):
    """y = the index (i32) of the largest element of x along ``axis`` (the first one at a tie;
    a NaN counts as the largest, as in numpy). For metrics; nondifferentiable."""

    name = "argmax"
    arity = 1
    kind = Kind.REDUCE
    kernel = "argmax"  # its own kernel: an index, not an accumulation
    nondifferentiable = True
    attrs: ClassVar[dict[str, Any]] = {"axis": -1, "keepdims": False}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (t,) = types
        same_float_dtype(self.name, types)
        axis = attrs.get("axis", self.attrs["axis"])
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ShapeError(f"argmax: axis must be one int, got {axis!r}")
        (a,) = normalize_axes(self.name, axis, t.rank)
        if t.rank == 0:
            raise ShapeError("argmax: expects an operand of rank >= 1, got a scalar")
        keep = bool(attrs.get("keepdims", False))
        shape = tuple(1 if i == a else d for i, d in enumerate(t.shape) if keep or i != a)
        return TensorType(shape, "i32")

    def reference(self, x, *, axis, keepdims):
        (a,) = normalize_axes("argmax", axis, x.ndim)
        return np.argmax(x, axis=a, keepdims=keepdims).astype(np.int32)
