"""Linear algebra: matmul (with transposed operands, for the VJPs), transpose, and the
batched product of stacks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import BATCH, TensorType
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


def batched_dims(a: TensorType, b: TensorType, ta: bool, tb: bool) -> tuple[tuple, Any, Any, Any]:
    """(leading shape, M, K, P) of the batched product op(a) @ op(b): numpy's matmul of
    [.., M, K] and [.., K, P] (op swaps the last two axes when its flag is set), the leading
    axes broadcast as numpy's, N leading one or both operands (or neither) and never among
    the matrices' axes.

    Raises:
        ShapeError: a rank below 2, inner dimensions that differ, N among the last two axes
            or not leading, leading axes that do not broadcast.
    """
    what = f"batched_matmul of {a} and {b} (transpose_a={ta}, transpose_b={tb})"
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"{what}: operands of rank >= 2 are multiplied")
    k, m = a.shape[-2:] if ta else a.shape[-2:][::-1]
    kb, p = b.shape[-2:][::-1] if tb else b.shape[-2:]
    if BATCH in (m, k, kb, p):
        raise ShapeError(f"{what}: the batch dimension N is among the matrices' axes")
    if k != kb:
        raise ShapeError(f"{what}: inner dimensions differ ({k} vs {kb})")
    r = max(a.rank, b.rank)
    lead_a = (1,) * (r - a.rank) + tuple(a.shape[:-2])
    lead_b = (1,) * (r - b.rank) + tuple(b.shape[:-2])
    lead = []
    for i, (da, db) in enumerate(zip(lead_a, lead_b, strict=True)):
        if BATCH in (da, db) and (i > 0 or (1 not in (da, db) and da != db)):
            raise ShapeError(f"{what}: N must lead the operands, against N or nothing")
        if da != db and 1 not in (da, db):
            raise ShapeError(f"{what}: leading axes {da} and {db} do not broadcast")
        lead.append(db if da == 1 else da)
    return tuple(lead), m, k, p


@register
class BatchedMatmul(Op):
    """C = op(A) @ op(B) per position of the leading axes (numpy's and torch's matmul of
    stacks): op(A) [.., M, K], op(B) [.., K, P], C [.., M, P]; op swaps an operand's last two
    axes when ``transpose_a`` / ``transpose_b`` is set (read in place); the leading axes
    broadcast as numpy's, the batch axis N leading one or both operands. Attention's scores
    q @ k^T and weights @ v. A loop nest of its own (codegen.kernels.emit_batched_matmul):
    each output element a sum over k in the operands' dtype, nothing materialized.

    VJP (for C = A B): dA = dC B^T, dB = A^T dC, each summed over the leading axes the operand
    was broadcast along (autodiff's sum_to); the other three cases follow by transposing, and
    are products of this op again.
    """

    name = "batched_matmul"
    arity = 2
    kind = Kind.MATMUL
    kernel = "batched_matmul"
    attrs = {"transpose_a": False, "transpose_b": False}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        a, b = types
        dt = same_float_dtype(self.name, types)
        ta, tb = bool(attrs.get("transpose_a")), bool(attrs.get("transpose_b"))
        lead, m, _, p = batched_dims(a, b, ta, tb)
        return TensorType((*lead, m, p), dt)

    def reference(self, a, b, *, transpose_a=False, transpose_b=False):
        a = np.swapaxes(a, -1, -2) if transpose_a else a
        b = np.swapaxes(b, -1, -2) if transpose_b else b
        return np.ascontiguousarray(np.matmul(a, b))

    def grad(self, b: Builder, node: Node, dy: str):
        x, w = node.inputs
        ta, tb = bool(node.attr("transpose_a")), bool(node.attr("transpose_b"))
        mm = b.batched_matmul
        if not ta and not tb:
            return (mm(dy, w, transpose_b=True), mm(x, dy, transpose_a=True))
        if not ta and tb:
            return (mm(dy, w), mm(dy, x, transpose_a=True))
        if ta and not tb:
            return (mm(w, dy, transpose_b=True), mm(x, dy))
        return (
            mm(w, dy, transpose_a=True, transpose_b=True),
            mm(dy, x, transpose_a=True, transpose_b=True),
        )

    def flops(self, node: Node, in_types: list[TensorType], n: int) -> int:
        a = in_types[0].concrete(n)
        k = a[-2] if node.attr("transpose_a") else a[-1]
        return 2 * node.type.size(n) * k
