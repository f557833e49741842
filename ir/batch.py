"""Which values of a graph depend on the rows of the batch one by one: may predict split rows?

``predict`` and ``evaluate`` feed large inputs in blocks of rows and join the blocks' outputs.
That gives the whole input's answer only when output row i depends on input row i alone: a
mean over the batch, a softmax over the batch axis or an input with N in a non-leading
position (``(3, "N")``) make the blocks' answers wrong. ``batch_kinds`` derives, once per graph,
the kind of every value; ``rows_independent`` and ``loss_is_row_mean`` give the rule that the
compiled model and an exported library (which stores the answer in its description) share.

Kinds (rows are the symbolic batch dimension ``N``, at most one per type):

- ``const``: depends on no input with N (parameters, constants, inputs without N).
- ``rows``: N is the leading axis and row i depends on row i of every input with N (and on
  ``const`` values) only, each such input having N leading.
- ``mean``: no N axis; the mean over rows of a ``rows`` value, or an affine combination of such
  means and ``const`` values (mean(a) + mean(b) = mean(a + b) over the same rows; a sum, mean,
  reshape, transpose, slice or product with a constant of a mean is one), so the mean
  over blocks weighted by their rows gives the whole batch's value (a loss such as
  ``softmax_cross_entropy`` or ``mean(square(p - y))`` plus a weight penalty).
- ``mixed``: anything else, including every op this module does not know (the safe answer:
  run all rows in one call).
"""

from __future__ import annotations

from .graph import Graph, Node
from .ops import OPS
from .types import BATCH, TensorType

CONST, ROWS, MEAN, MIXED = "const", "rows", "mean", "mixed"
POINTWISE = ("pointwise", "elementwise")  # Op.kind of ops whose element i reads element i


def _leading(t: TensorType) -> bool:
    """N is the first axis (and, types having at most one N, nowhere else)."""
    return bool(t.shape) and t.shape[0] == BATCH


def _kind(n: Node, g: Graph, kinds: dict[str, str], kept: str | None = None) -> str:
    """The kind of ``n``; with ``kept`` (a softmax_cross_entropy node with ignore_index), that
    node's mean over the rows it keeps counts as the only ``mean`` (kept_mean_loss)."""
    ins = [kinds[i] for i in n.inputs]
    types = [g[i].type for i in n.inputs]
    op = OPS.get(n.op)
    kind = getattr(op, "kind", None)
    if kind == "source" or not n.inputs:
        if n.op == "input" and n.type.is_batched:
            return ROWS if _leading(n.type) else MIXED
        return CONST if kind in ("source", "scalar") else MIXED
    if MIXED in ins:
        return MIXED
    if all(k == CONST for k in ins):
        # a value of constants only; one that grows an N axis (broadcast_to a batched shape)
        # is the same in every row: each block gets the same rows
        if not n.type.is_batched:
            return CONST
        return ROWS if _leading(n.type) and kind in POINTWISE else MIXED
    if n.op == "size":  # counts rows: differs between blocks
        return MIXED
    if MEAN in ins and (kind == "movement" or kind in POINTWISE or kind == "matmul"):
        return _affine_of_means(n, ins, kind)
    if n.op in ("slice", "pad", "concat", "reverse", "permute"):
        # static bounds off the batch axis (the ops refuse N; permute keeps it): a row stays a row
        ok = all(k == ROWS and _leading(t) for k, t in zip(ins, types)) and _leading(n.type)
        return ROWS if ok else MIXED
    if kind == "movement" and n.op not in ("reshape", "transpose"):
        return MIXED  # unknown data movement (it might reorder rows): the safe answer
    if kind == "movement" and n.op == "reshape":
        # row-major: with N leading on both sides a row stays a row (whatever its new shape)
        ok = ins == [ROWS] and _leading(n.type) and _leading(types[0])
        return ROWS if ok else MIXED
    if kind in POINTWISE or n.op == "transpose":
        # rows operands must keep N as the output's leading axis (same rank: no broadcasting
        # that moves the batch axis), and the output must keep it first
        if not _leading(n.type):
            return MIXED
        for k, t in zip(ins, types):
            if k == ROWS and (len(t.shape) != len(n.type.shape) or not _leading(t)):
                return MIXED
        return ROWS
    if n.op == "batched_matmul":
        # a product per position of the leading axes: with N leading each operand that has
        # it (the others constant), row i of the result reads row i alone
        ok = all(k == CONST or (k == ROWS and _leading(t)) for k, t in zip(ins, types))
        return ROWS if ok and _leading(n.type) else MIXED
    if kind == "matmul":
        a, b = ins
        if a == ROWS and b == CONST and not n.attr("transpose_a", False):
            return ROWS
        return MIXED
    if n.op in ("conv", "conv_transpose"):
        # a row's output channels read the same row's input and constant filters only
        ok = ins[0] == ROWS and ins[1] == CONST and _leading(types[0]) and _leading(n.type)
        return ROWS if ok else MIXED
    if kind == "reduce" and n.op == "conv_filter_grad":
        return MIXED  # sums over the batch
    if kind == "reduce":
        (x,) = ins
        rank = len(types[0].shape)
        axes = n.attr("axes", None) if n.op != "argmax" else (OPS[n.op].attr(n, "axis"),)
        axes = tuple(range(rank)) if axes is None else tuple(a % rank for a in axes)
        if x == ROWS and 0 not in axes:
            return ROWS
        if x == ROWS and n.op == "mean" and not n.type.is_batched:
            return MIXED if kept is not None else MEAN  # (another normalizer than kept's)
        if x == MEAN and n.op in ("sum", "mean"):
            return MEAN  # over axes of a value with no N: linear in the means
        return MIXED
    if kind == "rowwise":
        if n.op in ("softmax", "log_softmax") and ins == [ROWS] and len(types[0].shape) >= 2:
            return ROWS  # over the last axis: within one row
        if n.op == "softmax_cross_entropy" and ins == [ROWS, ROWS]:
            if n.attr("reduction") == "none":  # each row's loss
                return ROWS if _leading(n.type) else MIXED
            if kept is not None:
                return MEAN if n.name == kept else MIXED
            # the mean over rows of each row's loss; with ignore_index or weight, divided by
            # the rows kept or their weights, which differ between blocks; "sum": over rows
            plain = n.attr("ignore_index") is None and n.attr("weight") is None
            return MEAN if plain and OPS[n.op].attr(n, "reduction") == "mean" else MIXED
        return MIXED
    return MIXED


def _affine_of_means(n: Node, ins: list[str], kind: str | None) -> str:
    """A node with a ``mean`` operand (elementwise, data movement or a product): ``mean`` when
    it is affine in the means, so the row-weighted mean of the blocks' values is the whole
    batch's value."""
    if n.type.is_batched:
        return MIXED
    if kind == "movement" and all(k in (MEAN, CONST) for k in ins):
        return MEAN  # each element a copy of an operand's element or a constant (pad's value)
    if n.op in ("add", "sub") and all(k in (MEAN, CONST) for k in ins):
        return MEAN
    if n.op == "neg":
        return MEAN
    if (n.op == "mul" or kind == "matmul") and sorted(ins) == [CONST, MEAN]:
        return MEAN  # linear in the mean operand
    if n.op == "div" and ins == [MEAN, CONST]:
        return MEAN
    return MIXED


def batch_kinds(g: Graph, kept: str | None = None) -> dict[str, str]:
    """The kind (const, rows, mean or mixed; see the module doc) of every value of ``g``; with
    ``kept``, as _kind says."""
    kinds: dict[str, str] = {}
    for n in g.nodes:
        kinds[n.name] = _kind(n, g, kinds, kept)
    return kinds


def rows_independent(g: Graph, outputs: tuple[str, ...] | list[str] | None = None) -> bool:
    """True when every one of ``outputs`` (default: the graph's) is ``rows``: running blocks of
    rows and joining the outputs on axis 0 gives the outputs of all rows at once."""
    kinds = batch_kinds(g)
    return all(kinds[o] == ROWS for o in (g.outputs if outputs is None else outputs))


def loss_is_row_mean(g: Graph, loss: str) -> bool:
    """True when the scalar ``loss`` is ``mean`` (or ``const``): the row-weighted mean of the
    blocks' losses is the whole batch's loss."""
    return batch_kinds(g)[loss] in (MEAN, CONST)


KEPT_ATTRS = ("ignore_index", "weight")  # softmax_cross_entropy's normalizers of kept rows


def kept_mean_loss(g: Graph, loss: str) -> Node | None:
    """The softmax_cross_entropy node with ``ignore_index`` and / or class ``weight`` (its
    mean: the sum of w[y_i] * loss_i over the label positions not ignored, divided by their
    weights' sum W, or their count K without weight) when the scalar ``loss`` is affine in
    that node's value alone (plus or times terms of no row), else None. Then a block of rows
    holding ``W_b`` of the batch's ``W`` contributes ``loss_b * W_b / W`` to the batch's loss
    and gradient: data-parallel training's loss_scale (runtime.distributed.kept_scales). Any
    other attribute of the node set (reduction, label_smoothing), another mean over rows in
    the loss, or a second such node: None."""
    from .algorithms import ancestors

    needed = ancestors(g, [loss])
    found = [
        n for n in g.nodes
        if n.name in needed and n.op == "softmax_cross_entropy"
        and any(n.attr(k) is not None for k in KEPT_ATTRS)
    ]  # fmt: skip
    if len(found) != 1:
        return None
    node = found[0]
    defaults = OPS[node.op].attrs
    if any(OPS[node.op].attr(node, k) != v for k, v in defaults.items() if k not in KEPT_ATTRS):
        return None
    return node if batch_kinds(g, kept=node.name)[loss] == MEAN else None
