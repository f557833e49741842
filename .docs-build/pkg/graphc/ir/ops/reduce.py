"""Reductions: sum and mean over axes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Reduce, normalize_axes, register

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
