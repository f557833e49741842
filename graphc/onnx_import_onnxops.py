"""ONNX import rules for the scatter family: ScatterElements (and its opset-9 name Scatter) and
ScatterND, with every reduction of the spec (none, add, mul, max, min).

Semantics (https://onnx.ai/onnx/operators/onnx__ScatterElements.html and
onnx__ScatterND.html): the output is a copy of ``data`` in which each element of ``updates``
is written at the position its index names, in the row-major order of the indices;
``reduction`` combines it with the value already there (f(out, u): out + u, out * u,
max(out, u), min(out, u)) instead of overwriting. With repeated indices the spec leaves the
order of plain writes undefined; graphc takes the last write, as ONNX Runtime and onnx's
reference do, and applies the reductions one after the other in index order, as they do.
Negative indices count from the end of their axis; one outside [-s, s-1] is an error (ONNX
Runtime raises).

Two forms:

- indices known at import time (an initializer, a Constant, a shape computation): every
  (output element, update element) pair is listed at import time and the scatter becomes
  exact moves (slices and concats of the flattened values: NaN, inf and -0.0 pass unchanged)
  and, for a reduction, one elementwise op per round of repeated positions. ``data`` must not
  hold the batch dimension N (constant indices would name batch rows). The gradient reaches
  ``data`` where it is not overwritten and the updates that land.
- indices computed in the graph (ScatterElements only, along an axis other than the batch
  axis): each index is compared with every position of the axis ([idx == j], as
  GatherElements does), and the updates are combined per position by a select and a
  sum / max / min over the indices. The indices are checked by the entries (a graph input) or
  proven in range (Importer.bound_integers), as for Gather.

Both data and updates known at import time fold with numpy (shape computations).

Tests: tests/test_onnx_scatter.py (ONNX Runtime, ONNX's node tests, the gradient).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from . import dsl
from .dsl import Tensor
from .onnx_import import (
    _NP_OF,
    MAX_TAKEN,
    NodeContext,
    Rule,
    Value,
    _axis,
    _fmt,
    _index_hits,
    _integral_part,
    _nearest_integer,
    _reshape,
    _take,
    require_onnx,
    type_name,
    with_nodes,
)

REDUCTIONS = {"none": 11, "add": 16, "mul": 16, "max": 18, "min": 18}  # the opset each came in
MAX_SCATTER_RUNS = 4096  # slices one scatter with constant indices may compose (compile time)

_NUMPY_AT = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(cx: NodeContext) -> str:
    red = str(cx.attr("reduction", "none"))
    if red not in REDUCTIONS:
        cx.fail(f"reduction {red!r} is not one of {', '.join(REDUCTIONS)}")
    return red


def _combine(red: str, a: Tensor, b: Tensor) -> Tensor:
    """f(a, b) of a reduction: a + b, a * b, max(a, b), min(a, b)."""
    if red == "add":
        return a + b
    if red == "mul":
        return a * b
    if red == "max":
        return dsl.maximum(a, b)
    return -dsl.maximum(-a, -b)


def _constant_indices(cx: NodeContext, idx: np.ndarray, sizes: Any, what: str) -> np.ndarray:
    """The indices as int64 in [0, size) (negative ones counted from the end), or refused
    naming the first one outside [-size, size-1]; ``sizes`` broadcasts against ``idx``."""
    if idx.dtype.kind not in "iu":
        cx.fail(f"{what} has element type {idx.dtype}; the spec asks for int32 or int64")
    i = idx.astype(np.int64)
    s = np.broadcast_to(np.asarray(sizes, np.int64), i.shape)
    bad = (i < -s) | (i >= s)
    if bad.any():
        k = tuple(int(v) for v in np.argwhere(bad)[0])
        cx.fail(
            f"{what}[{', '.join(map(str, k))}] = {int(i[k])} is outside [-{int(s[k])}, "
            f"{int(s[k]) - 1}] (ONNX Runtime raises)"
        )
    return np.where(i < 0, i + s, i)


def _elements_pairs(cx: NodeContext, shape: tuple, idx: np.ndarray, axis: int) -> np.ndarray:
    """ScatterElements' (output position, update position) pairs, flat, in index order."""
    r = len(shape)
    if idx.ndim != r:
        cx.fail(f"indices {_fmt(idx.shape)} must have data's rank ({_fmt(shape)})")
    for j in range(r):
        if j != axis and idx.shape[j] > int(shape[j]):
            cx.fail(f"indices {_fmt(idx.shape)} do not fit data {_fmt(shape)} along axis {j}")
    i = _constant_indices(cx, idx, int(shape[axis]), "indices")
    coords = list(np.indices(idx.shape).reshape(r, -1))
    coords[axis] = i.reshape(-1)
    p = np.ravel_multi_index(tuple(coords), tuple(int(d) for d in shape))
    return np.stack([p, np.arange(idx.size)], axis=1)


def _nd_pairs(cx: NodeContext, shape: tuple, idx: np.ndarray, ushape: tuple) -> np.ndarray:
    """ScatterND's pairs: each index tuple names a slice data[i_0, ..., i_{q-1}, ...]."""
    r = len(shape)
    q = int(idx.shape[-1]) if idx.ndim else 0
    if idx.ndim < 1 or not 1 <= q <= r:
        cx.fail(f"indices {_fmt(idx.shape)}: the last dimension must be 1 .. {r} (data's rank)")
    want = (*idx.shape[:-1], *shape[q:])
    if tuple(ushape) != tuple(want):
        cx.fail(
            f"updates {_fmt(ushape)} must be indices.shape[:-1] + data.shape[{q}:] = {_fmt(want)}"
        )
    lead = tuple(int(d) for d in shape[:q])
    tuples = _constant_indices(cx, idx.reshape(-1, q), np.asarray(lead), "indices")
    inner = math.prod(int(d) for d in shape[q:])
    base = np.ravel_multi_index(tuple(tuples.T), lead) * inner
    p = (base[:, None] + np.arange(inner)[None, :]).reshape(-1)
    return np.stack([p, np.arange(p.size)], axis=1)


def _scatter_numpy(data: np.ndarray, upd: np.ndarray, pairs: np.ndarray, red: str) -> np.ndarray:
    out = np.array(data).reshape(-1)
    u = np.asarray(upd).reshape(-1).astype(out.dtype)
    p, q = pairs[:, 0], pairs[:, 1]
    if red == "none":
        last = np.full(out.size, -1, np.int64)
        last[p] = np.arange(p.size)  # fancy assignment: the last of repeated positions stays
        hit = last >= 0
        out[hit] = u[q[last[hit]]]
    else:
        _NUMPY_AT[red].at(out, p, u[q])  # unbuffered: one after the other, in order
    return out.reshape(np.shape(data))


def _pick(cx: NodeContext, x: Tensor, idx: np.ndarray) -> Tensor:
    """x[..., idx] along the last axis of x ([D], or [N, D] per sample): exact moves, a slice
    per run of consecutive indices."""
    idx = [int(v) for v in idx]
    runs = 1 + sum(1 for a, b in itertools.pairwise(idx) if b != a + 1)
    if runs > MAX_SCATTER_RUNS:
        cx.fail(
            f"the scatter writes {runs} separate runs of elements; graphc composes at most "
            f"{MAX_SCATTER_RUNS} (one slice each)"
        )
    a = len(x.shape) - 1
    parts = [_take(cx, x, a, idx[k : k + MAX_TAKEN]) for k in range(0, len(idx), MAX_TAKEN)]
    return dsl.apply("concat", *parts, axis=a) if len(parts) > 1 else parts[0]


def _no_batch(cx: NodeContext, shape: tuple) -> None:
    if "N" in shape:
        cx.fail(
            f"indices known at import time scatter into {_fmt(shape)}, which has the batch "
            "dimension N: the indices would name batch rows (graphc scatters into values "
            "without N, or along another axis with indices computed per sample)"
        )


def _scatter_constant(
    cx: NodeContext, x: Tensor, u: Tensor, pairs: np.ndarray, red: str, batched: bool = False
):
    """The scatter of ``pairs`` (known at import time) as moves of the flattened values: for a
    plain write one pick from concat(data, updates); for a reduction one round per repeat of
    a position (its k-th update), each f(out[touched], updates) written back by a pick.
    ``batched``: x and u lead with N and the pairs index each sample's elements."""
    lead = tuple(x.shape[:1]) if batched else ()
    d = math.prod(int(v) for v in x.shape[len(lead) :])
    xf = _reshape(cx, x, (*lead, d))
    uf = _reshape(cx, u, (*lead, math.prod(int(v) for v in u.shape[len(lead) :])))
    ax = len(lead)
    p, q = pairs[:, 0], pairs[:, 1]
    if red == "none":
        src = np.arange(d)
        src[p] = d + q  # repeated positions: the last write stays
        out = _pick(cx, dsl.apply("concat", xf, uf, axis=ax), src)
    else:
        order = np.argsort(p, kind="stable")  # each position's updates, in index order
        rank = np.empty(p.size, np.int64)
        sp = p[order]
        first = np.r_[0, np.flatnonzero(sp[1:] != sp[:-1]) + 1]
        rank[order] = np.arange(p.size) - np.repeat(first, np.diff(np.r_[first, p.size]))
        out = xf
        for k in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == k)
            pos, ups = p[sel], q[sel]
            s = np.argsort(pos)
            pos, ups = pos[s], ups[s]
            new = _combine(red, _pick(cx, out, pos), _pick(cx, uf, ups))
            src = np.arange(d)
            src[pos] = d + np.arange(pos.size)
            out = _pick(cx, dsl.apply("concat", out, new, axis=ax), src)
    return _reshape(cx, out, tuple(x.shape))


def _scatter_elements(cx: NodeContext) -> list[Value]:
    """ScatterElements (torch.scatter, scatter_add, scatter_reduce; opset 9's Scatter):
    data [d_0 .. d_{r-1}], indices and updates of one shape, data's rank, each dimension at
    most data's: out = data, then for each index position k (row-major) the element of axis
    ``axis`` named by indices[k] takes updates[k] (or f(it, updates[k])). See the module's
    docstring for the two forms; refused naming the node: indices of the wrong rank or shape,
    one out of range, constant indices into a value with N, computed indices along N."""
    red = _reduction(cx)
    idx_v = cx.value(1)
    data_v, upd_v = cx.value(0), cx.value(2)
    shape = tuple(data_v.shape)
    axis = _axis(cx, int(cx.attr("axis", 0)), len(shape))
    if tuple(upd_v.shape) != tuple(idx_v.shape):
        cx.fail(f"updates {_fmt(upd_v.shape)} and indices {_fmt(idx_v.shape)} differ in shape")
    if isinstance(idx_v, np.ndarray):
        _no_batch(cx, shape)
        pairs = _elements_pairs(cx, shape, idx_v, axis)
        out = _scatter_constant(cx, cx.x(0), cx.x(2), pairs, red)
    else:
        out = _scatter_computed(cx, cx.x(0), cx.x(1), cx.x(2), axis, red)
    if id(cx.x(0)) in cx.imp.integral and id(cx.x(2)) in cx.imp.integral and red != "mul":
        cx.imp.integral.add(id(out))
    return [out]


def _scatter_computed(
    cx: NodeContext, x: Tensor, idx: Tensor, u: Tensor, axis: int, red: str
) -> Tensor:
    """ScatterElements with indices computed in the graph: hit[.., k, j, ..] = [idx_k == j]
    along ``axis``; a plain write takes, per position j, the update of the last k that hits it
    (k + 1 == max over k of (k + 1) * hit); a reduction combines every hitting update (sum,
    product, max, min over k; positions no index hits keep data's value)."""
    r = len(x.shape)
    if x.shape[axis] == "N" or (axis == 0 and "N" in x.shape):
        cx.fail(f"ScatterElements along the batch dimension N of {_fmt(x.shape)}")
    if id(idx) not in cx.imp.integral:
        cx.fail("indices computed in float: ScatterElements needs integer indices")
    if len(idx.shape) != r:
        cx.fail(f"indices {_fmt(idx.shape)} must have data's rank ({_fmt(x.shape)})")
    for j in range(r):
        if j != axis and idx.shape[j] != x.shape[j]:
            if not isinstance(idx.shape[j], int) or not isinstance(x.shape[j], int):
                cx.fail(f"indices {_fmt(idx.shape)} do not fit data {_fmt(x.shape)}")
            if idx.shape[j] > x.shape[j]:
                cx.fail(f"indices {_fmt(idx.shape)} do not fit data {_fmt(x.shape)}")
    size, k = int(x.shape[axis]), int(idx.shape[axis])
    hit = _index_hits(cx, idx, size, axis)
    zero = dsl.const(0.0)
    ishape = tuple(idx.shape)
    trail = (1,) * (r - axis - 1)
    wide = _reshape(cx, u, (*ishape[: axis + 1], 1, *ishape[axis + 1 :]))  # [.., k, 1, ..]
    any_hit = dsl.apply("greater", dsl.apply("max", hit, axes=(axis,)), zero)
    if red == "none":
        ranks = np.arange(1, k + 1, dtype=np.float32).reshape((k, 1, *trail))
        rank = dsl.apply(
            "where", hit, cx.imp.constant_tensor(f"scatter_rank_{k}", ranks, cx, False), zero
        )
        top = dsl.apply("max", rank, axes=(axis,), keepdims=True)
        last = dsl.apply("where", hit, dsl.apply("equal", rank, top), zero)
        vals = dsl.sum(dsl.apply("where", last, wide, zero), axes=axis)
    elif red == "add":
        vals = dsl.sum(dsl.apply("where", hit, wide, zero), axes=axis)
    elif red == "mul":
        picked = dsl.apply("where", hit, wide, dsl.const(1.0))
        prod = None
        for j in range(k):
            part = dsl.apply("slice", picked, axes=(axis,), starts=(j,), ends=(j + 1,))
            prod = part if prod is None else prod * part
        assert prod is not None
        vals = _reshape(cx, prod, tuple(d for a, d in enumerate(picked.shape) if a != axis))
    else:
        big = dsl.const(-math.inf if red == "max" else math.inf)
        vals = dsl.apply(red, dsl.apply("where", hit, wide, big), axes=(axis,))
    pad = [(j, int(x.shape[j]) - int(ishape[j])) for j in range(r) if x.shape[j] != ishape[j]]
    pad = [(j, w) for j, w in pad if j != axis]
    if pad:  # the indices cover a leading block of data's other axes: the rest stays
        axes, after = tuple(j for j, _ in pad), tuple(w for _, w in pad)
        vals = dsl.apply("pad", vals, axes=axes, before=(0,) * len(pad), after=after)
        any_hit = dsl.apply("pad", any_hit, axes=axes, before=(0,) * len(pad), after=after)
    return dsl.apply("where", any_hit, vals if red == "none" else _combine(red, x, vals), x)


def _scatter_nd(cx: NodeContext) -> list[Value]:
    """ScatterND (torch's index_put and slice assignment with constant indices): data of rank
    r, indices [..., q] (1 <= q <= r) whose last axis is a position in data's first q axes,
    updates indices.shape[:-1] + data.shape[q:]: out = data, then for each index tuple
    (row-major) the slice data[i_0, ..., i_{q-1}] takes its update (or f(it, update)). The
    indices must be known at import time and data must not hold the batch dimension N;
    otherwise refused naming the node."""
    red = _reduction(cx)
    if cx.node.output[0] in cx.imp.per_sample and isinstance(cx.value(1), Tensor):
        return _scatter_nd_rows_computed(cx, red)
    if cx.node.output[0] in cx.imp.per_sample:
        return _scatter_nd_per_sample(cx, red)
    idx_v = cx.value(1)
    data_v, upd_v = cx.value(0), cx.value(2)
    if not isinstance(idx_v, np.ndarray):
        cx.fail(
            "indices computed in the graph: graphc scatters ScatterND updates at indices known "
            "at import time only"
        )
    _no_batch(cx, tuple(data_v.shape))
    pairs = _nd_pairs(cx, tuple(data_v.shape), idx_v, tuple(upd_v.shape))
    out = _scatter_constant(cx, cx.x(0), cx.x(2), pairs, red)
    if id(cx.x(0)) in cx.imp.integral and id(cx.x(2)) in cx.imp.integral and red != "mul":
        cx.imp.integral.add(id(out))
    return [out]


def _fold_scatter_elements(cx: NodeContext, args: list) -> list:
    data, idx, upd = (np.asarray(a) for a in args[:3])
    if upd.shape != idx.shape:
        cx.fail(f"updates {_fmt(upd.shape)} and indices {_fmt(idx.shape)} differ in shape")
    axis = _axis(cx, int(cx.attr("axis", 0)), data.ndim)
    return [_scatter_numpy(data, upd, _elements_pairs(cx, data.shape, idx, axis), _reduction(cx))]


def _fold_scatter_nd(cx: NodeContext, args: list) -> list:
    data, idx, upd = (np.asarray(a) for a in args[:3])
    return [_scatter_numpy(data, upd, _nd_pairs(cx, data.shape, idx, upd.shape), _reduction(cx))]


# ---------------------------------------------------------------- per-sample ScatterND

MAX_INDEX_NODES = 256  # the largest index computation batch_scatters evaluates


def batch_scatters(model: Any) -> tuple[Any, set[str]]:
    """See ``_batch_scatters``; a model it cannot read is returned as it is."""
    try:
        return _batch_scatters(model)
    except Exception:  # a malformed file, or an index computation onnx.reference cannot run
        return model, set()


def _batch_scatters(model: Any) -> tuple[Any, set[str]]:
    """The model with torch's per-sample ScatterND written as one graphc can compile. torch's
    TorchScript export of index_put and slice assignment on a batched tensor (``y[:, 0] = v``,
    ``y[:, :, 1:3] = v``, ``y[:, [0, 2]] = v``) builds the indices from Range(0, N) (the batch
    row) and constants, through Shape, Expand, Reshape, Unsqueeze and Concat: indices
    [N, ..., q] whose first column is each sample's own row. Such a ScatterND (indices computed
    from shapes only: no value of an input reaches them except through Shape) has its index
    computation evaluated with onnx.reference at batch sizes 2 and 3; where the first column
    is the row n and the other columns are the same for every row and both sizes, the node
    reads the indices of row 0 instead (an initializer [1, ..., q]) and its output is in the
    returned set: the importer (``Importer.per_sample``, held in memory, never read from a
    file) converts it per sample, _scatter_nd_per_sample. The Shapes of the index computation
    become Concats of N (Shape of a batched input) and constants, so that the Range over N
    is no longer needed (the import skips what nothing reads). Anything else leaves the model
    as it is (the import then refuses the Range over N, naming it). The caller's ModelProto
    is not changed. Returns (the model, the outputs of the per-sample ScatterNDs)."""
    onnx = require_onnx()
    g = model.graph
    nodes = list(g.node)
    targets = [
        i
        for i, n in enumerate(nodes)
        if n.op_type == "ScatterND" and n.domain in ("", "ai.onnx") and len(n.input) == 3
    ]
    if not targets:
        return model, set()
    inits = {t.name: t for t in g.initializer}
    inputs = {vi.name: vi for vi in g.input if vi.name not in inits}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    tainted = set(inputs)  # values that an input's values (not only its shape) reach
    for n in nodes:
        if n.op_type == "Shape" and n.domain in ("", "ai.onnx"):
            continue
        if any(a.type in (5, 10) for a in n.attribute) or any(v in tainted for v in n.input):
            tainted.update(n.output)  # (a subgraph attribute may read anything)
    rewrites: dict[int, Any] = {}
    reshaped: dict[int, list] = {}  # Shape nodes rewritten: N (None) or a constant per entry
    marked: set[str] = set()
    known: dict[int, dict[str, list[int]]] | None = None  # inferred shapes at batch 2 and 3
    added = []
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    ref = next(  # a batched input: its Shape gives N
        (
            v
            for v, vi in inputs.items()
            if vi.type.HasField("tensor_type")
            and vi.type.tensor_type.shape.dim
            and not vi.type.tensor_type.shape.dim[0].HasField("dim_value")
        ),
        None,
    )
    for i in targets:
        n = nodes[i]
        idx = n.input[1]
        if idx in inits or idx not in producer:
            continue
        if known is None:
            known = {b: _inferred_shapes(onnx, model, b) for b in (2, 3)}
        if idx in tainted:  # (an index column computed from an input's values)
            plan = _computed_columns(onnx, g, nodes, i, producer, tainted, known, inputs, opsets)
            if plan is not None and (ref is not None or not plan[2]):
                j, concat, forms = plan
                rewrites[j] = concat
                reshaped.update((k, f) for k, f in forms.items() if k not in reshaped)
                marked.add(n.output[0])
            continue
        seen = index_computation(nodes, producer, idx, known)
        if len(seen) > MAX_INDEX_NODES or not any(nodes[j].op_type == "Shape" for j in seen):
            continue
        part = [nodes[j] for j in sorted(seen)]
        shapes = [j for j in sorted(seen) if nodes[j].op_type == "Shape" and j not in reshaped]
        want = [idx] + [nodes[j].output[0] for j in shapes]
        got = [_evaluate(onnx, g, part, want, inputs, b, opsets, known[b]) for b in (2, 3)]
        if got[0] is None or got[1] is None:
            continue
        per = [_per_sample(v[0], b) for v, b in zip(got, (2, 3))]
        if per[0] is None or per[1] is None or not np.array_equal(per[0], per[1]):
            continue
        # the Shapes of the index computation (torch's also shape the updates): written from
        # the batch size N (Shape of a batched input) and constants, so that the Range over N
        # they read is no longer needed
        forms = [_shape_form(a, c) for a, c in zip(got[0][1:], got[1][1:])]
        if any(f is None for f in forms) or (ref is None and shapes):
            continue
        for j, form in zip(shapes, forms):
            reshaped[j] = form
        name = f"{idx}__row_0"
        while name in inits or name in producer:
            name += "_"
        added.append(onnx.numpy_helper.from_array(got[0][0][:1].astype(np.int64), name))
        node = onnx.NodeProto()
        node.CopyFrom(n)
        node.input[1] = name
        rewrites[i] = node
        marked.add(n.output[0])
    if not rewrites:
        return model, set()
    taken = set(producer) | set(inits) | set(inputs)

    def fresh(base: str) -> str:
        while base in taken:
            base += "_"
        taken.add(base)
        return base

    n_vec = fresh("graphc__batch_size")
    front = []
    if reshaped:
        s_ref = fresh("graphc__batch_shape")
        one = fresh("graphc__zero_one")
        added.append(onnx.numpy_helper.from_array(np.array([0, 1], np.int64), one))
        front = [
            onnx.helper.make_node("Shape", [ref], [s_ref]),
            onnx.helper.make_node("Slice", [s_ref, one + "_0", one + "_1"], [n_vec]),
        ]
        added.append(onnx.numpy_helper.from_array(np.array([0], np.int64), one + "_0"))
        added.append(onnx.numpy_helper.from_array(np.array([1], np.int64), one + "_1"))
    for j, form in reshaped.items():
        pieces = []
        for k, v in enumerate(form):
            if v is None:
                pieces.append(n_vec)
            else:
                c = fresh(f"{nodes[j].output[0]}__{k}")
                added.append(onnx.numpy_helper.from_array(np.array([v], np.int64), c))
                pieces.append(c)
        rewrites[j] = onnx.helper.make_node(
            "Concat", pieces, list(nodes[j].output), name=nodes[j].name, axis=0
        )
    out = with_nodes(model, rewrites)
    for k, node in enumerate(front):
        out.graph.node.insert(k, node)
    out.graph.initializer.extend(added)
    return out, marked


# the operands that give an operator's output shape (not its values): an input's values
# must not reach them in an index computation _computed_columns evaluates
_SHAPE_OPERANDS = {
    "Range": (0, 1, 2),
    "Reshape": (1,),
    "Expand": (1,),
    "ConstantOfShape": (0,),
    "Slice": (1, 2, 3, 4),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Where": (),
    "Gather": (),
}


def _computed_columns(
    onnx: Any,
    g: Any,
    nodes: list,
    i: int,
    producer: dict[str, int],
    tainted: set[str],
    known: dict[int, dict[str, list[int]]],
    inputs: dict,
    opsets: list,
) -> tuple[int, Any, dict[int, list]] | None:
    """torch's index_put on a batched tensor at a position read from an input (a cache written
    at ``pos``: ``c[:, :, pos] = k``): ScatterND node i's indices are Concat(rows, columns...,
    axis=-1) where the first part (not computed from an input's values) is each sample's row
    n (checked with onnx.reference at batch sizes 2 and 3) and the other parts are computed in
    the graph. Returns (the Concat's node number, the Concat of the other parts: each sample's
    own index tuples [N, k.., q - 1], the Shapes of the index computation as batch_scatters
    writes them: N and constants), or None where this is not that form."""
    idx = nodes[i].input[1]
    j = producer[idx]
    cat = nodes[j]
    if cat.op_type != "Concat" or cat.domain not in ("", "ai.onnx") or len(cat.input) < 2:
        return None
    axis = next((int(a.i) for a in cat.attribute if a.name == "axis"), None)
    if sum(v == idx for n in nodes for v in n.input) != 1 or idx in {o.name for o in g.output}:
        return None  # (the Concat is rewritten: nothing else may read it)
    first = cat.input[0]
    if first in tainted or first not in producer:
        return None
    seen, stack = set(), [j]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        n = nodes[k]
        # an input's values may give index values, never a shape: a Shape evaluated with
        # zeros for the inputs (below) then holds for every value
        if any(
            v in tainted for p, v in enumerate(n.input) if p in _SHAPE_OPERANDS.get(n.op_type, ())
        ):
            return None
        if n.op_type == "Shape" and all(n.input[0] in kn for kn in known.values()):
            continue
        stack += [producer[v] for v in n.input if v in producer]
    if len(seen) > MAX_INDEX_NODES:
        return None
    shapes = [k for k in sorted(seen) if nodes[k].op_type == "Shape"]
    if any(len(nodes[k].attribute) for k in shapes):
        return None
    want = [first] + [nodes[k].output[0] for k in shapes]
    part = [nodes[k] for k in sorted(seen)]
    got = [_evaluate(onnx, g, part, want, inputs, b, opsets, known[b]) for b in (2, 3)]
    if got[0] is None or got[1] is None:
        return None
    for b, values in zip((2, 3), got):
        a = values[0]
        if a.ndim < 2 or a.shape[0] != b or a.shape[-1] != 1 or a.dtype.kind not in "iu":
            return None
        if axis not in (-1, a.ndim - 1):
            return None
        rows = np.arange(b).reshape((b,) + (1,) * (a.ndim - 1))
        if not np.array_equal(a, np.broadcast_to(rows, a.shape)):
            return None
    forms: dict[int, list] = {}
    for k, u, v in zip(shapes, got[0][1:], got[1][1:]):
        form = _shape_form(u, v)
        if form is None:
            return None
        forms[k] = form
    new = onnx.NodeProto()
    new.CopyFrom(cat)
    del new.input[:]
    new.input.extend(cat.input[1:])
    return j, new, forms


# the operators an index computation may use for batch_scatters to evaluate it, and the most
# elements any of its values may hold (a hostile file's index computation allocates no more)
INDEX_OPS = frozenset(
    [
        "Shape",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Cast",
        "Range",
        "Reshape",
        "Expand",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Equal",
        "Where",
        "Slice",
        "Identity",
        "Less",
        "Greater",
        "Not",
        "Neg",
        "Mod",
        "Flatten",
        "Size",
        "Max",
        "Min",
        "Transpose",
    ]
)
MAX_INDEX_ELEMENTS = 1 << 20


def index_computation(
    nodes: list, producer: dict[str, int], value: str, known: dict[int, dict[str, list[int]]]
) -> set[int]:
    """The numbers of the nodes that compute ``value`` (``producer``: value name -> node
    number), back to initializers, inputs and the Shapes of values whose shape ``known`` (shape
    inference at each batch size) holds."""
    seen, stack = set(), [producer[value]]
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if nodes[j].op_type == "Shape" and all(nodes[j].input[0] in k for k in known.values()):
            continue  # its input's shape is inferred: no need to compute the input
        stack += [producer[v] for v in nodes[j].input if v in producer]
    return seen


def _inferred_shapes(onnx: Any, model: Any, b: int) -> dict[str, list[int]]:
    """The shapes onnx's shape inference gives every value of ``model`` with batch size
    ``b`` (the first dimension of each input that has a symbolic one), where fully known."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        if vi.name not in inits and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = b
    try:
        g = onnx.shape_inference.infer_shapes(m, data_prop=True).graph
    except Exception:
        return {}
    out = {}
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                out[vi.name] = [int(d.dim_value) for d in dims]
    return out


def _evaluate(
    onnx: Any,
    g: Any,
    nodes: list,
    values: list,
    inputs: dict,
    b: int,
    opsets: list,
    known: dict[str, list[int]],
) -> list | None:
    """``values`` computed by ``nodes`` one at a time (onnx.reference) for inputs of batch
    size ``b`` (zeros: only their shapes matter; a Shape of a value whose shape inference
    knows, ``known``, from that), or None where an input's other dimensions
    are not fixed, a node is not of INDEX_OPS, or a value would hold more than
    MAX_INDEX_ELEMENTS elements (checked before the node that makes it runs)."""
    from onnx.reference import ReferenceEvaluator

    version = {o.domain or "": int(o.version) for o in opsets}
    env: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if t.name in {v for n in nodes for v in n.input}:
            if math.prod(t.dims) > MAX_INDEX_ELEMENTS or t.data_location == 1:
                return None
            env[t.name] = onnx.numpy_helper.to_array(t)
    for name, vi in inputs.items():
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not dims or any(d is None for d in dims[1:]):
            continue
        lead = b if dims[0] is None else dims[0]  # (a fixed first dimension stays)
        if lead * math.prod(dims[1:]) > MAX_INDEX_ELEMENTS:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        env[name] = np.zeros([lead, *dims[1:]], dtype)
    for n in nodes:
        if n.op_type not in INDEX_OPS or n.domain not in ("", "ai.onnx"):
            return None
        if n.op_type == "Shape" and n.input[0] not in env and n.input[0] in known:
            attrs = {a.name: a.i for a in n.attribute}
            dims = known[n.input[0]]
            env[n.output[0]] = np.array(
                dims[slice(attrs.get("start", 0), attrs.get("end"))], np.int64
            )
            continue
        args = [env.get(v) if v else None for v in n.input]
        if any(v and v not in env for v in n.input):
            return None
        if _too_big(n.op_type, args):
            return None
        outs = ReferenceEvaluator(n, opsets=version).run(
            None, {v: a for v, a in zip(n.input, args) if v}
        )
        for name, a in zip(n.output, outs):
            a = np.asarray(a)
            if a.size > MAX_INDEX_ELEMENTS:
                return None
            env[name] = a
    return [env[v] for v in values]


def _too_big(op: str, args: list) -> bool:
    """Whether the node would make more than MAX_INDEX_ELEMENTS elements (ConstantOfShape,
    Expand, Range: the sizes their operands ask for)."""
    try:
        if op == "ConstantOfShape":
            size = math.prod(int(d) for d in np.ravel(args[0]))
        elif op == "Expand":
            shape = np.broadcast_shapes(args[0].shape, tuple(int(d) for d in np.ravel(args[1])))
            size = math.prod(shape)
        elif op == "Range":
            start, limit, delta = (float(np.ravel(a)[0]) for a in args[:3])
            size = int(abs((limit - start) / delta)) + 1 if delta else MAX_INDEX_ELEMENTS + 1
        else:
            return False
    except (ValueError, TypeError, IndexError, OverflowError):
        return True
    return size > MAX_INDEX_ELEMENTS


def _shape_form(a: np.ndarray, c: np.ndarray) -> list | None:
    """A shape vector evaluated at batch sizes 2 (``a``) and 3 (``c``) as entries N (None:
    2 and 3) and constants (equal in both); None if it is neither."""
    if a.ndim != 1 or a.shape != c.shape:
        return None
    form: list = []
    for u, v in zip(a.tolist(), c.tolist()):
        if (u, v) == (2, 3):
            form.append(None)
        elif u == v:
            form.append(int(u))
        else:
            return None
    return form


def _per_sample(idx: np.ndarray, b: int) -> np.ndarray | None:
    """The columns after the first of indices [b, ..., q] whose first column is the row n
    and whose other columns are the same in every row; else None."""
    if idx.ndim < 2 or idx.shape[0] != b or idx.dtype.kind not in "iu":
        return None
    rows = np.arange(b).reshape((b,) + (1,) * (idx.ndim - 2))
    if not np.array_equal(idx[..., 0], np.broadcast_to(rows, idx.shape[:-1])):
        return None
    rest = idx[..., 1:]
    if not (rest == rest[:1]).all():
        return None
    return rest[0]


def _scatter_nd_per_sample(cx: NodeContext, red: str) -> list[Value]:
    """ScatterND whose indices name each sample's own row (batch_scatters: torch's index_put
    on a batched tensor; the node reads row 0's indices [1, k_1 .. k_m, q]): data [N, s_1 ..
    s_r], the per-sample indices [k_1 .. k_m, q - 1] into s (q = 1 replaces whole samples),
    updates [N, k_1 .. k_m, s_q ..]: in each sample, the scatter of _scatter_nd, as moves
    along the sample's flattened elements."""
    x, u = cx.x(0), cx.x(2)
    sub = np.asarray(cx.c(1))[0, ..., 1:]
    if x.shape[0] != "N" or u.shape[0] != "N":
        cx.fail(f"data {_fmt(x.shape)} and updates {_fmt(u.shape)} must lead with N")
    sample = tuple(x.shape[1:])
    if sub.shape[-1] == 0:  # whole samples: every index tuple names the sample itself
        inner = math.prod(int(d) for d in sample)
        count = math.prod(sub.shape[:-1])
        if tuple(u.shape[1:]) != (*sub.shape[:-1], *sample):
            cx.fail(f"updates {_fmt(u.shape)} do not fit data {_fmt(x.shape)}")
        p = np.tile(np.arange(inner), count)
        pairs = np.stack([p, np.arange(p.size)], axis=1)
    else:
        pairs = _nd_pairs(cx, sample, sub, tuple(u.shape[1:]))
    return [_scatter_constant(cx, x, u, pairs, red, batched=True)]


def _scatter_nd_rows_computed(cx: NodeContext, red: str) -> list[Value]:
    """ScatterND whose indices name each sample's own row and, after it, positions computed in
    the graph (batch_scatters / _computed_columns: the node reads those columns [N, k_1 ..
    k_m, q - 1]): data [N, s_1 .. s_r], updates [N, k_1 .. k_m, s_q ..]. In each sample the
    index tuple (i_1 .. i_{q-1}) names the slice at flat position f = sum i_c * stride_c of
    the first q - 1 axes; each i_c must lie in 0 .. s_c - 1 (proven, or checked at run time
    naming the input and row: a negative position, which ONNX Runtime takes from the end, is
    refused); then ScatterElements' comparison of computed indices along the slices (the last
    write wins where two tuples are equal, as ONNX Runtime; add / mul / max / min combine)."""
    x, loc, u = cx.x(0), cx.x(1), cx.x(2)
    if x.shape[0] != "N" or loc.shape[0] != "N" or u.shape[0] != "N":
        cx.fail(f"data {_fmt(x.shape)}, indices and updates must lead with N")
    if id(loc) not in cx.imp.integral:
        cx.fail("indices computed in float: ScatterND needs integer indices")
    sample = tuple(int(d) for d in x.shape[1:])
    q = int(loc.shape[-1])
    lead = tuple(int(d) for d in loc.shape[1:-1])
    if not 1 <= q <= len(sample) or tuple(u.shape[1:]) != (*lead, *sample[q:]):
        cx.fail(
            f"indices {_fmt(loc.shape)} (each sample's tuples) and updates {_fmt(u.shape)} do "
            f"not fit data {_fmt(x.shape)}"
        )
    k, slices, inner = math.prod(lead), math.prod(sample[:q]), math.prod(sample[q:])
    # the columns from the Concat's parts (each proven or checked on its own: a range
    # requirement on a column of the joined value would bind every column)
    cat = next(n for n in cx.imp.graph.node if cx.node.input[1] in n.output)
    cols = []
    for name in cat.input:
        part = cx.imp.lookup(name, cx)
        if not isinstance(part, Tensor) or len(part.shape) != len(loc.shape):
            cx.fail(f"index part {name!r} is not a computed tensor of the indices' rank")
        for c in range(int(part.shape[-1])):
            a = len(part.shape) - 1
            col = dsl.apply("slice", part, axes=(a,), starts=(c,), ends=(c + 1,))
            cols.append(_reshape(cx, col, ("N", k)))  # (Concat's parts: the indices' shape)
    if len(cols) != q:
        cx.fail(f"its index parts give {len(cols)} columns; the indices have {q}")
    flat = None
    for c, col in enumerate(cols):
        cx.imp.integral.add(id(col))
        size = sample[c]
        cx.imp.lookups.append((col, (-size, size - 1), cx.where()))
        # a negative position counts from the end, as ONNX Runtime's
        col = dsl.apply("where", dsl.apply("less", col, dsl.const(0.0)), col + float(size), col)
        term = col * float(math.prod(sample[c + 1 : q]))
        flat = term if flat is None else flat + term
    assert flat is not None
    if k <= MAX_SCATTER_TUPLES and k * slices * inner <= MAX_SCATTER_WORK:
        out = _scatter_slices(
            cx, _reshape(cx, x, ("N", slices, inner)), flat, _reshape(cx, u, ("N", k, inner)), red
        )
        return [_reshape(cx, out, ("N", *sample))]
    zeros = cx.imp.constant_tensor(
        f"scatter_nd_zeros_{inner}", np.zeros((1, 1, inner), np.float32), cx, False
    )
    idx = _reshape(cx, flat, ("N", k, 1)) + zeros  # [N, k, inner]: each slice's elements
    cx.imp.integral.add(id(idx))
    out = _scatter_computed(
        cx, _reshape(cx, x, ("N", slices, inner)), idx, _reshape(cx, u, ("N", k, inner)), 1, red
    )
    return [_reshape(cx, out, ("N", *sample))]


MAX_SCATTER_TUPLES = 256  # index tuples per sample _scatter_slices writes one by one
MAX_SCATTER_WORK = 1 << 24  # tuples x data elements per sample it selects over


def _scatter_slices(cx: NodeContext, x: Tensor, flat: Tensor, u: Tensor, red: str) -> Tensor:
    """Each sample's slices x [N, S, inner] written by k index tuples at computed slice
    positions flat [N, k] (whole numbers in 0 .. S - 1) with updates u [N, k, inner], one
    tuple after the other as ONNX Runtime applies them (the last write wins where two tuples
    are equal; add / mul / max / min combine with what is there): a tuple's position is
    compared with the S slice positions only, and the slice it names is selected whole
    (where), k x S comparisons and k selections over the data per sample, so that a KV cache
    of 8 heads x 128 steps x 64 written at one step (k = 8, S = 1024) imports."""
    slices = int(x.shape[1])
    pos = cx.imp.constant_tensor(
        f"scatter_slice_positions_{slices}",
        np.arange(slices, dtype=np.float32).reshape(1, slices, 1),
        cx,
        False,
    )
    out = x
    for j in range(int(flat.shape[1])):
        at = dsl.apply("slice", flat, axes=(1,), starts=(j,), ends=(j + 1,))
        hit = dsl.apply("equal", _reshape(cx, at, ("N", 1, 1)), pos)  # [N, S, 1]
        v = dsl.apply("slice", u, axes=(1,), starts=(j,), ends=(j + 1,))  # [N, 1, inner]
        out = dsl.apply("where", hit, v if red == "none" else _combine(red, out, v), out)
    return out


# ---------------------------------------------------------------- GridSample

GRID_MODES = {16: ("bilinear", "nearest", "bicubic"), 20: ("linear", "nearest", "cubic")}
MAX_GRID_PRODUCTS = 1 << 22  # C x outputs x input positions multiplied per sample
_CUBIC_A = -0.75  # ONNX Runtime's and torch's bicubic (Keys, a = -0.75)


def _grid_taps(
    cx: NodeContext, c: Tensor, length: int, mode: str, padding: str, align: bool
) -> Tensor:
    """A[.., j] = sum over the taps t of w_t * [m_t == j] (j < length): the weight of input
    position j in the sample at coordinate c (pixels, ONNX Runtime's order of operations):
    nearest one tap at nearbyint(c); linear floor(c) and floor(c) + 1 with weights 1 - (c -
    floor(c)) and c - floor(c); cubic floor(c) - 1 .. floor(c) + 2 with Keys' coefficients
    (a = -0.75) of c - floor(c). Each tap's index is padded as ONNX Runtime pads it: zeros
    keeps it (no j matches outside, so it reads 0), border clamps it to 0 .. length - 1,
    reflection reflects it about the borders (-0.5 and length - 0.5, or 0 and length - 1 with
    align_corners) until it lies inside."""
    if mode == "nearest":
        taps = [(_nearest_integer(c), None)]
    else:
        f = _integral_part(cx, c, -1)
        t = c - f
        if mode == "linear":
            taps = [(f, (f + 1.0) - c), (f + 1.0, t)]
        else:
            a = _CUBIC_A
            u, v, w = t + 1.0, 1.0 - t, 2.0 - t
            coeffs = [
                ((u * a - 5 * a) * u + 8 * a) * u - 4 * a,
                ((t * (a + 2)) - (a + 3)) * t * t + 1.0,
                ((v * (a + 2)) - (a + 3)) * v * v + 1.0,
                ((w * a - 5 * a) * w + 8 * a) * w - 4 * a,
            ]
            taps = [(f + float(k - 1), coeffs[k]) for k in range(4)]
    pos = cx.imp.constant_tensor(
        f"grid_positions_{length}", np.arange(length, dtype=np.float32), cx, False
    )
    zero = dsl.const(0.0)
    total = None
    for k, w in taps:
        m = _pad_index(cx, k, length, padding, align)
        col = _reshape(cx, m, (*m.shape, 1))
        hit = dsl.apply("equal", col, pos)
        term = hit if w is None else dsl.apply("where", hit, _reshape(cx, w, (*w.shape, 1)), zero)
        total = term if total is None else total + term
    assert total is not None
    return total


def _pad_index(cx: NodeContext, k: Tensor, length: int, padding: str, align: bool) -> Tensor:
    """Integer-valued tap ``k`` moved inside 0 .. length - 1 by the padding mode (zeros: as it
    is). Reflection of an integer about -0.5 and L - 0.5 repeats with period 2L (m = k mod 2L,
    then 2L - 1 - m past L - 1); about 0 and L - 1 with period 2(L - 1) (m, then 2(L - 1) - m):
    ONNX Runtime's GsReflect for every integer k (checked for L up to 6, k in -40 .. 39)."""
    if padding == "zeros":
        return k
    if padding == "border":
        return -dsl.maximum(-dsl.maximum(k, 0.0), -float(length - 1))
    if align and length == 1:
        return k * 0.0
    period = 2 * (length - 1) if align else 2 * length
    m = k - _integral_part(cx, k / float(period), -1) * float(period)
    last = float(length - 1)
    back = (float(period) - m) if align else (float(period - 1) - m)
    return dsl.apply("where", dsl.apply("greater", m, dsl.const(last)), back, m)


def _grid_sample(cx: NodeContext) -> list[Value]:
    """GridSample (torch's F.grid_sample; spatial transformers): X [N, C, d_1 .. d_r] (r 2 or
    3), grid [N, o_1 .. o_r, r] of normalized positions (-1 .. 1 spans the input: the centres
    of the corner pixels with align_corners, their outer edges without; grid[..., 0] is along
    the last axis), Y [N, C, o_1 .. o_r]: Y[n, c, o] = sum over input positions j of
    X[n, c, j] * prod_i A_i[n, o, j_i] (_grid_taps: the interpolation weights per axis with
    the padding applied to each tap's index, as ONNX Runtime's CPU kernel). Modes nearest,
    linear / bilinear, cubic / bicubic (2-D only, as ONNX Runtime); padding_mode zeros, border,
    reflection; align_corners 0 or 1. The grid may be computed from the inputs (AffineGrid of
    a predicted theta): the gradient reaches X and, through the linear and cubic weights, the
    grid (the tap indices are piecewise constant). Cost: C x outputs x input positions
    products per sample, at most MAX_GRID_PRODUCTS; refused naming the node beyond it, for X
    and grid of different batch sizes, and for a mode the opset does not name."""
    x, g = cx.x(0), cx.x(1)
    r = len(x.shape) - 2
    if r not in (2, 3) or len(g.shape) != r + 2 or g.shape[-1] != r:
        cx.fail(
            f"X {_fmt(x.shape)} and grid {_fmt(g.shape)}: graphc samples 2-D ([N, C, H, W] with "
            "a grid [N, H_out, W_out, 2]) and 3-D inputs"
        )
    if x.shape[0] != g.shape[0]:
        cx.fail(f"X {_fmt(x.shape)} and grid {_fmt(g.shape)} differ in their batch size")
    names = GRID_MODES[20 if cx.version >= 20 else 16]
    mode = str(cx.attr("mode", names[0]))
    if mode not in names:
        cx.fail(f"mode {mode!r} is not one of {', '.join(names)} at opset {cx.version}")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    padding = str(cx.attr("padding_mode", "zeros"))
    if padding not in ("zeros", "border", "reflection"):
        cx.fail(f"padding_mode {padding!r} is not one of zeros, border, reflection")
    if mode == "cubic" and r == 3:
        cx.fail("cubic sampling of a 3-D input (ONNX Runtime refuses it too)")
    align = bool(cx.attr("align_corners", 0))
    n, ch = x.shape[0], int(x.shape[1])
    sizes = [int(d) for d in x.shape[2:]]
    outs = [int(d) for d in g.shape[1:-1]]
    p = math.prod(outs)
    if ch * p * math.prod(sizes) > MAX_GRID_PRODUCTS:
        cx.fail(
            f"sampling {_fmt(x.shape)} at {p} positions: {ch * p * math.prod(sizes)} products "
            f"per sample (graphc computes GridSample densely, at most {MAX_GRID_PRODUCTS})"
        )
    flat = _reshape(cx, g, (n, p, r))
    v = _reshape(cx, x, (n, ch, 1, *sizes))  # [N, C, P (broadcast), d_1 .. d_r]
    for i, length in enumerate(sizes):
        comp = dsl.apply("slice", flat, axes=(2,), starts=(r - 1 - i,), ends=(r - i,))
        gc_ = _reshape(cx, comp, (n, p))
        if align:
            c = (gc_ + 1.0) / 2.0 * float(length - 1)
        else:
            c = ((gc_ + 1.0) * float(length) - 1.0) / 2.0
        a = _grid_taps(cx, c, length, mode, padding, align)  # [N, P, L]
        rest = len(sizes) - i - 1
        a = _reshape(cx, a, (n, 1, p, length, *(1,) * rest))
        v = dsl.sum(v * a, axes=3)
    return [_reshape(cx, v, (n, ch, *outs))]


def _affine_base(cx: NodeContext, size: Any) -> tuple[list[int], np.ndarray]:
    """AffineGrid's spatial sizes (size[2:]) and its base grid [P, r + 1] in ONNX Runtime's
    form: per axis linspace(-1, 1, L), times (L - 1) / L without align_corners (the pixel
    centres); the columns are x (last axis), y, (z), then 1."""
    sz = np.ravel(np.asarray(size, dtype=object))
    if sz.size not in (4, 5):
        cx.fail(f"size has {sz.size} entries: AffineGrid takes [N, C, H, W] or [N, C, D, H, W]")
    try:
        dims = [int(d) for d in sz[2:]]
    except (TypeError, ValueError):
        cx.fail(f"size {list(sz)}: graphc needs the spatial sizes known at import time")
    if min(dims) < 1:
        cx.fail(f"size {list(sz)}: graphc has no dimension of size 0")
    align = bool(cx.attr("align_corners", 0))
    axes = []
    for n in dims:
        v = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        axes.append(v if align else (v * np.float32(n - 1) / np.float32(n)).astype(np.float32))
    mesh = np.meshgrid(*axes, indexing="ij")  # D, H, W order
    cols = [m.reshape(-1) for m in mesh[::-1]]  # x first
    base = np.stack([*cols, np.ones_like(cols[0])], axis=1).astype(np.float32)
    return dims, base


def _affine_grid(cx: NodeContext) -> list[Value]:
    """AffineGrid (opset 20; torch's F.affine_grid): theta [N, r, r + 1] (r 2 or 3), size
    [N, C, d_1 .. d_r] known at import time (its N may be the symbolic batch size) -> grid
    [N, d_1 .. d_r, r] with grid[n, p, :] = theta[n] @ (x_p, y_p, (z_p), 1) over the base grid
    of _affine_base (the spec's formula, in ONNX Runtime's float32 base). A broadcast product
    and a sum; the gradient reaches theta. Refused naming the node: theta of another shape, a
    size of other than 4 or 5 entries or with a spatial size not known at import time."""
    theta = cx.x(0)
    dims, base = _affine_base(cx, cx.c(1))
    r = len(dims)
    if len(theta.shape) != 3 or tuple(theta.shape[1:]) != (r, r + 1):
        cx.fail(f"theta {_fmt(theta.shape)} must be [N, {r}, {r + 1}] for size of {r + 2} entries")
    n, p = theta.shape[0], base.shape[0]
    b = cx.imp.constant_tensor(f"affine_base_{'x'.join(map(str, dims))}", base, cx, False)
    prod = _reshape(cx, theta, (n, 1, r, r + 1)) * _reshape(cx, b, (p, 1, r + 1))
    return [_reshape(cx, dsl.sum(prod, axes=3), (n, *dims, r))]


def _fold_affine_grid(cx: NodeContext, args: list) -> list:
    theta = np.asarray(args[0], np.float32)
    dims, base = _affine_base(cx, args[1])
    r = len(dims)
    if theta.ndim != 3 or theta.shape[1:] != (r, r + 1):
        cx.fail(f"theta {_fmt(theta.shape)} must be [N, {r}, {r + 1}]")
    return [np.einsum("nkm,pm->npk", theta, base).reshape(theta.shape[0], *dims, r)]


# ---------------------------------------------------------------- losses

LOSS_REDUCTIONS = ("none", "sum", "mean")


def _nll(cx: NodeContext, logp: Tensor) -> Tensor:
    """NegativeLogLikelihoodLoss of log-probabilities ``logp`` [N, C, d_1 .. d_k] (the spec,
    https://onnx.ai/onnx/operators/onnx__NegativeLogLikelihoodLoss.html): with targets t
    [N, d_1 .. d_k] and weights w [C] (1 without), loss[n, d] = -logp[n, t[n, d], d] *
    w[t[n, d]], 0 where t == ignore_index; reduction none keeps that, sum adds it up, mean
    divides the sum by the sum of w[t] over the targets not ignored (their count without
    weights; 0 / 0 = NaN when every target is ignored, as ONNX Runtime). Targets as ONNX
    Runtime reads them: negative ones count from the end (GatherElements), one outside -C ..
    C-1 other than ignore_index is an error: an input is checked by every entry (within -C ..
    C-1 and ignore_index: a value between them, which ONNX Runtime refuses, gives NaN), a
    computed one proven in range, constant ones checked here."""
    red = str(cx.attr("reduction", "mean"))
    if red not in LOSS_REDUCTIONS:
        cx.fail(f"reduction {red!r} is not one of {', '.join(LOSS_REDUCTIONS)}")
    r = len(logp.shape)
    if r < 2:
        cx.fail(f"input {_fmt(logp.shape)} must be [N, C] or [N, C, d_1, ...]")
    c = logp.shape[1]
    if not isinstance(c, int):
        cx.fail(f"input {_fmt(logp.shape)}: the classes (axis 1) must have a fixed size")
    tv = cx.value(1)
    want = (logp.shape[0], *logp.shape[2:])
    if tuple(tv.shape) != tuple(want):
        cx.fail(f"target {_fmt(tv.shape)} must be input's shape without axis 1, {_fmt(want)}")
    ii = cx.attr("ignore_index")
    zero = dsl.const(0.0)
    pos_shape = (c, *(1,) * (r - 2))
    if isinstance(tv, np.ndarray):
        t = tv.astype(np.int64)
        ok = ((t >= -c) & (t < c)) | (t == ii if ii is not None else False)
        if not ok.all():
            k = tuple(int(v) for v in np.argwhere(~ok)[0])
            cx.fail(f"target[{', '.join(map(str, k))}] = {int(t[k])} is outside [-{c}, {c - 1}]")
        wrapped = np.where(t < 0, t + c, t)
        hit_a = wrapped[:, None] == np.arange(c).reshape(pos_shape)
        if ii is not None:
            hit_a &= (t != ii)[:, None]
        hit = cx.imp.constant_tensor(f"targets_{cx.index}", hit_a.astype(np.float32), cx, False)
    else:
        t = cx.x(1)
        if id(t) not in cx.imp.integral:
            cx.fail("targets computed in float: the loss needs integer targets")
        span = None
        if ii is not None and not -c <= int(ii) < c:
            span = (min(-c, int(ii)), max(c - 1, int(ii)))
        hit = _index_hits(cx, t, c, 1, span, new_axis=True)  # [N, C, d..]
        # a target between -C .. C-1 and ignore_index (ONNX Runtime raises): NaN, never a loss
        found = dsl.sum(hit, axes=1)
        if ii is not None:
            ignored = dsl.apply("equal", t, dsl.const(float(ii)))
            kept = _reshape(cx, 1.0 - ignored, (want[0], 1, *want[1:]))
            hit = dsl.apply("where", kept, hit, zero)
            found = dsl.sum(hit, axes=1) + ignored
        nan = zero / zero
    picked = dsl.sum(dsl.apply("where", hit, logp, zero), axes=1)  # [N, d..]
    if cx.has(2):
        w = _reshape(cx, cx.x(2), pos_shape)
        wt = dsl.sum(dsl.apply("where", hit, w, zero), axes=1)
    else:
        wt = dsl.sum(hit, axes=1)  # 1 where kept, 0 where ignored
    loss = zero - picked * wt if cx.has(2) else dsl.apply("where", wt, zero - picked, zero)
    if not isinstance(tv, np.ndarray):
        loss = dsl.apply("where", found, loss, nan)
    if red == "none":
        return loss
    total = dsl.sum(loss)
    return total if red == "sum" else total / dsl.sum(wt)


def _nll_rule(cx: NodeContext) -> list[Value]:
    return [_nll(cx, cx.x(0))]


def _log_softmax_axis1(cx: NodeContext, x: Tensor) -> Tensor:
    """log softmax over axis 1 (the classes): the native row-wise op for [N, C], else
    x - max - log(sum(exp(x - max)))."""
    if len(x.shape) == 2:
        return dsl.apply("log_softmax", x)
    z = x - dsl.apply("max", x, axes=(1,), keepdims=True)
    return z - dsl.log(dsl.sum(dsl.exp(z), axes=1, keepdims=True))


def _softmax_cross_entropy(cx: NodeContext) -> list[Value]:
    """SoftmaxCrossEntropyLoss (torch's F.cross_entropy at opsets 12+): scores [N, C, d..]
    -> log_prob = log softmax over the classes (axis 1), then NegativeLogLikelihoodLoss of it
    (_nll: reduction, ignore_index, weights); the optional second output is log_prob."""
    logp = _log_softmax_axis1(cx, cx.x(0))
    out: list[Value] = [_nll(cx, logp)]
    if len(cx.node.output) > 1 and cx.node.output[1]:
        out.append(logp)
    return out


# ---------------------------------------------------------------- values known at import time


def _eye_like(cx: NodeContext) -> list[Value]:
    """EyeLike: a 2-D value of the input's shape with ones on the k-th diagonal (k > 0 above,
    k < 0 below), of type ``dtype`` (default the input's): known at import time from the
    shape alone (a constant). Refused for an input with the batch dimension N (row i's ones
    would depend on the sample's position in the batch)."""
    v = cx.value(0)
    shape = tuple(v.shape)
    if len(shape) != 2:
        cx.fail(f"input {_fmt(shape)}: EyeLike takes a 2-D value")
    if "N" in shape:
        cx.fail(
            f"input {_fmt(shape)} has the batch dimension N: the ones of row i would depend on "
            "the sample's place in the batch"
        )
    dt = cx.attr("dtype")
    dtype = (
        _NP_OF.get(int(dt))
        if dt is not None
        else (v.dtype if isinstance(v, np.ndarray) else np.float32)
    )
    if dtype is None or dtype == "bfloat16":
        cx.fail(f"dtype {type_name(int(dt))} is not supported")
    return [np.eye(int(shape[0]), int(shape[1]), k=int(cx.attr("k", 0)), dtype=dtype)]


def _compress(cx: NodeContext) -> list[Value]:
    """Compress with a condition known at import time: the slices along ``axis`` (of the
    flattened input without one) whose condition is true (a shorter condition leaves the rest
    out), as a Gather of those positions (exact moves). A condition computed in the graph
    (the output's length would depend on the data) is refused naming the node, as is one that
    keeps nothing (graphc has no dimension of size 0) or an axis that is the batch dimension."""
    if not isinstance(cx.value(1), np.ndarray):
        cx.fail(
            "a condition computed in the graph: the output's length would depend on the data "
            "(graphc compiles fixed shapes; give the condition as an initializer or Constant)"
        )
    cond = np.ravel(np.asarray(cx.c(1))).astype(bool)
    v = cx.value(0)
    shape = tuple(v.shape)
    axis = cx.attr("axis")
    if axis is None:
        if "N" in shape:
            cx.fail(f"Compress without an axis flattens {_fmt(shape)}, which has N")
        size = math.prod(int(d) for d in shape)
    else:
        axis = _axis(cx, int(axis), len(shape))
        size = shape[axis]
        if size == "N":
            cx.fail(f"Compress along the batch dimension N of {_fmt(shape)}")
    if cond.size > int(size):
        cx.fail(f"condition of {cond.size} entries for an axis of {size}")
    keep = np.flatnonzero(cond)
    if not keep.size:
        cx.fail("the condition keeps nothing: graphc has no dimension of size 0")
    if isinstance(v, np.ndarray):
        return [np.compress(cond, v, axis=axis)]
    x = cx.x(0)
    if axis is None:
        x, axis = _reshape(cx, x, (int(size),)), 0
    out = _take(cx, x, axis, keep)
    if id(cx.x(0)) in cx.imp.integral:
        cx.imp.integral.add(id(out))
    return [out]


def _fold_nonzero(cx: NodeContext, args: list) -> list:
    """NonZero of a value known at import time (a shape computation): the indices of its
    nonzero elements, [rank, count] int64 in row-major order (np.nonzero)."""
    a = np.asarray(args[0])
    if a.dtype == object:
        cx.fail("NonZero of a value holding the batch size N")
    out = np.array(np.nonzero(a), dtype=np.int64).reshape(a.ndim, -1)
    if not out.size:
        cx.fail("no nonzero element: graphc has no dimension of size 0")
    return [out]


def _fold_bitshift(cx: NodeContext, args: list) -> list:
    """BitShift of integers known at import time: x << y or x >> y (direction LEFT or RIGHT)
    in x's type, bits shifted past its width dropped; signed types (opset 28) shift right
    arithmetically and left through the sign bit; a shift below 0 or of the width or more
    gives what the sign fill alone gives (-1 for a right shift of a negative x, else 0): the
    spec's text, onnx.reference's and numpy's arithmetic."""
    x, y = (np.asarray(a) for a in args[:2])
    if x.dtype.kind not in "iu" or y.dtype.kind not in "iu":
        cx.fail(f"BitShift of {x.dtype} by {y.dtype}: the spec shifts integers")
    direction = str(cx.attr("direction", ""))
    if direction not in ("LEFT", "RIGHT"):
        cx.fail(f"direction {direction!r} must be LEFT or RIGHT")
    x, y = np.broadcast_arrays(x, y)
    y = y.astype(np.int64)
    bits = x.dtype.itemsize * 8
    outside = (y < 0) | (y >= bits)
    shift = np.where(outside, 0, y)
    unsigned = x.view(np.dtype(f"u{x.dtype.itemsize}"))
    if direction == "LEFT":
        out = np.left_shift(unsigned, shift.astype(unsigned.dtype)).view(x.dtype)
        fill = np.zeros_like(x)
    else:
        out = np.right_shift(x, shift.astype(x.dtype))
        fill = np.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else np.zeros_like(x)
    return [np.where(outside, fill, out).astype(x.dtype)]


# ---------------------------------------------------------------- Col2Im

MAX_FOLD_ENTRIES = 1 << 22  # Col2Im's placement matrix (16 MiB of float32 constants)


def _col2im(cx: NodeContext) -> list[Value]:
    """Col2Im (torch's nn.Fold): input [N, C * prod(block_shape), L] of column blocks, the
    image_shape and block_shape known at import time, strides, pads and dilations -> [N, C,
    *image_shape]: each column element added at its pixel (block offset k, block position o:
    pixel o * stride - pad_begin + k * dilation; outside the image, dropped), the spec's
    formula (https://onnx.ai/onnx/operators/onnx__Col2Im.html). The pixel of every column
    element is known at import time: per channel, the product of its [K * L] column
    elements with a 0/1 placement matrix [K * L, H * W] (the sums as ONNX Runtime's, in
    another order; an inf or NaN element, times the zeros of the matrix, makes NaN across
    its channel's image, where ONNX Runtime's stays at its pixel). Refused naming the node:
    shapes that do not fit (C * prod(block) or L), the batch dimension inside the blocks, a
    placement matrix of more than MAX_FOLD_ENTRIES entries."""
    x = cx.x(0)
    img = [int(v) for v in np.ravel(cx.c(1))]
    blk = [int(v) for v in np.ravel(cx.c(2))]
    r = len(img)
    if len(blk) != r or r < 1 or min(img + blk) < 1:
        cx.fail(f"image_shape {img} and block_shape {blk} must be positive, of one length")
    strides = list(cx.attr("strides", [1] * r))
    dil = list(cx.attr("dilations", [1] * r))
    pads = list(cx.attr("pads", [0] * (2 * r)))
    if len(strides) != r or len(dil) != r or len(pads) != 2 * r:
        cx.fail(f"strides {strides}, dilations {dil}, pads {pads}: {r} spatial axes")
    if len(x.shape) != 3 or (x.shape[0] == "N" and "N" in x.shape[1:]):
        cx.fail(f"input {_fmt(x.shape)} must be [N, C * prod(block_shape), L]")
    if "N" in x.shape[1:]:
        cx.fail(f"input {_fmt(x.shape)}: the batch dimension N inside the blocks")
    k = math.prod(blk)
    outs = [
        (img[d] + pads[d] + pads[d + r] - dil[d] * (blk[d] - 1) - 1) // strides[d] + 1
        for d in range(r)
    ]
    length = math.prod(outs)
    ch, rem = divmod(int(x.shape[1]), k)
    if rem or min(outs) < 1 or int(x.shape[2]) != length:
        cx.fail(
            f"input {_fmt(x.shape)} does not fit blocks {blk} over {img} (C * {k} rows and "
            f"{length} block positions expected)"
        )
    offs = np.indices(blk).reshape(r, -1)  # [r, K]
    poss = np.indices(outs).reshape(r, -1)  # [r, L]
    coord = [
        poss[d][None, :] * strides[d] - pads[d] + offs[d][:, None] * dil[d] for d in range(r)
    ]  # each [K, L]
    inside = np.all([(c >= 0) & (c < img[d]) for d, c in enumerate(coord)], axis=0)
    pix = np.ravel_multi_index(tuple(np.where(inside, c, 0) for c in coord), img)  # [K, L]
    hw = math.prod(img)
    if k * length * hw > MAX_FOLD_ENTRIES:
        cx.fail(
            f"blocks {blk} over {img}: a {k * length} x {hw} placement matrix (graphc folds "
            f"by a matrix product, at most {MAX_FOLD_ENTRIES} entries)"
        )
    place = np.zeros((k * length, hw), np.float32)  # [column element, pixel]: 1 where it lands
    rows = np.arange(k * length).reshape(k, length)
    np.add.at(place, (rows[inside], pix[inside]), 1.0)
    lead = x.shape[0]
    cols = _reshape(cx, x, (lead, ch, k * length))
    m = cx.imp.constant_tensor(f"col2im_{cx.index}", place, cx, False)
    total = dsl.matmul(cols, m)
    return [_reshape(cx, total, (lead, ch, *img))]


INDEX_OPERAND = {  # operators reading an integer input as indices: which operand
    "ScatterElements": 1,
    "Scatter": 1,
    "ScatterND": 1,  # (per sample: _scatter_nd_rows_computed; elsewhere refused by name)
    "NegativeLogLikelihoodLoss": 1,
    "SoftmaxCrossEntropyLoss": 1,
}


OPS_MORE: dict[str, Rule] = {
    "ScatterElements": Rule(_scatter_elements, ("axis", "reduction"), fold=_fold_scatter_elements),
    "Scatter": Rule(_scatter_elements, ("axis",), fold=_fold_scatter_elements),
    "ScatterND": Rule(_scatter_nd, ("reduction",), fold=_fold_scatter_nd),
    "GridSample": Rule(_grid_sample, ("mode", "padding_mode", "align_corners")),
    "AffineGrid": Rule(_affine_grid, ("align_corners",), fold=_fold_affine_grid),
    "NegativeLogLikelihoodLoss": Rule(_nll_rule, ("reduction", "ignore_index")),
    "SoftmaxCrossEntropyLoss": Rule(_softmax_cross_entropy, ("reduction", "ignore_index")),
    "EyeLike": Rule(_eye_like, ("dtype", "k")),
    "Compress": Rule(_compress, ("axis",)),
    "NonZero": Rule(None, fold=_fold_nonzero),
    "BitShift": Rule(None, ("direction",), fold=_fold_bitshift),
    "Col2Im": Rule(_col2im, ("strides", "pads", "dilations")),
}
