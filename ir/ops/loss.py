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


XENT_REDUCTIONS = ("mean", "sum", "none")  # torch's cross_entropy(reduction=...)


def check_ignore_index(op: str, attrs: dict[str, Any], classes: int | str) -> None:
    """``ignore_index`` (absent: none) must be an int outside 0..classes-1: a class index
    would make that class's rows count for nothing (torch allows it; refused here as surely
    a mistake, since its rows could never be learned). ``weight`` (absent: all 1) must be
    ``classes`` finite numbers >= 0, not all 0; ``reduction`` one of XENT_REDUCTIONS."""
    v = attrs.get("ignore_index")
    if v is not None:
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**31) <= v < 2**31:
            raise ShapeError(f"{op}: ignore_index must be an int32, got {v!r}")
        if isinstance(classes, int) and 0 <= v < classes:
            raise ShapeError(
                f"{op}: ignore_index {v} is one of the classes 0..{classes - 1}: its rows "
                "could never be learned; use a value outside them (torch's default is -100)"
            )
    red = attrs.get("reduction", "mean")
    if red not in XENT_REDUCTIONS:
        raise ShapeError(f"{op}: reduction must be one of {XENT_REDUCTIONS}, got {red!r}")
    e = attrs.get("label_smoothing")
    if e is not None and (isinstance(e, bool) or not isinstance(e, float) or not 0.0 < e <= 1.0):
        raise ShapeError(f"{op}: label_smoothing must be a float in (0, 1], got {e!r}")
    w = attrs.get("weight")
    if w is None:
        return
    if not isinstance(w, tuple) or any(
        isinstance(e, bool) or not isinstance(e, int | float) for e in w
    ):
        raise ShapeError(f"{op}: weight must be a tuple of numbers, one per class, got {w!r}")
    if len(w) != classes:
        raise ShapeError(
            f"{op}: weight has {len(w)} entries, one per class needed: the logits have "
            f"{classes} classes"
        )
    bad = [i for i, e in enumerate(w) if not 0.0 <= e < float("inf")]
    if bad:
        raise ShapeError(
            f"{op}: weight[{bad[0]}] = {w[bad[0]]!r}: class weights must be finite and >= 0 (a "
            "negative one would make the loss unbounded below)"
        )
    if not any(w):
        raise ShapeError(f"{op}: every class weight is 0: the loss would be 0 whatever the logits")


def xent_options(node: Node) -> dict[str, Any]:
    """The options (ignore_index, weight, reduction, label_smoothing) a softmax_cross_entropy
    node was given, for its gradient node: the defaults left out, as the loss's own node does."""
    keys = ("ignore_index", "weight", "reduction", "label_smoothing")
    return {k: node.attr(k) for k in keys if node.attr(k) is not None}


def _kept(labels: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """The rows that count (label != ignore_index), as a bool mask."""
    return np.ones(len(labels), bool) if ignore_index is None else labels != ignore_index


def _row_weights(labels, ignore_index, weight, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(the rows that count, each row's weight: weight[label], 1 without weight, 0 where
    ignored)."""
    keep = _kept(labels, ignore_index)
    w = np.ones(len(labels), dtype)
    if weight is not None:
        w[keep] = np.asarray(weight, dtype)[labels[keep]]
    w[~keep] = 0.0
    return keep, w


def _divisor(w: np.ndarray, reduction: str) -> float:
    """What the summed loss is divided by: the kept rows' weights for "mean" (1 when they sum
    to 0: no row counts, the loss and gradient are 0), 1 otherwise."""
    total = float(np.sum(w, dtype=np.float64))
    return total if reduction == "mean" and total != 0.0 else 1.0


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

    Options, torch's cross_entropy's (torch.nn.CrossEntropyLoss documents the formula):

    - ``ignore_index`` k: rows whose label is k add nothing to the loss or the gradient
      (weight 0). The native label check then lets k through besides 0..C-1.
    - ``weight`` w (C numbers >= 0): row i's term is w[label_i] (logsumexp - z_i[label_i]).
    - ``reduction``: "mean" divides the sum of the terms by the sum of the kept rows' weights
      w[label_i] (their count without ``weight``; when that is 0 the loss and the gradient
      are 0, where torch gives NaN); "sum" is the sum; "none" the term of every row, of type
      [B, ...] (the labels' shape without a last axis of 1; the VJP's dy then has it too).
    """

    name = "softmax_cross_entropy"
    arity = 2
    kind = Kind.ROWWISE
    attrs = {"ignore_index": None, "weight": None, "reduction": "mean", "label_smoothing": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        _check_logits_labels(self.name, *types)
        check_ignore_index(self.name, attrs, types[0].shape[-1])
        if attrs.get("reduction", "mean") == "none":
            return TensorType(types[0].shape[:-1], types[0].dtype)
        return TensorType((), types[0].dtype)

    def reference(
        self, z, labels, ignore_index=None, weight=None, reduction="mean", label_smoothing=None
    ):
        lead = z.shape[:-1]
        z, labels = _rows_of(z, labels)
        keep, w = _row_weights(labels, ignore_index, weight, z.dtype)
        rows = np.flatnonzero(keep)
        terms = np.zeros(len(labels), z.dtype)
        ls = _log_softmax(z[rows])
        terms[rows] = -ls[np.arange(len(rows)), labels[rows]] * w[rows]
        if label_smoothing is not None:  # (1 - e) of that plus e / C sum_c w_c (-log p_c)
            e, c = label_smoothing, z.shape[-1]
            wc = np.ones(c) if weight is None else np.asarray(weight, np.float64)
            terms[rows] = (1 - e) * terms[rows] + e / c * -(ls * wc).sum(-1)
        if reduction == "none":
            return terms.reshape(lead)
        return np.asarray(np.sum(terms) / _divisor(w, reduction), z.dtype)

    def grad(self, b: Builder, node: Node, dy: str):
        z, labels = node.inputs
        return (b.softmax_cross_entropy_grad(z, labels, dy, **xent_options(node)), None)


@register
class SoftmaxCrossEntropyGrad(Op):
    """dz = dy * (softmax(z) - onehot(labels)) / R (R rows of z [.., C]): the VJP of
    softmax_cross_entropy, with its options: row i's dz times w[label_i] (0 for an ignored
    row), divided by the kept rows' weights for reduction "mean", by 1 for "sum"; for "none"
    dy holds one value per row (the loss's type) and row i's dz is dy_i w[label_i]
    (softmax(z_i) - onehot(label_i))."""

    name = "softmax_cross_entropy_grad"
    arity = 3
    kind = Kind.ROWWISE
    nondifferentiable = True
    attrs = {"ignore_index": None, "weight": None, "reduction": "mean", "label_smoothing": None}

    def infer(self, types: list[TensorType], attrs: dict[str, Any]) -> TensorType:
        z, labels, dy = types
        _check_logits_labels(self.name, z, labels)
        check_ignore_index(self.name, attrs, z.shape[-1])
        want = z.shape[:-1] if attrs.get("reduction", "mean") == "none" else ()
        if dy.shape != want or dy.dtype != z.dtype:
            shown = TensorType(want, z.dtype)
            raise ShapeError(f"{self.name}: dy must be {shown} (the loss's type), got {dy}")
        return z

    def reference(
        self, z, labels, dy, ignore_index=None, weight=None, reduction="mean", label_smoothing=None
    ):
        shape = z.shape
        z, labels = _rows_of(z, labels)
        keep, w = _row_weights(labels, ignore_index, weight, z.dtype)
        p = np.exp(_log_softmax(z))
        rows = np.flatnonzero(keep)
        g = p.copy()
        g[rows, labels[rows]] -= 1.0
        g *= w[:, None]
        if label_smoothing is not None:  # (1 - e) of that plus e / C (W p_j - w_j)
            e, c = label_smoothing, z.shape[-1]
            wc = np.ones(c) if weight is None else np.asarray(weight, np.float64)
            g = (1 - e) * g + e / c * (wc.sum() * p - wc) * keep[:, None]
        base = np.reshape(dy, -1) if reduction == "none" else dy / _divisor(w, reduction)
        return (g * np.broadcast_to(base, (len(labels),))[:, None]).reshape(shape)
