"""Row-wise ops: softmax, and softmax cross-entropy from logits with integer labels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Graph, Node


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = np.max(z, axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=-1, keepdims=True))


def _check_logits_labels(op: str, logits: TensorType, labels: TensorType) -> None:
    same_float_dtype(op, [logits])
    if logits.rank < 2:
        raise ShapeError(
            f"{op}: logits must be [batch, ..., classes] (rank 2 or more), got {logits}"
        )
    lead = logits.shape[:-1]
    if labels.dtype != "i32" or labels.shape not in (lead, (*lead, 1)):
        dims = ",".join(str(d) for d in lead)
        raise ShapeError(
            f"{op}: labels must be i32[{dims}] or i32[{dims},1] (one class index per row of "
            f"logits {logits}), got {labels}"
        )


def _rows_of(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z [.., C] and labels [..] (or [.., 1]) as the matrix of rows [R, C] and the R labels
    (int64)."""
    return z.reshape(-1, z.shape[-1]), labels.reshape(-1).astype(np.int64)


def check_ignore_index(op: str, attrs: dict[str, Any], classes: int | str) -> None:
    """``ignore_index`` (absent: none) must be an int outside 0..classes-1: a class index
    would make that class's rows count for nothing (torch allows it; refused here as surely
    a mistake, since its rows could never be learned)."""
    v = attrs.get("ignore_index")
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**31) <= v < 2**31:
        raise ShapeError(f"{op}: ignore_index must be an int32, got {v!r}")
    if isinstance(classes, int) and 0 <= v < classes:
        raise ShapeError(
            f"{op}: ignore_index {v} is one of the classes 0..{classes - 1}: its rows could "
            "never be learned; use a value outside them (torch's default is -100)"
        )


def _kept(labels: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """The rows that count (label != ignore_index), as a bool mask."""
    return np.ones(len(labels), bool) if ignore_index is None else labels != ignore_index


def label_classes(g: Graph) -> dict[str, tuple[int, int | None]]:
    """The class labels of ``g``'s softmax cross-entropy losses: label input -> (classes C,
    the ignore_index let through besides 0..C-1 or None). Labels read by two losses keep
    the smaller C, and an ignore_index only when both have it."""
    out: dict[str, tuple[int, int | None]] = {}
    for n in g.nodes:
        if n.op == "softmax_cross_entropy":
            c, skip = int(g[n.inputs[0]].type.shape[-1]), n.attr("ignore_index")
            if n.inputs[1] in out:
                c0, skip0 = out[n.inputs[1]]
                c, skip = min(c, c0), (skip if skip == skip0 else None)
            out[n.inputs[1]] = (c, skip)
    return out


@register
class Softmax(Op):
    """y = exp(x - max(x)) / sum(exp(x - max(x))) over the last axis of a 2-D x.

    VJP: dx = y * (dy - sum(dy * y, last axis)).
    """

    name = "softmax"
    arity = 1
    activation = True  # dense(..., activation="softmax"); a row-wise kernel, never an epilogue
    kind = Kind.ROWWISE

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        (x,) = types
        same_float_dtype(self.name, types)
        if x.rank != 2:
            raise ShapeError(f"softmax: expects a 2-D operand [batch, classes], got {x}")
        return x

    def reference(self, x):
        return np.exp(_log_softmax(x))

    def grad(self, b: Builder, node: Node, dy: str):
        y = node.name
        s = b.sum(b.mul(dy, y), axes=(1,), keepdims=True)
        return (b.mul(y, b.sub(dy, s)),)


@register
class SoftmaxCrossEntropy(Op):
    """loss = mean over rows of (logsumexp(z_i) - z_i[label_i]), from logits z [B, C] and
    labels i32[B], or z [B, ..., C] and labels i32[B, ...] (a sequence's tokens: Keras's
    SparseCategoricalCrossentropy, torch's cross_entropy with the classes last): every position
    is a row, the mean over all B * ... rows. The labels may carry a last axis of length 1
    (Keras's sparse labels [B, 1], [B, ..., 1]): the same values in the same order.

    Computed in the stable log-sum-exp form (max subtracted first).
    VJP: dz = dy * (softmax(z) - onehot(label)) / R, R rows  (op softmax_cross_entropy_grad).

    ``ignore_index`` k (torch's cross_entropy(ignore_index=k), reduction "mean"): rows whose
    label is k add nothing to the loss or the gradient, and R counts the other rows only;
    with no such row the loss and the gradient are 0 (torch: NaN). The native label check
    then lets k through besides 0..C-1.
    """

    name = "softmax_cross_entropy"
    arity = 2
    kind = Kind.ROWWISE
    attrs = {"ignore_index": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        _check_logits_labels(self.name, *types)
        check_ignore_index(self.name, attrs, types[0].shape[-1])
        return TensorType((), types[0].dtype)

    def reference(self, z, labels, ignore_index=None):
        z, labels = _rows_of(z, labels)
        keep = _kept(labels, ignore_index)
        if not keep.any():
            return np.zeros((), z.dtype)
        ls = _log_softmax(z[keep])
        return -np.mean(ls[np.arange(int(keep.sum())), labels[keep]])

    def grad(self, b: Builder, node: Node, dy: str):
        z, labels = node.inputs
        ignore = node.attr("ignore_index")
        extra = {} if ignore is None else {"ignore_index": ignore}
        return (b.softmax_cross_entropy_grad(z, labels, dy, **extra), None)


@register
class SoftmaxCrossEntropyGrad(Op):
    """dz = dy * (softmax(z) - onehot(labels)) / R (R rows of z [.., C]): the VJP of
    softmax_cross_entropy."""

    name = "softmax_cross_entropy_grad"
    arity = 3
    kind = Kind.ROWWISE
    nondifferentiable = True
    attrs = {"ignore_index": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        z, labels, dy = types
        _check_logits_labels(self.name, z, labels)
        check_ignore_index(self.name, attrs, z.shape[-1])
        if dy.shape != () or dy.dtype != z.dtype:
            raise ShapeError(f"{self.name}: dy must be a {z.dtype} scalar, got {dy}")
        return z

    def reference(self, z, labels, dy, ignore_index=None):
        shape = z.shape
        z, labels = _rows_of(z, labels)
        keep = _kept(labels, ignore_index)
        p = np.exp(_log_softmax(z))
        rows = np.flatnonzero(keep)
        p[rows, labels[rows]] -= 1.0
        p[~keep] = 0.0
        return (p * (dy / max(len(rows), 1))).reshape(shape)
