"""Linear algebra: matmul (with transposed operands, for the VJPs) and transpose."""

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
class Matmul(Op):
    """C = op(A) @ op(B) for 2-D A, B, where op transposes when ``transpose_a``/``transpose_b``.

    Shapes: op(A) is [M,K], op(B) is [K,N2], C is [M,N2]. The transposes are read in place
    by the GEMM kernel, never materialized.
    VJP (for C = A B): dA = dC B^T, dB = A^T dC; the other three cases follow by transposing.
    """

    name = "matmul"
    arity = 2
    kind = Kind.MATMUL
    attrs = {"transpose_a": False, "transpose_b": False}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        a, b = types
        dt = same_float_dtype(self.name, types)
        if a.rank != 2 or b.rank != 2:
            raise ShapeError(f"matmul: expects 2-D operands, got {a} and {b}")
        m, ka = (a.shape[1], a.shape[0]) if attrs.get("transpose_a") else a.shape
        kb, n = (b.shape[1], b.shape[0]) if attrs.get("transpose_b") else b.shape
        if ka != kb:
            raise ShapeError(f"matmul: inner dimensions differ ({ka} vs {kb})")
        return TensorType((m, n), dt)

    def reference(self, a, b, *, transpose_a=False, transpose_b=False):
        return (a.T if transpose_a else a) @ (b.T if transpose_b else b)

    def grad(self, b: Builder, node: Node, dy: str):
        x, w = node.inputs
        ta, tb = bool(node.attr("transpose_a")), bool(node.attr("transpose_b"))
        if not ta and not tb:
            return (b.matmul(dy, w, transpose_b=True), b.matmul(x, dy, transpose_a=True))
        if not ta and tb:
            return (b.matmul(dy, w), b.matmul(dy, x, transpose_a=True))
        if ta and not tb:
            return (b.matmul(w, dy, transpose_b=True), b.matmul(x, dy))
        return (
            b.matmul(w, dy, transpose_a=True, transpose_b=True),
            b.matmul(dy, x, transpose_a=True, transpose_b=True),
        )

    def flops(self, node: Node, in_types: list[TensorType], n: int) -> int:
        a = in_types[0].concrete(n)
        k = a[0] if node.attr("transpose_a") else a[1]
        return 2 * node.type.size(n) * k


@register
class Transpose(Op):
    """y = x^T for 2-D x.   VJP: dx = dy^T."""

    name = "transpose"
    arity = 1
    kind = Kind.MOVEMENT
    kernel = "transpose"

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (x,) = types
        if x.rank != 2:
            raise ShapeError(f"transpose: expects a 2-D operand, got {x}")
        return TensorType((x.shape[1], x.shape[0]), x.dtype)

    def reference(self, x):
        return np.ascontiguousarray(x.T)

    def grad(self, b: Builder, node: Node, dy: str):
        return (b.transpose(dy),)
