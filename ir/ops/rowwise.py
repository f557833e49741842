"""Row-wise ops beyond softmax: log_softmax (one pass over each row of a 2-D operand)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


@register
class LogSoftmax(Op):
    """y = x - max(x) - log(sum(exp(x - max(x)))) over the last axis of a 2-D x (stable form:
    never overflows, and stays finite where softmax underflows to 0).

    VJP: dx = dy - exp(y) * sum(dy, last axis).
    """

    name = "log_softmax"
    arity = 1
    kind = Kind.ROWWISE

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (x,) = types
        same_float_dtype(self.name, types)
        if x.rank != 2:
            raise ShapeError(f"log_softmax: expects a 2-D operand [batch, classes], got {x}")
        return x

    def reference(self, x):
        s = x - np.max(x, axis=-1, keepdims=True)
        return s - np.log(np.sum(np.exp(s), axis=-1, keepdims=True))

    def grad(self, b: Builder, node: Node, dy: str):
        s = b.sum(dy, axes=(1,), keepdims=True)
        return (b.sub(dy, b.mul(b.exp(node.name), s)),)
