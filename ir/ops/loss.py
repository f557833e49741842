"""Row-wise ops: softmax, and softmax cross-entropy from logits with integer labels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from .base import Kind, Op, register, same_float_dtype

if TYPE_CHECKING:
    from ..builder import Builder
    from ..graph import Node


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
    """

    name = "softmax_cross_entropy"
    arity = 2
    kind = Kind.ROWWISE

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        _check_logits_labels(self.name, *types)
        return TensorType((), types[0].dtype)

    def reference(self, z, labels):
        z, labels = _rows_of(z, labels)
        ls = _log_softmax(z)
        return -np.mean(ls[np.arange(len(labels)), labels])

    def grad(self, b: Builder, node: Node, dy: str):
        z, labels = node.inputs
        return (b.softmax_cross_entropy_grad(z, labels, dy), None)


@register
class SoftmaxCrossEntropyGrad(Op):
    """dz = dy * (softmax(z) - onehot(labels)) / R (R rows of z [.., C]): the VJP of
    softmax_cross_entropy."""

    name = "softmax_cross_entropy_grad"
    arity = 3
    kind = Kind.ROWWISE
    nondifferentiable = True

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        z, labels, dy = types
        _check_logits_labels(self.name, z, labels)
        if dy.shape != () or dy.dtype != z.dtype:
            raise ShapeError(f"{self.name}: dy must be a {z.dtype} scalar, got {dy}")
        return z

    def reference(self, z, labels, dy):
        shape = z.shape
        z, labels = _rows_of(z, labels)
        p = np.exp(_log_softmax(z))
        p[np.arange(len(labels)), labels] -= 1.0
        return (p * (dy / len(labels))).reshape(shape)
