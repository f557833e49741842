"""Linear algebra: matmul (with transposed operands, for the VJPs) and transpose."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


def matmul_dims(a: tuple, out: tuple, ta: bool) -> tuple[tuple, tuple, tuple]:
    """The GEMM's M, N and K of a matmul with operand A of shape ``a`` and result ``out``, as
    tuples of dimensions (ints, "N") whose products they are: an operand of rank > 2 is the
    matrix of its leading axes' rows (row-major), so M of [N, T, C] @ [C, U] is N*T (one GEMM),
    and K of its dB = A^T dY (``ta``) is N*T too."""
    return tuple(out[:-1]), (out[-1],), tuple(a[:-1]) if ta else (a[-1],)


@register
class Matmul(Op):
    """C = op(A) @ op(B), where op transposes when ``transpose_a``/``transpose_b``.

    Shapes: op(A) is [M,K], op(B) is [K,N2], C is [M,N2]. The transposes are read in place
    by the GEMM kernel, never materialized. An operand of rank > 2 is the matrix of its rows:
    A [d1, ..., dr, K] (row-major) is [d1*...*dr, K], with N among the d's or not, so that
    A [N, T, C] @ B [C, U] = C [N, T, U] is ONE GEMM with M = N*T rows (a dense on a
    sequence). Forms of rank > 2: A [.., K] @ B [K, N2] or A [.., K] @ B^T (B [N2, K]) giving
    [.., N2]; A^T @ B with A [.., M] and B [.., N2] of the same leading axes giving [M, N2]
    (a sum over all the rows: the weight's gradient, K = N*T).
    VJP (for C = A B): dA = dC B^T, dB = A^T dC; the other three cases follow by transposing;
    each form's VJPs are of these forms again.
    """

    name = "matmul"
    arity = 2
    kind = Kind.MATMUL
    attrs = {"transpose_a": False, "transpose_b": False}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        a, b = types
        dt = same_float_dtype(self.name, types)
        ta, tb = bool(attrs.get("transpose_a")), bool(attrs.get("transpose_b"))
        if a.rank < 2 or b.rank < 2:
            raise ShapeError(f"matmul: expects operands of rank >= 2, got {a} and {b}")
        kb, n = (b.shape[1], b.shape[0]) if tb else b.shape[:2]  # op(B) [K, N2] where B is 2-D
        if a.rank == 2 and b.rank == 2:
            m, ka = (a.shape[1], a.shape[0]) if ta else a.shape
            if ka != kb:
                raise ShapeError(f"matmul: inner dimensions differ ({ka} vs {kb})")
            return TensorType((m, n), dt)
        if not ta and b.rank == 2:  # rows [.., K] times a matrix
            if a.shape[-1] != kb:
                raise ShapeError(
                    f"matmul: inner dimensions differ ({a.shape[-1]} vs {kb}): {a} @ {b}"
                )
            return TensorType((*a.shape[:-1], n), dt)
        if ta and not tb and a.shape[:-1] == b.shape[:-1]:  # A^T B summed over all rows
            return TensorType((a.shape[-1], b.shape[-1]), dt)
        raise ShapeError(
            f"matmul: operands of rank > 2 must be rows [.., K] times a 2-D [K, P], or A^T B "
            f"with the same leading axes; got {a} and {b} (transpose_a={ta}, transpose_b={tb})"
        )

    def reference(self, a, b, *, transpose_a=False, transpose_b=False):
        a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        c = (a2.T if transpose_a else a2) @ (b2.T if transpose_b else b2)
        return c if transpose_a or a.ndim == 2 else c.reshape(*a.shape[:-1], c.shape[-1])

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
        k = math.prod(a[:-1]) if node.attr("transpose_a") else a[-1]
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
