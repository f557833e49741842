"""Layout views: ONNX values whose batch axis N is moved or merged with other axes.

graphc's tensors keep the symbolic batch dimension N first and whole. Exporters of attention
(torch's nn.MultiheadAttention, nn.TransformerEncoderLayer, F.scaled_dot_product_attention;
Keras's heads) move N (Transpose [N, L, E] -> [L, N, E]) and merge it with the heads (Reshape
[L, N*H, hd], Transpose -> [N*H, L, hd]) around batched MatMuls, and move it back before the
outputs. The importer follows such values as a ``View``: a graphc tensor ``base`` (N first)
and, for each ONNX axis, the base axes merged into it::

    onnx_value = np.transpose(base, concat(groups)).reshape(onnx_shape)

so ONNX [N*H, L, hd] = graphc [N, L, H, hd] with groups ((0, 2), (1,), (3,)). An empty group
is an ONNX axis of size 1 (an Unsqueeze). Transpose, Reshape, Unsqueeze, Squeeze change the
groups only (a Reshape that splits a fixed axis splits the base's axis: the same elements in
the same order). Ops that do not care about axis order map their axes through the view:
elementwise ops with numpy broadcasting (the other operands are brought to the view's layout:
weights and constants by a reshape and a transpose of fixed axes, other views by a permutation
that keeps N first), Softmax/LogSoftmax and Reduce* over axes that do not hold N,
LayerNormalization (its axes moved last in the base), MatMul/Gemm by a weight matrix (the
contracted axes moved last in the base), batched MatMul whose batch axes hold N in both
operands (graphc's ``batched_matmul`` on the base axes), Gather, Slice, Split and Concat of a
fixed axis, Shape (which gives N*m for a merged axis, as the exporters' shape arithmetic
expects). Where such an op needs one base axis and the view merged several fixed ones into its
ONNX axis (or none: a unit axis), they are merged in the base first (``_single_axis``). Any
other op gets the view materialized (a permutation of fixed axes and a reshape), possible when
its first ONNX axis is N alone; otherwise it is refused naming the node and both shapes. Graph
outputs are materialized the same way. Bases keep no unit axes (``_normalize``), so that groups
compare by their sizes.

``convert`` is called by ``Importer.through_views`` for each node that reads a view, whose
Transpose moves N, that reads merged rows (``Importer.merged``) in a way that is not row-wise,
or a Reshape / Unsqueeze graphc's own rule refused; it returns the node's outputs (Tensors,
arrays or Views), or None where the op needs the literal layout.

Tests: tests/test_onnx_attention.py (torch's exports vs ONNX Runtime, random view chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dsl
from .dsl import Tensor


@dataclass(frozen=True)
class View:
    """An ONNX value as graphc tensor ``base`` seen through ``groups`` (see the module doc).

    base: a graphc tensor whose first axis is N. groups: one tuple of base axes per ONNX axis
    (row-major within the tuple; empty: a unit ONNX axis); together a permutation of the base's
    axes."""

    base: Tensor
    groups: tuple[tuple[int, ...], ...]

    def dims(self, a: int) -> tuple:
        return tuple(self.base.shape[j] for j in self.groups[a])

    def size(self, a: int) -> Any:
        d = self.dims(a)
        fixed = math.prod(int(x) for x in d if x != "N")
        return _sym(fixed) if "N" in d else fixed

    @property
    def shape(self) -> tuple:
        """The ONNX shape, N*m for an axis that merges N with fixed sizes m."""
        return tuple(self.size(a) for a in range(len(self.groups)))

    @property
    def literal(self) -> bool:
        return self.groups == tuple((j,) for j in range(len(self.base.shape)))

    def order(self) -> tuple[int, ...]:
        return tuple(j for g in self.groups for j in g)


def _sym(m: int) -> str:
    return "N" if m == 1 else f"N*{m}"


def identity(t: Tensor) -> View:
    """A graphc tensor (N first) as the view of itself, its unit axes dropped from the base."""
    return _normalize(View(t, tuple((j,) for j in range(len(t.shape)))))


def _parse(d: Any) -> tuple[bool, int] | None:
    """(holds N, fixed factor) of an ONNX size: an int, "N" or "N*m"."""
    if isinstance(d, str):
        if d == "N":
            return True, 1
        if d.startswith("N*") and d[2:].isdigit():
            return True, int(d[2:])
        return None
    return False, int(d)


def fmt_view(v: View) -> str:
    from .onnx_import import _fmt

    return f"ONNX {_fmt(v.shape)} held as graphc {_fmt(v.base.shape)}"


# ------------------------------------------------------------------ base tensor moves


def _reshape(t: Tensor, shape: tuple) -> Tensor:
    return t if tuple(shape) == tuple(t.shape) else dsl.reshape(t, tuple(shape))


def _permute_base(cx: Any, t: Tensor, perm: list[int]) -> Tensor:
    """np.transpose(t, perm) keeping N at axis 0 (graphc.functional.permute), unit axes placed by a
    reshape (free)."""
    from .functional import permute

    perm = list(perm)
    if perm == list(range(len(perm))):
        return t
    real = [p for p in perm if t.shape[p] != 1]
    if [p for p in range(len(perm)) if t.shape[p] != 1] == real:  # only unit axes move
        return _reshape(t, tuple(t.shape[p] for p in perm))
    return permute(t, perm)


def materialize(cx: Any, v: View) -> Tensor:
    """The ONNX value as a graphc tensor (N first), or a refusal naming the node and shapes."""
    from .onnx_import import _fmt

    if v.literal:
        return v.base
    if not v.groups or v.groups[0] != (0,) or v.base.shape[0] != "N":
        first = v.groups[0] if v.groups else ()
        what = (
            "merges the batch dimension N with other axes"
            if "N" in v.dims(0)
            else f"moves the batch dimension N to axis {_n_axis(v)}"
            if first != (0,)
            else "is not led by N"
        )
        cx.fail(
            f"{cx.node.op_type} needs the value in its ONNX layout {_fmt(v.shape)}, which "
            f"graphc cannot hold: it {what} (graphc keeps N as the first dimension, whole; the "
            f"value is held as graphc {_fmt(v.base.shape)} through a layout view, see "
            "docs/onnx.md)"
        )
    t = _permute_base(cx, v.base, list(v.order()))
    return _reshape(t, v.shape)


def batch_first(v: View) -> tuple[View, int] | None:
    """A graph output's view whose ONNX axis ``k`` > 0 is N alone (torch's LSTM / GRU h_n
    [layers * dirs, N, H], a Transpose to [T, N, C]) as (the view of the ONNX value with that
    axis moved first, k): the compiled output holds np.moveaxis(onnx_value, k, 0), and predict
    moves the axis back (Model.output_batch_axes). None for any other view (N merged with
    other axes, or already first)."""
    if not v.groups or v.base.shape[0] != "N":
        return None
    k = _n_axis(v)
    if k == 0 or v.groups[k] != (0,):
        return None
    return View(v.base, (v.groups[k], *v.groups[:k], *v.groups[k + 1 :])), k


def _n_axis(v: View) -> int:
    return next(a for a, g in enumerate(v.groups) if 0 in g)


# ------------------------------------------------------------------ the rules


def _view_of(imp: Any, cx: Any, i: int) -> View | np.ndarray | Tensor | None:
    """Operand ``i``: a View (a view, or a tensor merged with N's rows), else the value."""
    if not cx.has(i):
        return None
    name = cx.node.input[i]
    if name in imp.views:
        return imp.views[name]
    v = imp.lookup(name, cx)
    if isinstance(v, Tensor) and id(v) in imp.merged and id(v) not in imp.lead_ones:
        k = imp.merged[id(v)]
        r = len(v.shape)
        return _normalize(View(v, (tuple(range(k)), *((j,) for j in range(k, r)))))
    return v


def _out(v: View) -> Any:
    """A rule's result: the base where the view is the identity, else the view with its
    base's unit axes dropped (so that a unit axis never sits between N and a group's other
    axes, and groups compare by their sizes)."""
    if v.literal:
        return v.base
    v = _normalize(v)
    return v.base if v.literal else v


def _lookup_by_view(cx: Any, ids: View) -> list | None:
    """Gather of the rows of a table without N (a weight: nn.Embedding) by indices seen
    through a view (a sequence-first [T, N] input): the lookup by the base's indices, whose
    new trailing axes (the table's rows) follow the view's groups. None where the table holds
    N or the axis is not 0 (the op then needs the literal layout)."""
    from .onnx_import import _lookup

    table = cx.x(0)  # a weight (a param or constant), or a computed value
    if "N" in table.shape or int(cx.attr("axis", 0)) % max(len(table.shape), 1) != 0:
        return None
    y = _lookup(cx, table, 0, ids.base)
    r = len(ids.base.shape)
    return [_out(View(y, (*ids.groups, *((r + j,) for j in range(len(table.shape) - 1)))))]


def normalized(v: View) -> View:
    """``v`` with the base's unit axes dropped from its groups (as every view the importer
    follows: groups compare by their sizes)."""
    return _normalize(v)


def _normalize(v: View) -> View:
    units = {j for j, d in enumerate(v.base.shape) if d == 1}
    return _drop_axes(v, units, list(v.groups)) if units else v


def convert(imp: Any, cx: Any, refused: bool = False) -> list | None:
    """The outputs of node ``cx`` computed through views, or None: materialize its operands.
    ``refused``: a Reshape or Unsqueeze of a graphc tensor holding N that graphc's own rule
    refused (it would put N after an axis), tried as a view of it."""
    op = cx.node.op_type if cx.node.domain in ("", "ai.onnx") else ""
    ins = [_view_of(imp, cx, i) for i in range(cx.n_inputs)]
    x = ins[0] if ins else None
    if refused and isinstance(x, Tensor):
        x = ins[0] = identity(x)
    if op == "Transpose":
        if isinstance(x, Tensor) and "N" in x.shape:
            x = identity(x)
        if not isinstance(x, View):
            return None
        r = len(x.groups)
        perm = cx.attr("perm")
        perm = list(range(r))[::-1] if perm is None else [int(p) % r for p in perm]
        if sorted(perm) != list(range(r)):
            cx.fail(f"perm={perm} is not a permutation of the {r} axes")
        return [_out(View(x.base, tuple(x.groups[p] for p in perm)))]
    if op == "Concat":  # (of plain tensors too: along N, Importer.moves_n)
        return _concat(imp, cx, ins)
    if not any(isinstance(v, View) for v in ins):
        return None
    if op == "Shape":
        from .onnx_import import _shape_array

        return [_shape_array(cx, x.shape)]
    if op == "Reshape" and isinstance(x, View):
        return _reshape_view(cx, x, cx.c(1), bool(cx.attr("allowzero", 0)))
    if op in ("Unsqueeze", "Squeeze") and isinstance(x, View):
        from .onnx_import import _axes_arg

        axes = _axes_arg(cx, 13)
        return [_unsqueeze(cx, x, axes) if op == "Unsqueeze" else _squeeze(cx, x, axes)]
    if op == "Gather" and isinstance(x, View) and not isinstance(ins[1], View | Tensor):
        return _gather(cx, x, np.asarray(ins[1]), int(cx.attr("axis", 0)))
    if op == "Gather" and isinstance(ins[1], View) and not isinstance(x, View):
        return _lookup_by_view(cx, ins[1])
    if op in ("MatMul", "Gemm"):
        return _matmul(imp, cx, ins, op)
    if op in ("Softmax", "LogSoftmax") and isinstance(x, View):
        return _along(imp, cx, x, "axis", -1)
    if op == "LayerNormalization" and isinstance(x, View):
        return _layer_norm(imp, cx, x)
    if op.startswith("Reduce") and isinstance(x, View):
        return _reduce(imp, cx, x, op)
    if op == "Slice" and isinstance(x, View):
        return _slice(imp, cx, x)
    if op == "Split" and isinstance(x, View):
        one = _single_axis(cx, x, int(cx.attr("axis", 0)))
        if one is None:
            return None
        x, j = one
        return [_out(View(o, x.groups)) for o in _run(imp, cx, {0: x.base}, {"axis": j})]
    if _elementwise(op):
        return _broadcast_rule(imp, cx, ins)
    return None


def _single_axis(cx: Any, x: View, axis: int) -> tuple[View, int] | None:
    """``x`` with ONNX axis ``axis`` holding exactly one base axis (fixed sizes merged into one
    by a permutation that keeps N first and a reshape; a unit axis appended for a unit ONNX
    axis), and that base axis; None where the axis holds N or is out of range."""
    r = len(x.groups)
    if not -r <= axis < r:
        return None  # the rule's own range check, on the literal value
    axis %= r
    g = x.groups[axis]
    if any(x.base.shape[j] == "N" for j in g):
        return None
    if len(g) == 1:
        return x, g[0]
    rank = len(x.base.shape)
    groups = list(x.groups)
    if not g:
        groups[axis] = (rank,)
        return View(_reshape(x.base, (*x.base.shape, 1)), tuple(groups)), rank
    rest = [j for j in range(rank) if j not in g]
    k = sum(1 for j in rest if j < min(g))  # >= 1: N (axis 0) is in rest
    t = _permute_base(cx, x.base, rest[:k] + list(g) + rest[k:])
    size = math.prod(int(x.base.shape[j]) for j in g)
    dims = [x.base.shape[j] for j in rest]
    t = _reshape(t, (*dims[:k], size, *dims[k:]))
    pos = {j: i if i < k else i + 1 for i, j in enumerate(rest)}
    groups = [(k,) if a == axis else tuple(pos[j] for j in gg) for a, gg in enumerate(x.groups)]
    return View(t, tuple(groups)), k


def _slice(imp: Any, cx: Any, x: View) -> list | None:
    """Slice along ONNX axes that each hold one fixed base axis: the rule on the base."""
    if cx.version < 10:
        starts, axes = cx.attr("starts"), cx.attr("axes")
    else:
        starts = np.asarray(cx.c(1)).tolist()
        axes = np.asarray(cx.c(3)).tolist() if cx.has(3) else None
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    base_axes = []
    for a in axes:
        one = _single_axis(cx, x, a)
        if one is None:
            return None
        x = one[0]
        base_axes.append(one[1])
    base_axes = [x.groups[a % len(x.groups)][0] for a in axes]  # (after every merge)
    if cx.version < 10:
        outs = _run(imp, cx, {0: x.base}, {"axes": base_axes})
    else:
        outs = _run(imp, cx, {0: x.base, 3: np.array(base_axes, np.int64)})
    return [_out(View(outs[0], x.groups))]


def _concat(imp: Any, cx: Any, ins: list) -> list | None:
    """Concat along an ONNX axis holding one fixed base axis in every operand (each a value
    holding N), the operands brought to the first view's layout."""
    views = [identity(v) if isinstance(v, Tensor) and "N" in v.shape else v for v in ins]
    first = next((v for v in views if isinstance(v, View)), None)
    if first is None or any(not isinstance(v, View) for v in views if v is not None):
        return None
    r = len(first.groups)
    axis = int(cx.attr("axis"))
    if not -r <= axis < r:
        return None
    axis %= r
    if first.groups[axis] == (0,) and first.base.shape[0] == "N":
        return _concat_n(cx, views, first, axis)
    one = _single_axis(cx, first, axis)
    if one is None:
        return None
    first, j = one
    new = {}
    for i, v in enumerate(views):
        if v is None:
            continue
        one = _single_axis(cx, v, axis) if len(v.groups) == r else None
        if one is None:
            return None
        t = _align(cx, one[0], first, r, free=axis)
        if t is None:
            return None
        new[i] = t
    outs = _run(imp, cx, new, {"axis": j})
    return [_out(View(outs[0], first.groups))]


def _concat_n(cx: Any, views: list, first: View, axis: int) -> list | None:
    """Concat along the ONNX axis that is N alone in every operand (skl2onnx's QDA stacks its
    per-class [N, 1] columns as [k*N, 1], then Reshapes to [k, N] and Transposes to [N, k]):
    the operands, brought to the first's layout, stacked along a new base axis after N,
    which the ONNX axis merges with N, part major: row i*N + n of the result is row n of
    operand i."""
    bases = []
    for v in views:
        if v is None or len(v.groups) != len(first.groups) or v.groups[axis] != (0,):
            return None
        t = _align(cx, v, first, len(first.groups))
        if t is None:
            return None
        bases.append(_reshape(t, (t.shape[0], 1, *t.shape[1:])))
    stacked = dsl.apply("concat", *bases, axis=1)
    groups = tuple(
        (1, 0) if a == axis else tuple(j + (j > 0) for j in g) for a, g in enumerate(first.groups)
    )
    return [_out(View(stacked, groups))]


def _elementwise(op: str) -> bool:
    from .onnx_import import _UNARY, ROW_WISE

    return op in ROW_WISE or op in _UNARY or op in ("Abs", "Neg", "Not")


def _run(
    imp: Any,
    cx: Any,
    inputs: dict[int, Any],
    attrs: dict[str, Any] | None = None,
    version: int | None = None,
) -> list:
    """The node's own rule on operands replaced by ``inputs`` (index -> value), attributes
    replaced by ``attrs`` (None: removed), read as of opset ``version`` (default: the node's)."""
    from .onnx_import import OPS, NodeContext, require_onnx

    onnx = require_onnx()
    node = onnx.NodeProto()
    node.CopyFrom(cx.node)
    temps = []
    for i, v in inputs.items():
        name = f"\x00layout{len(imp.values)}_{i}"
        imp.values[name] = v
        while len(node.input) <= i:
            node.input.append("")
        node.input[i] = name
        temps.append(name)
    for k, a in (attrs or {}).items():
        for old in [x for x in node.attribute if x.name == k]:
            node.attribute.remove(old)
        if a is not None:
            node.attribute.append(onnx.helper.make_attribute(k, a))
    try:
        cx2 = NodeContext(imp, node, cx.index, cx.version if version is None else version)
        return OPS[cx.node.op_type].convert(cx2)
    finally:
        for name in temps:
            imp.values.pop(name, None)
            imp.materialized.pop(name, None)


def _reshape_view(cx: Any, x: View, target: np.ndarray, allowzero: bool) -> list | None:
    """Reshape of a view: each ONNX output axis takes consecutive axes of the view's expanded
    order (splitting a fixed base axis where a size needs part of it); None where sizes do not
    fall on whole axes (the literal layout then)."""

    vals = target.tolist() if target.ndim == 1 else None
    if vals is None:
        cx.fail(f"the shape input must be 1-D, got {target.shape}")
    in_shape = x.shape
    out: list[tuple[bool, int] | None] = []
    for i, d in enumerate(vals):
        if not isinstance(d, str) and d == 0 and not allowzero:
            if i >= len(in_shape):
                cx.fail(f"shape {vals} copies dimension {i} the input does not have")
            d = in_shape[i]
        if not isinstance(d, str) and d == -1:
            out.append(None)
            continue
        p = _parse(d)
        if p is None or (not p[0] and p[1] < 0):
            cx.fail(f"bad shape {vals}")
        out.append(p)
    tot_n = True
    tot = math.prod(int(d) for d in x.base.shape if d != "N")
    if out.count(None) > 1:
        cx.fail(f"shape {vals} has more than one -1")
    known_n = any(p[0] for p in out if p)
    known = math.prod(p[1] for p in out if p)
    if None in out:
        if known == 0 or tot % known:
            cx.fail(f"cannot reshape {fmt_view(x)} to {vals}")
        out[out.index(None)] = (tot_n and not known_n, tot // known)
    elif known != tot or not known_n:
        cx.fail(f"cannot reshape {fmt_view(x)} to {vals} (sizes differ)")
    if sum(1 for p in out if p[0]) != 1:
        cx.fail(f"reshape of {fmt_view(x)} to {vals}: N must stay in one axis")
    # walk the expanded axes, splitting a fixed base axis where an output size needs part of it
    base, order = x.base, list(x.order())
    shape = list(base.shape)
    groups: list[tuple[int, ...]] = []
    pos = 0
    for has_n, want in out:
        got_n, got, g = False, 1, []
        while (got_n, got) != (has_n, want):
            if pos >= len(order):
                return None
            j = order[pos]
            d = shape[j]
            if d == "N":
                if got_n or not has_n:
                    cx.fail(
                        f"reshape of {fmt_view(x)} to {vals} splits the batch dimension N "
                        "across axes"
                    )
                got_n = True
            elif got * d <= want and want % (got * d) == 0:
                got *= d
            elif want % got == 0 and 1 < want // got < d and d % (want // got) == 0:
                r = want // got  # split base axis j into (r, d // r)
                shape = [*shape[:j], r, d // r, *shape[j + 1 :]]
                order = [o + 1 if o > j else o for o in order]
                order.insert(pos + 1, j + 1)
                groups = [tuple(o + 1 if o > j else o for o in gg) for gg in groups]
                g = [o + 1 if o > j else o for o in g]
                got *= r
            else:
                return None  # not a merge or split of whole axes: the literal layout
            g.append(j)
            pos += 1
        groups.append(tuple(g))
    while pos < len(order):  # trailing unit axes join the last group
        j = order[pos]
        if shape[j] != 1:
            return None
        groups[-1] = (*groups[-1], j)
        pos += 1
    base = _reshape(base, tuple(shape))
    return [_out(View(base, tuple(groups)))]


def _unsqueeze(cx: Any, x: View, axes: list[int] | None) -> Any:
    if not axes:
        cx.fail("Unsqueeze needs axes")
    r = len(x.groups) + len(axes)
    ax = sorted(a % r for a in axes)
    groups, it = [], iter(x.groups)
    for a in range(r):
        groups.append(() if a in ax else next(it))
    return _out(View(x.base, tuple(groups)))


def _drop_axes(x: View, drop: set[int], keep_groups: list[tuple[int, ...]]) -> View:
    """``x`` with unit base axes ``drop`` removed (reshape) and ``keep_groups`` renumbered."""
    base = x.base
    shape = tuple(d for j, d in enumerate(base.shape) if j not in drop)
    new = {j: j - sum(1 for k in drop if k < j) for j in range(len(base.shape))}
    groups = tuple(tuple(new[j] for j in g if j not in drop) for g in keep_groups)
    return View(_reshape(base, shape), groups)


def _squeeze(cx: Any, x: View, axes: list[int] | None) -> Any:
    r = len(x.groups)
    ax = (
        [a for a in range(r) if x.size(a) == 1]
        if axes is None
        else sorted({a % r for a in axes} if all(-r <= a < r for a in axes) else [r])
    )
    for a in ax:
        if a >= r or x.size(a) != 1:
            cx.fail(f"cannot squeeze axis {a} of {fmt_view(x)}")
    drop = {j for a in ax for j in x.groups[a]}
    keep = [g for a, g in enumerate(x.groups) if a not in ax]
    return _out(_drop_axes(x, drop, keep))


def _gather(cx: Any, x: View, idx: np.ndarray, axis: int) -> list | None:
    from .onnx_import import _take

    r = len(x.groups)
    if not -r <= axis < r:
        cx.fail(f"axis {axis} is out of range for rank {r}")
    axis %= r
    g = x.groups[axis]
    size = x.size(axis)
    if isinstance(size, str) or idx.ndim > 1 or idx.dtype.kind not in "iu":
        return None  # along N, or a table of indices: the literal layout
    flat = [int(i) + size if int(i) < 0 else int(i) for i in np.ravel(idx)]
    if any(not 0 <= i < size for i in flat):
        cx.fail(f"indices {flat} out of range for axis {axis} of size {size}")
    one = _single_axis(cx, x, axis)
    if one is None:
        return None
    x, j = one
    g = x.groups[axis]
    base, groups = _take(cx, x.base, j, flat), list(x.groups)
    if idx.ndim == 0:
        v = View(base, tuple(groups))
        return [_out(_drop_axes(v, set(g), [gg for a, gg in enumerate(groups) if a != axis]))]
    return [_out(View(base, tuple(groups)))]


def _align(cx: Any, v: Any, target: View, r: int, free: int | None = None) -> Any:
    """Operand ``v`` (a View, a Tensor or an array, ONNX rank <= r, broadcasting) laid out as
    ``target``'s base (rank-r ONNX view), or None where it cannot be. ``free``: an ONNX axis
    (one base axis in both) whose size may differ (a Concat's)."""
    from .functional import permute

    rank = len(target.base.shape)
    if isinstance(v, Tensor) and "N" in v.shape:
        v = identity(v)
    if isinstance(v, View):
        lead = r - len(v.groups)
        src: list[int | None] = [None] * rank  # base axis of v for each target axis
        drop: set[int] = set()
        for a in range(r):
            g = target.groups[a]
            if a < lead:
                continue
            b = a - lead
            if a == free:
                src[g[0]] = v.groups[b][0]
                continue
            if v.size(b) == 1:
                drop.update(v.groups[b])
                continue
            if v.dims(b) != target.dims(a):
                return None
            for tj, vj in zip(g, v.groups[b]):
                src[tj] = vj
        xv = _drop_axes(v, drop, [g for g in v.groups])  # remap v's axes after the drop
        new = {}
        k = 0
        for j in range(len(v.base.shape)):
            if j not in drop:
                new[j] = k
                k += 1
        order = [new[s] for s in src if s is not None]
        t = _permute_base(cx, xv.base, order) if order != sorted(order) else xv.base
        fj = target.groups[free][0] if free is not None else None
        shape = []
        for j, s in enumerate(src):
            if s is None:
                shape.append(1)
            elif j == fj:
                shape.append(v.size(free - lead))
            else:
                shape.append(target.base.shape[j])
        return _reshape(t, tuple(shape))
    a = v
    s = tuple(a.shape)
    if len(s) > r:
        return None
    s = (1,) * (r - len(s)) + s
    exp: list[Any] = []
    for ax in range(r):
        g = target.groups[ax]
        if s[ax] == 1:
            exp.extend([1] * len(g))
            continue
        d = target.dims(ax)
        if "N" in d or math.prod(d) != s[ax]:
            return None
        exp.extend(d)
    perm = [0] * rank
    for pos, j in enumerate(target.order()):
        perm[j] = pos
    if isinstance(a, np.ndarray):
        return np.transpose(a.reshape(exp), perm) if rank else a.reshape(())
    t = _reshape(a, tuple(exp))
    return permute(t, perm) if perm != sorted(perm) else t


def _broadcast_rule(imp: Any, cx: Any, ins: list) -> list | None:
    """An elementwise op: operands aligned to the view of the highest rank, then the rule."""
    r = max(
        len(v.groups) if isinstance(v, View) else len(np.shape(v)) for v in ins if v is not None
    )
    ti = max(
        (i for i, v in enumerate(ins) if isinstance(v, View)),
        key=lambda i: (
            len(ins[i].groups),
            sum(ins[i].size(a) != 1 for a in range(len(ins[i].groups))),
        ),
    )
    target = ins[ti]
    if len(target.groups) < r:
        target = View(target.base, ((),) * (r - len(target.groups)) + target.groups)
    new: dict[int, Any] = {ti: target.base}
    for i, v in enumerate(ins):
        if v is None or i == ti or (isinstance(v, np.ndarray) and v.ndim == 0):
            continue
        if (
            isinstance(v, np.ndarray)
            and cx.node.input[i] in imp.initializers
            and v.dtype.kind == "f"
            and imp.is_trainable(cx.node.input[i])
        ):
            v = imp.as_tensor(cx.node.input[i], cx)  # a weight: trains through the alignment
        t = _align(cx, v, target, r)
        if t is None:
            return None
        new[i] = t
    outs = _run(imp, cx, new)
    res = []
    for o in outs:
        if isinstance(o, Tensor) and len(o.shape) == len(target.base.shape):
            res.append(_out(View(o, target.groups)))
        else:
            res.append(o)
    return res


def _along(imp: Any, cx: Any, x: View, attr: str, default: int) -> list | None:
    """Softmax / LogSoftmax over ONNX axis ``axis`` (opset >= 13): over the base axis it holds.
    Before opset 13 over the ONNX axes from ``axis`` on (the 2-D coercion): over the one base
    axis they hold, or over the base's trailing axes where they hold those in order."""
    r = len(x.groups)
    legacy = cx.version < 13
    axis = int(cx.attr(attr, 1 if legacy else default))
    if not -r <= axis < r:
        return None  # the rule's own range check, on the literal value
    axis %= r
    if not legacy or axis == r - 1:
        one = _single_axis(cx, x, axis)
        if one is None:
            return None
        x = one[0]
    tail = [j for g in x.groups[axis:] if legacy for j in g] or list(x.groups[axis])
    if any(x.base.shape[j] == "N" for j in tail):
        return None
    rank = len(x.base.shape)
    if not tail:  # over unit axes only: over a unit axis appended to the base, dropped after
        b = _reshape(x.base, (*x.base.shape, 1))
        outs = _run(imp, cx, {0: b}, {attr: rank}, version=max(cx.version, 13))
        return [_out(View(_reshape(o, x.base.shape), x.groups)) for o in outs]
    if len(tail) == 1:  # one base axis: Softmax-13's meaning, whatever the opset
        outs = _run(imp, cx, {0: x.base}, {attr: tail[0]}, version=max(cx.version, 13))
    elif legacy and tail == list(range(rank - len(tail), rank)):
        outs = _run(imp, cx, {0: x.base}, {attr: rank - len(tail)})
    else:
        return None
    return [_out(View(o, x.groups)) for o in outs]


def _layer_norm(imp: Any, cx: Any, x: View) -> list | None:
    """LayerNormalization over ONNX axes axis..r-1: each made one base axis (_single_axis),
    those moved last in the base in ONNX order (a permutation that keeps N first), then the
    rule over the base's trailing axes (torch's LayerNorm over E of [L, N, E])."""
    if len([o for o in cx.node.output if o]) > 1:
        return None  # the mean and inverse deviation outputs: the literal layout
    r = len(x.groups)
    axis = int(cx.attr("axis", -1))
    if not -r <= axis < r:
        return None
    axis %= r
    for a in range(axis, r):
        one = _single_axis(cx, x, a)
        if one is None:
            return None
        x = one[0]
    tail = [x.groups[a][0] for a in range(axis, r)]
    rank = len(x.base.shape)
    if tail != list(range(rank - len(tail), rank)):
        order = [j for j in range(rank) if j not in tail] + tail
        pos = {j: i for i, j in enumerate(order)}
        x = View(
            _permute_base(cx, x.base, order), tuple(tuple(pos[j] for j in g) for g in x.groups)
        )
    outs = _run(imp, cx, {0: x.base}, {"axis": rank - len(tail)})
    return [_out(View(outs[0], x.groups))]


def _reduce(imp: Any, cx: Any, x: View, op: str) -> list | None:
    """Reduce* over ONNX axes: over the base axes they hold (none may hold N)."""
    from .onnx_import import _axes_arg

    r = len(x.groups)
    attr_until = 13 if op == "ReduceSum" else 18
    axes = _axes_arg(cx, attr_until)
    if not axes:
        return None
    if any(not -r <= a < r for a in axes):
        return None  # the rule's own range check, on the literal value
    ax = sorted({a % r for a in axes})
    base_axes = sorted(j for a in ax for j in x.groups[a])
    if any(x.base.shape[j] == "N" for j in base_axes):
        return None
    keep = bool(cx.attr("keepdims", 1))
    b = x.base
    if not base_axes:  # unit axes only: a unit axis appended to the base, dropped after
        b = _reshape(b, (*b.shape, 1))
        base_axes = [len(b.shape) - 1]
    if cx.version < attr_until:
        outs = _run(imp, cx, {0: b}, {"axes": base_axes, "keepdims": 1})
    else:
        outs = _run(imp, cx, {0: b, 1: np.array(base_axes, np.int64)}, {"keepdims": 1})
    y = View(_reshape(outs[0], x.base.shape) if b is not x.base else outs[0], x.groups)
    if not keep:
        dropped = set(base_axes) if b is x.base else set()
        y = _drop_axes(y, dropped, [g for a, g in enumerate(x.groups) if a not in ax])
    return [_out(y)]


def _k_last(cx: Any, x: View) -> tuple[Tensor, tuple[tuple[int, ...], ...]]:
    """The base with the last ONNX axis's base axes moved last and merged into one (K), and
    the groups of the other ONNX axes in that tensor (the K axis is its last)."""
    k = x.groups[-1]
    rest = [j for j in range(len(x.base.shape)) if j not in k]
    t = _permute_base(cx, x.base, rest + list(k))
    kd = math.prod(int(x.base.shape[j]) for j in k)
    t = _reshape(t, (*(x.base.shape[j] for j in rest), kd))
    new = {j: i for i, j in enumerate(rest)}
    return t, tuple(tuple(new[j] for j in g) for g in x.groups[:-1])


def _matmul(imp: Any, cx: Any, ins: list, op: str) -> list | None:
    from .functional import batched_matmul

    a, b = ins[0], ins[1]
    if (
        isinstance(a, View)
        and not isinstance(b, View)
        and not (isinstance(b, Tensor) and "N" in b.shape)
    ):
        if "N" in a.dims(len(a.groups) - 1) or len(a.groups) < 2:
            return None
        if op == "Gemm" and cx.attr("transA", 0):
            return None
        if len(np.shape(b)) != 2:
            return None
        t, groups = _k_last(cx, a)
        w = cx.x(1)
        if op == "Gemm" and cx.attr("transB", 0):
            w = dsl.transpose(w)
        y = dsl.matmul(t, w)
        if op == "Gemm":
            alpha, beta = float(cx.attr("alpha", 1.0)), float(cx.attr("beta", 1.0))
            if alpha != 1.0:
                y = y * alpha
            if cx.has(2) and beta != 0.0:
                c = ins[2]
                if isinstance(c, View) or (isinstance(c, Tensor) and "N" in c.shape):
                    return None
                if math.prod(np.shape(c)) not in (1, int(y.shape[-1])) or (
                    len(np.shape(c)) == 2 and np.shape(c)[0] != 1
                ):
                    return None
                ct = cx.x(2)
                ct = _reshape(ct, (math.prod(ct.shape),)) if len(ct.shape) > 1 else ct
                y = y + (ct if beta == 1.0 else ct * beta)
        return [_out(View(y, (*groups, (len(y.shape) - 1,))))]
    if op != "MatMul" or not (isinstance(a, View) or isinstance(b, View)):
        return None
    a = identity(a) if isinstance(a, Tensor) and "N" in a.shape else a
    b = identity(b) if isinstance(b, Tensor) and "N" in b.shape else b
    if not (isinstance(a, View) and isinstance(b, View)) or len(a.groups) != len(b.groups):
        return None
    r = len(a.groups)
    if r < 3:
        return None
    parts = []
    for x in (a, b):
        batch = [j for g in x.groups[:-2] for j in g]
        if not batch or batch[0] != 0 or x.base.shape[0] != "N":
            return None  # N must lead the batch axes
        m, k = x.groups[-2], x.groups[-1]
        if any(x.base.shape[j] == "N" for j in (*m, *k)):
            return None
        t = _permute_base(cx, x.base, batch + list(m) + list(k))
        md = math.prod(int(x.base.shape[j]) for j in m)
        kd = math.prod(int(x.base.shape[j]) for j in k)
        parts.append(_reshape(t, (*(x.base.shape[j] for j in batch), md, kd)))
    if [a.dims(i) for i in range(r - 2)] != [b.dims(i) for i in range(r - 2)]:
        return None
    y = batched_matmul(parts[0], parts[1])
    groups, j = [], 0
    for i in range(r - 2):
        groups.append(tuple(range(j, j + len(a.groups[i]))))
        j += len(a.groups[i])
    groups += [(j,), (j + 1,)]
    return [_out(View(y, tuple(groups)))]
