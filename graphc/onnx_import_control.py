"""ONNX control flow and sequences resolved at import time: Loop, Scan, If on a computed
condition, and the sequence operators (the rules of ``graphc.onnx_import.OPS`` for them).

graphc compiles static graphs; exporters write control flow that is often static in fact.

- ``Loop`` (https://onnx.ai/onnx/operators/onnx__Loop.html) whose trip count M is known at
  import time (an initializer, a Constant, a shape computation) and whose condition is absent,
  known, or known again after each iteration (the body's condition output folds): the body is
  imported once per iteration (unrolled), its names prefixed by the Loop's name and the
  iteration, its inputs bound to (iteration number, True, the loop-carried values), its
  outputs giving the next loop-carried values and one element of each scan output; the scan
  outputs are the per-iteration values stacked along a new first axis. The body may read any
  value of the enclosing graphs (its outer-scope references keep their names). Initializers of
  the body are shared by the iterations (one param when trainable). M or a condition computed
  from the data, a loop without M and condition, and more than MAX_UNROLLED_ITERATIONS
  iterations (or MAX_UNROLLED_NODES body nodes over all iterations) are refused naming the
  node.
- ``Scan`` (opsets 9 to 21: https://onnx.ai/onnx/operators/onnx__Scan.html) with a fixed
  sequence length: num_scan_inputs, scan_input_axes / scan_input_directions (the step's slice
  of each scan input, reversed for direction 1), scan_output_axes / scan_output_directions
  (the per-step values stacked along the output axis, in reverse order for direction 1).
  Unrolled as Loop. Scan-8 (a batch axis and sequence_lens) and a scan along the batch
  dimension N are refused naming the node.
- ``If`` whose condition is computed from the data (a single element, without N): both
  branches are imported and each output is ``where(cond, then, else)``, an exact select (no
  blend: an Inf or NaN of the branch not taken does not leak, and the gradient reaches the
  taken branch only). The cost: both branches are computed on every call. Both branches must
  give outputs of the same shape and element type (ONNX Runtime's result is one of them,
  graphc's is the same element) and import; otherwise the node is refused by name. Training
  through it: each branch reads the outer values that depend on a param through a gate,
  where(cond, v, 0) (then) or where(cond, 0, v) (else), so the branch not taken computes on
  zeros and its backward pass, even where it is 0 * inf = NaN, is dropped by the gate's
  select: the gradient is the taken branch's (one more select per gated value). An If whose
  condition is known at import time imports the branch it takes only (``onnx_import._if``).
- Sequences whose length is known at import time: a sequence is a tuple of values
  (``SequenceValue``) at import. SequenceEmpty, SequenceConstruct, SequenceInsert,
  SequenceErase, SequenceAt, SequenceLength (an int64 scalar known at import),
  ConcatFromSequence (axis, new_axis) and SplitToSequence (split absent, scalar or 1-D; axis;
  keepdims). Positions must be known at import time and in range (refused by name otherwise,
  as ONNX Runtime raises). A sequence is not a graph input or output of graphc's models.

Tests: tests/test_onnx_control.py (ONNX Runtime, ONNX's node tests, torch's scripted loop,
gradients through an unrolled Loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.ir.errors import OnnxError

from . import dsl, onnx_layout
from .dsl import Tensor

if TYPE_CHECKING:
    from .onnx_import import NodeContext

MAX_UNROLLED_ITERATIONS = 1024  # iterations (steps) one Loop or Scan is unrolled into
MAX_UNROLLED_NODES = 100_000  # body nodes imported over all iterations of one Loop or Scan


# the operators that take a sequence operand (any other refuses one, naming the node)
SEQUENCE_OPERANDS = frozenset(
    (
        "Identity",
        "Loop",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "SequenceLength",
        "ConcatFromSequence",
        "SequenceMap",
        "Optional",
        "OptionalHasElement",
        "OptionalGetElement",
    )
)


@dataclass(frozen=True)
class OptionalValue:
    """An ONNX optional whose presence is known at import time: ``item`` (a tensor, an array
    known at import, a layout view or a ``SequenceValue``), or None where it is empty."""

    item: Any


@dataclass(frozen=True)
class SequenceValue:
    """An ONNX sequence known at import time: its elements (graph tensors, arrays known at
    import time, or layout views), in order."""

    items: tuple[Any, ...]


# ------------------------------------------------------------------ subgraphs


def _subgraphs(node: Any) -> list[Any]:
    out = []
    for a in node.attribute:
        if a.HasField("g"):
            out.append(a.g)
        out.extend(a.graphs)
    return out


def _defined(g: Any) -> set[str]:
    """The names a graph and its nested subgraphs define (inputs, initializers, outputs of
    nodes)."""
    names = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    names |= {sp.values.name for sp in g.sparse_initializer}
    for n in g.node:
        names |= {o for o in n.output if o}
        for sub in _subgraphs(n):
            names |= _defined(sub)
    return names - {""}


def _rename(g: Any, ren: dict[str, str], node_prefix: str) -> None:
    """Rename, in place, the values of ``g`` and its subgraphs by ``ren`` (others: outer
    references, kept)."""
    for vi in (*g.input, *g.output, *g.value_info):
        vi.name = ren.get(vi.name, vi.name)
    for t in g.initializer:
        t.name = ren.get(t.name, t.name)
    for sp in g.sparse_initializer:
        sp.values.name = ren.get(sp.values.name, sp.values.name)
    for n in g.node:
        ins = [ren.get(x, x) for x in n.input]
        outs = [ren.get(x, x) for x in n.output]
        del n.input[:]
        n.input.extend(ins)
        del n.output[:]
        n.output.extend(outs)
        n.name = node_prefix + (n.name or n.op_type)
        for sub in _subgraphs(n):
            _rename(sub, ren, node_prefix)


def _rename_reads(node: Any, alias: dict[str, str]) -> None:
    """Node ``node`` (and its subgraphs' nodes) reads ``alias[name]`` for each ``name``."""
    ins = [alias.get(x, x) for x in node.input]
    del node.input[:]
    node.input.extend(ins)
    for sub in _subgraphs(node):
        for n in sub.node:
            _rename_reads(n, alias)


def _operand(cx: NodeContext, i: int) -> Any:
    """Operand ``i`` as the importer holds it: a layout view, a sequence, a tensor or an
    array."""
    name = cx.node.input[i]
    v = cx.imp.views.get(name)
    return v if v is not None else cx.value(i)


def _bind(imp: Any, name: str, v: Any) -> None:
    if isinstance(v, onnx_layout.View):
        imp.views[name] = v
        imp.values[name] = v.base
    else:
        imp.values[name] = v


def run_graph(
    cx: NodeContext,
    g: Any,
    bind: list[Any],
    tag: str,
    wanted: list[bool],
    gate: Any = None,
) -> list:
    """Import subgraph ``g`` of node ``cx`` once: its inputs bound to ``bind``, its values
    renamed ``<node>/<tag>/<name>`` (so that each iteration has its own), its initializers
    shared (kept by name), the nodes that the ``wanted`` outputs need converted in order.
    ``gate(name)``, where given, may bind another value for a name the subgraph reads from
    outside (or an initializer of its own) and return that value's name, which the subgraph
    then reads instead. Returns its outputs (None where not wanted).

    Raises:
        OnnxError: naming the node, for a subgraph whose inputs do not match ``bind`` or
            whose names clash with the graph's, and any refusal of a body node.
    """
    from .onnx_import import INTEGER_TYPES, _node_reads, require_onnx, tensor_to_array

    onnx = require_onnx()
    imp = cx.imp
    if len(g.input) != len(bind):
        cx.fail(f"its body has {len(g.input)} inputs; the node gives it {len(bind)}")
    inits = {t.name for t in g.initializer}
    base = cx.node.name or f"node{cx.index}"
    ren = {n: f"{base}/{tag}/{n}" for n in _defined(g) - inits}
    h = onnx.GraphProto()
    h.CopyFrom(g)
    _rename(h, ren, f"{base}/{tag}/")
    for n in ren.values():
        if n in imp.values or n in imp.initializers:
            cx.fail(f"its body's value {n!r} clashes with a value of the graph")
    for t in h.initializer:
        if t.name in imp.values:
            cx.fail(f"its body's initializer {t.name!r} shadows a value of the graph")
        if t.name not in imp.initializers:
            imp.initializers[t.name] = tensor_to_array(t, imp.base_dir, f"{cx.where()}: {t.name!r}")
    for vi, v in zip(h.input, bind):
        _bind(imp, vi.name, v)
        bound = imp.values.get(vi.name)  # an integer-typed body input holds whole numbers, as
        if vi.type.tensor_type.elem_type in INTEGER_TYPES and isinstance(bound, Tensor):
            imp.integral.add(id(bound))  # an integer-typed node output does (a Scan's slice)
    imp.elem_type("")  # (the graph's types, read once)
    for o, r in ren.items():  # the body's element types, under its values' new names
        if o in imp.types:
            imp.types.setdefault(r, imp.types[o])
    if gate is not None:
        inside = _defined(h) - {t.name for t in h.initializer}
        reads = set().union(set(), *(_node_reads(n) for n in h.node)) - inside
        alias = {r: a for r in sorted(reads) if (a := gate(r)) is not None}
        if alias:
            for n in h.node:
                _rename_reads(n, alias)
    needed = {o.name for o, w in zip(h.output, wanted) if w}
    use = [False] * len(h.node)
    for i in range(len(h.node) - 1, -1, -1):
        if any(o in needed for o in h.node[i].output):
            use[i] = True
            needed.update(_node_reads(h.node[i]))
    for node, u in zip(h.node, use):
        if u:
            imp.convert(cx.index, node)
    outs: list[Any] = []
    for o, w in zip(h.output, wanted):
        if not w:
            outs.append(None)
            continue
        v = imp.views.get(o.name)
        outs.append(v if v is not None else imp.lookup(o.name, cx))
    return outs


def _known_scalar(cx: NodeContext, v: Any, what: str) -> Any:
    if isinstance(v, (Tensor, onnx_layout.View, SequenceValue)):
        return None
    a = np.asarray(v)
    if a.dtype == object:
        cx.fail(f"{what} depends on the batch size N, which is known only at run time")
    if a.size != 1:
        cx.fail(f"{what} must be one element known at import time, got {a.tolist()}")
    return a.reshape(-1)[0]


def _known_input(cx: NodeContext, i: int, what: str, why: str) -> Any:
    v = _known_scalar(cx, cx.value(i), what)
    if v is None:
        cx.fail(
            f"{what} is computed from the graph's inputs ({why}); graphc unrolls a Loop whose "
            "trip count and condition are known at import time (constants, shape computations)"
        )
    return v


def _check_budget(cx: NodeContext, steps: int, body: Any, what: str) -> None:
    if steps > MAX_UNROLLED_ITERATIONS:
        cx.fail(
            f"{steps} {what}: graphc unrolls at most MAX_UNROLLED_ITERATIONS = "
            f"{MAX_UNROLLED_ITERATIONS} (graphc.onnx_import_control)"
        )
    if steps * len(body.node) > MAX_UNROLLED_NODES:
        cx.fail(
            f"{steps} {what} of a {len(body.node)}-node body: above MAX_UNROLLED_NODES = "
            f"{MAX_UNROLLED_NODES} unrolled nodes (graphc.onnx_import_control)"
        )


# ------------------------------------------------------------------ stacking and slicing


def _as_tensor(cx: NodeContext, v: Any, what: str) -> Tensor:
    if isinstance(v, onnx_layout.View):
        return onnx_layout.materialize(cx, v)
    if isinstance(v, SequenceValue):
        cx.fail(f"{what} is a sequence where a tensor is needed")
    if isinstance(v, Tensor):
        return v
    return cx.imp.constant_tensor(f"{cx.node.name or cx.node.op_type}_{what}", v, cx, False)


def _shape(v: Any) -> tuple:
    return tuple(v.shape)


def stack(cx: NodeContext, vals: list[Any], axis: int, what: str) -> Any:
    """np.stack(vals, axis) of graph values (equal shapes): arrays stay arrays; tensors with N
    stacked along a new axis 0 give the layout view [T, N, ...] of a [N, T, ...] tensor."""
    if not vals:
        cx.fail(f"{what} would be empty (no iterations): graphc has no dimension of size 0")
    if any(isinstance(v, SequenceValue) for v in vals):
        cx.fail(f"{what} holds sequences; it stacks tensors")
    vals = [onnx_layout.materialize(cx, v) if isinstance(v, onnx_layout.View) else v for v in vals]
    shapes = {_shape(v) for v in vals}
    if len(shapes) != 1:
        from .onnx_import import _fmt

        cx.fail(
            f"{what}: its elements have different shapes ({', '.join(_fmt(s) for s in shapes)}); "
            "stacking needs one shape"
        )
    r = len(_shape(vals[0]))
    if not -r - 1 <= axis <= r:
        cx.fail(f"{what}: axis {axis} is outside -{r + 1}..{r}")
    axis %= r + 1
    if all(not isinstance(v, Tensor) for v in vals):
        return np.stack([np.asarray(v) for v in vals], axis=axis)
    ts = [_as_tensor(cx, v, what) for v in vals]
    shape = _shape(ts[0])
    if axis == 0 and shape[:1] == ("N",):  # [T, N, ...]: a view of [N, T, ...]
        base = _stack_tensors(ts, 1)
        groups = ((1,), (0,), *((j,) for j in range(2, r + 1)))
        return onnx_layout._out(onnx_layout.View(base, groups))
    return _stack_tensors(ts, axis)


def _stack_tensors(ts: list[Tensor], axis: int) -> Tensor:
    shape = _shape(ts[0])
    parts = [dsl.apply("reshape", t, shape=(*shape[:axis], 1, *shape[axis:])) for t in ts]
    return dsl.apply("concat", *parts, axis=axis) if len(parts) > 1 else parts[0]


def _slice_at(cx: NodeContext, x: Any, axis: int, i: int, what: str) -> Any:
    """x[..., i, ...] along ``axis`` (the axis dropped)."""
    from .onnx_import import _fmt

    if isinstance(x, onnx_layout.View):
        g = x.groups[axis]
        if len(g) == 0:  # a unit ONNX axis
            return onnx_layout._out(
                onnx_layout.View(x.base, x.groups[:axis] + x.groups[axis + 1 :])
            )
        if len(g) == 1 and x.base.shape[g[0]] != "N":
            j = g[0]
            t = _slice_at(cx, x.base, j, i, what)
            groups = tuple(
                tuple(b - (b > j) for b in gr) for k, gr in enumerate(x.groups) if k != axis
            )
            return onnx_layout._out(onnx_layout.View(t, groups))
        x = onnx_layout.materialize(cx, x)
    if not isinstance(x, Tensor):
        return np.take(np.asarray(x), i, axis=axis)
    shape = _shape(x)
    if not isinstance(shape[axis], int):
        cx.fail(f"{what} {_fmt(shape)} is scanned along its batch dimension N (axis {axis})")
    s = dsl.apply("slice", x, axes=(axis,), starts=(i,), ends=(i + 1,))
    return dsl.apply("reshape", s, shape=shape[:axis] + shape[axis + 1 :])


# ------------------------------------------------------------------ Loop


def loop(cx: NodeContext) -> list[Any]:
    """Loop with a trip count known at import time (and a condition absent, known, or known
    after each iteration), unrolled; see the module doc."""
    body = cx.attrs["body"].g
    n_carried = cx.n_inputs - 2
    if len(body.input) != n_carried + 2:
        cx.fail(
            f"its body has {len(body.input)} inputs; a Loop with {n_carried} loop-carried "
            f"values needs {n_carried + 2} (iteration number, condition, the values)"
        )
    n_scan = len(body.output) - 1 - n_carried
    if n_scan < 0 or len(cx.node.output) != n_carried + n_scan:
        cx.fail(
            f"its body has {len(body.output)} outputs and the node {len(cx.node.output)}; "
            f"with {n_carried} loop-carried values the body gives 1 + {n_carried} + K and the "
            f"node {n_carried} + K"
        )
    trip = None
    if cx.has(0):
        trip = int(_known_input(cx, 0, "its trip count M", "a loop whose length follows the data"))
    cond = True
    if cx.has(1):
        cond = bool(_known_input(cx, 1, "its condition input", "control flow on the data"))
    if trip is None and not cx.has(1):
        cx.fail("it has neither a trip count nor a condition (it would run forever)")
    steps = MAX_UNROLLED_ITERATIONS + 1 if trip is None else max(trip, 0)
    if not cx.has(1):  # (with a condition, M may be a bound never reached: torch's INT64_MAX)
        _check_budget(cx, steps, body, "iterations")
    carried = [_operand(cx, i) if cx.has(i) else None for i in range(2, cx.n_inputs)]
    if any(v is None for v in carried):
        cx.fail("a loop-carried value is absent (an empty input name)")
    wanted = [True] * (1 + n_carried) + [bool(o) for o in cx.node.output[n_carried:]]
    scans: list[list[Any]] = [[] for _ in range(n_scan)]
    i = 0
    while cond and i < steps:
        if i == MAX_UNROLLED_ITERATIONS:
            cx.fail(
                f"its condition is still true after {i} iterations (trip count "
                f"{'none' if trip is None else trip}): graphc unrolls at most "
                f"MAX_UNROLLED_ITERATIONS = {MAX_UNROLLED_ITERATIONS}"
            )
        _check_budget(cx, i + 1, body, "iterations")  # (the condition's loop: as it goes)
        bind = [np.array(i, np.int64), np.array(True), *carried]
        outs = run_graph(cx, body, bind, f"iter{i}", wanted)
        c = _known_scalar(cx, outs[0], f"the condition of iteration {i}")
        if c is None:
            cx.fail(
                f"the condition its body computes in iteration {i} depends on the graph's "
                "inputs (a loop whose length follows the data); graphc unrolls a Loop whose "
                "condition is known at import time"
            )
        cond = bool(c)
        carried = outs[1 : 1 + n_carried]
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        i += 1
    results: list[Any] = list(carried)
    for k in range(n_scan):
        if not wanted[1 + n_carried + k]:
            results.append(None)
        else:
            results.append(stack(cx, scans[k], 0, f"scan output {k}"))
    return results


# ------------------------------------------------------------------ Scan


def scan(cx: NodeContext) -> list[Any]:
    """Scan (opset 9+) over a fixed sequence length, unrolled; see the module doc."""
    if cx.version < 9:
        cx.fail("Scan-8 (a batch axis and sequence_lens) is not imported; opset 9 and later are")
    body = cx.attrs["body"].g
    k_in = int(cx.attr("num_scan_inputs"))
    n_state = cx.n_inputs - k_in
    if k_in < 1 or n_state < 0 or len(body.input) != cx.n_inputs:
        cx.fail(
            f"num_scan_inputs {k_in} with {cx.n_inputs} inputs and a {len(body.input)}-input "
            "body do not fit"
        )
    k_out = len(body.output) - n_state
    if k_out < 0 or len(cx.node.output) != len(body.output):
        cx.fail(f"its body has {len(body.output)} outputs, the node {len(cx.node.output)}")

    def ints(name: str, n: int) -> list[int]:
        v = cx.attr(name)
        v = [0] * n if v is None else [int(a) for a in v]
        if len(v) != n:
            cx.fail(f"{name} lists {len(v)} values for {n}")
        return v

    in_axes, in_dirs = ints("scan_input_axes", k_in), ints("scan_input_directions", k_in)
    out_axes, out_dirs = ints("scan_output_axes", k_out), ints("scan_output_directions", k_out)
    if any(d not in (0, 1) for d in in_dirs + out_dirs):
        cx.fail("a scan direction is neither 0 (forward) nor 1 (reverse)")
    xs = [_operand(cx, n_state + j) for j in range(k_in)]
    lengths = set()
    for j, x in enumerate(xs):
        shape = _shape(x)
        r = len(shape)
        if not -r <= in_axes[j] < r:
            cx.fail(f"scan_input_axes[{j}] = {in_axes[j]} is outside the rank {r} of its input")
        in_axes[j] %= r
        d = shape[in_axes[j]]
        if not isinstance(d, (int, np.integer)):
            cx.fail(
                f"scan input {j} is scanned along {d} (axis {in_axes[j]}), the batch "
                "dimension: graphc unrolls a Scan over a fixed sequence length"
            )
        lengths.add(int(d))
    if len(lengths) != 1:
        cx.fail(f"its scan inputs have different sequence lengths {sorted(lengths)}")
    steps = lengths.pop()
    _check_budget(cx, steps, body, "steps")
    states = [_operand(cx, i) for i in range(n_state)]
    wanted = [True] * n_state + [bool(o) for o in cx.node.output[n_state:]]
    scans: list[list[Any]] = [[] for _ in range(k_out)]
    for t in range(steps):
        sl = [
            _slice_at(cx, x, in_axes[j], t if in_dirs[j] == 0 else steps - 1 - t, f"scan input {j}")
            for j, x in enumerate(xs)
        ]
        outs = run_graph(cx, body, [*states, *sl], f"step{t}", wanted)
        states = outs[:n_state]
        for k in range(k_out):
            scans[k].append(outs[n_state + k])
    results: list[Any] = list(states)
    for k in range(k_out):
        if not wanted[n_state + k]:
            results.append(None)
            continue
        vals = scans[k][::-1] if out_dirs[k] == 1 else scans[k]
        results.append(stack(cx, vals, out_axes[k], f"scan output {k}"))
    return results


# ------------------------------------------------------------------ If


def _reaches_param(t: Tensor) -> bool:
    stack, seen = [t], set()
    while stack:
        u = stack.pop()
        if id(u) in seen:
            continue
        seen.add(id(u))
        if u.node.op == "param":
            return True
        stack.extend(u.parents)
    return False


def _branch_gate(cx: NodeContext, cond: Tensor, branch: str) -> Any:
    """The gate of an If branch's outer reads that depend on a param: ``where(cond, v, 0)``
    for the then branch, ``where(cond, 0, v)`` for the else branch. The branch taken reads v
    itself; the other reads zeros, and its output is discarded by the select. The gate's
    gradient is a select too, so whatever the branch not taken gives in the backward pass
    (0 * inf = NaN where its derivative is infinite or undefined at the data) never reaches
    a param."""
    imp = cx.imp
    base_name = cx.node.name or f"node{cx.index}"

    def gate(name: str) -> str | None:
        v = imp.views.get(name)
        if v is None:
            if name not in imp.values and name not in imp.initializers:
                return None  # (a name a nested subgraph defines for itself)
            v = imp.lookup(name, cx)
            if isinstance(v, np.ndarray):
                if not (name in imp.initializers and v.dtype.kind == "f"):
                    return None
                if not imp.is_trainable(name):
                    return None
                v = imp.as_tensor(name, cx)
        if not isinstance(v, (Tensor, onnx_layout.View)):
            return None
        t = v.base if isinstance(v, onnx_layout.View) else v
        if id(t) in imp.merged or not _reaches_param(t):
            return None
        zero = dsl.const(0.0)
        args = (t, zero) if branch == "then_branch" else (zero, t)
        g = dsl.apply("where", cond, *args)
        alias = f"{base_name}/{branch}/gate/{name}"
        if alias in imp.values:
            cx.fail(f"the gate {alias!r} clashes with a value of the graph")
        _bind(imp, alias, onnx_layout.View(g, v.groups) if isinstance(v, onnx_layout.View) else g)
        return alias

    return gate


def _elem_type(vi: Any) -> int:
    return int(vi.type.tensor_type.elem_type) if vi.type.HasField("tensor_type") else 0


def if_rule(cx: NodeContext) -> list[Any]:
    """If: a condition known at import time imports the branch it takes
    (``onnx_import._if``); a computed one both branches, selected elementwise by ``where``
    (see the module doc)."""
    from .onnx_import import _fmt, _if

    cond = cx.value(0)
    if not isinstance(cond, Tensor):
        return _if(cx)
    if any(d != 1 for d in cond.shape):
        cx.fail(f"its condition has shape {_fmt(cond.shape)}; ONNX's If takes one element")
    names = ("then_branch", "else_branch")
    branches = [cx.attrs[b].g for b in names]
    for b, g in zip(names, branches):
        if len(g.output) != len(cx.node.output):
            cx.fail(f"its {b} has {len(g.output)} outputs for the node's {len(cx.node.output)}")
    wanted = [bool(o) for o in cx.node.output]
    c = cond if not cond.shape else dsl.apply("reshape", cond, shape=())
    got = []
    for b, g in zip(names, branches):
        try:
            got.append(run_graph(cx, g, [], b, wanted, _branch_gate(cx, c, b)))
        except OnnxError as e:
            raise OnnxError(
                f"{cx.where()}: its condition is computed from the data, so graphc computes "
                f"both branches and selects; its {b} cannot be imported: {e}"
            ) from None
    outs: list[Any] = []
    for k, (a, b) in enumerate(zip(*got)):
        if not wanted[k]:
            outs.append(None)
            continue
        ta, tb = (_elem_type(g.output[k]) for g in branches)
        if ta and tb and ta != tb:
            cx.fail(f"output {k}: its branches give element types {ta} and {tb}")
        if isinstance(a, SequenceValue) or isinstance(b, SequenceValue):
            cx.fail(f"output {k} is a sequence: graphc selects tensors only")
        if isinstance(a, OptionalValue) or isinstance(b, OptionalValue):
            cx.fail(f"output {k} is an optional: graphc selects tensors only")
        a = onnx_layout.materialize(cx, a) if isinstance(a, onnx_layout.View) else a
        b = onnx_layout.materialize(cx, b) if isinstance(b, onnx_layout.View) else b
        if _shape(a) != _shape(b):
            cx.fail(
                f"output {k}: the then branch gives {_fmt(_shape(a))} and the else branch "
                f"{_fmt(_shape(b))}; graphc computes both and selects, which needs one shape"
            )
        if not isinstance(a, Tensor) and not isinstance(b, Tensor) and np.array_equal(a, b):
            outs.append(a)
            continue
        outs.append(
            dsl.apply("where", c, _as_tensor(cx, a, f"then_{k}"), _as_tensor(cx, b, f"else_{k}"))
        )
    return outs


# ------------------------------------------------------------------ sequences


def _seq(cx: NodeContext, i: int) -> SequenceValue:
    v = cx.value(i)
    if not isinstance(v, SequenceValue):
        cx.fail(f"input {i} ({cx.node.input[i]!r}) is not a sequence known at import time")
    return v


def _position(cx: NodeContext, i: int, n: int, insert: bool) -> int:
    p = _known_scalar(cx, cx.value(i), "its position")
    if p is None:
        cx.fail("its position is computed from the graph's inputs; graphc needs it at import")
    p = int(p)
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        cx.fail(f"position {p} is outside -{n}..{hi} for a sequence of {n} elements")
    return p + n if p < 0 else p


def sequence_empty(cx: NodeContext) -> list[Any]:
    return [SequenceValue(())]


def sequence_construct(cx: NodeContext) -> list[Any]:
    return [SequenceValue(tuple(_operand(cx, i) for i in range(cx.n_inputs)))]


def sequence_insert(cx: NodeContext) -> list[Any]:
    s = _seq(cx, 0)
    n = len(s.items)
    p = _position(cx, 2, n, True) if cx.has(2) else n
    return [SequenceValue(s.items[:p] + (_operand(cx, 1),) + s.items[p:])]


def sequence_erase(cx: NodeContext) -> list[Any]:
    s = _seq(cx, 0)
    n = len(s.items)
    if n == 0:
        cx.fail("it erases from an empty sequence")
    p = _position(cx, 1, n, False) if cx.has(1) else n - 1
    return [SequenceValue(s.items[:p] + s.items[p + 1 :])]


def sequence_at(cx: NodeContext) -> list[Any]:
    s = _seq(cx, 0)
    return [s.items[_position(cx, 1, len(s.items), False)]]


def sequence_length(cx: NodeContext) -> list[Any]:
    return [np.array(len(_seq(cx, 0).items), np.int64)]


def concat_from_sequence(cx: NodeContext) -> list[Any]:
    """ConcatFromSequence: the elements joined along ``axis`` (new_axis 1: stacked along a new
    axis ``axis``, -r-1..r)."""
    from .onnx_import import _axis, _fmt

    s = _seq(cx, 0)
    axis = int(cx.attr("axis"))
    if not s.items:
        cx.fail("its sequence is empty")
    if int(cx.attr("new_axis", 0)):
        return [stack(cx, list(s.items), axis, "the sequence")]
    vals = [
        onnx_layout.materialize(cx, v) if isinstance(v, onnx_layout.View) else v for v in s.items
    ]
    axis = _axis(cx, axis, len(_shape(vals[0])))
    if all(not isinstance(v, Tensor) for v in vals):
        return [np.concatenate([np.asarray(v) for v in vals], axis=axis)]
    ts = [_as_tensor(cx, v, f"element_{k}") for k, v in enumerate(vals)]
    if any(not isinstance(t.shape[axis], int) for t in ts):
        cx.fail(f"joining {', '.join(_fmt(t.shape) for t in ts)} along the batch dimension N")
    return [dsl.apply("concat", *ts, axis=axis) if len(ts) > 1 else ts[0]]


def split_to_sequence(cx: NodeContext) -> list[Any]:
    """SplitToSequence: pieces of ``split`` sizes (a scalar: pieces of that size, the last one
    smaller; absent: pieces of 1, without the axis when keepdims is 0) along ``axis``."""
    from .onnx_import import _axis, _fmt

    x = _operand(cx, 0)
    if isinstance(x, onnx_layout.View):
        x = onnx_layout.materialize(cx, x)
    shape = _shape(x)
    r = len(shape)
    axis = _axis(cx, int(cx.attr("axis", 0)), r)
    size = shape[axis]
    if not isinstance(size, (int, np.integer)):
        cx.fail(f"splitting {_fmt(shape)} along the batch dimension N")
    size = int(size)
    keep = True
    if not cx.has(1):
        sizes = [1] * size
        keep = bool(int(cx.attr("keepdims", 1)))
    else:
        sp = cx.c(1)
        if sp.ndim == 0:
            step = int(sp)
            if step <= 0:
                cx.fail(f"split {step} is not positive")
            sizes = [step] * (size // step) + ([size % step] if size % step else [])
        else:
            sizes = [int(v) for v in sp.reshape(-1)]
            if sum(sizes) != size or any(v < 0 for v in sizes):
                cx.fail(f"split {sizes} does not cut an axis of size {size}")
    items: list[Any] = []
    start = 0
    for k in sizes:
        if isinstance(x, Tensor):
            if k == 0:
                cx.fail("an empty piece: graphc has no dimension of size 0")
            piece: Any = dsl.apply("slice", x, axes=(axis,), starts=(start,), ends=(start + k,))
            if not keep:
                piece = dsl.apply("reshape", piece, shape=shape[:axis] + shape[axis + 1 :])
        else:
            piece = np.take(np.asarray(x), range(start, start + k), axis=axis)
            if not keep:
                piece = np.squeeze(piece, axis)
        items.append(piece)
        start += k
    return [SequenceValue(tuple(items))]


def _compare_fold(f: Any) -> Any:
    """The fold of an ordered comparison of values known at import time (a loop's i < n): numpy;
    a shape value holding the batch size N is compared only in the graph (refused)."""

    def fold(cx: NodeContext, args: list) -> list:
        a, b = np.asarray(args[0]), np.asarray(args[1])
        if a.dtype == object or b.dtype == object:
            cx.fail("it compares the batch size N (a symbolic size), which is not known at import")
        return [f(a, b)]

    return fold


def control_ops() -> dict[str, Any]:
    """The rules of this module, for graphc.onnx_import.OPS (and folds for the ordered
    comparisons, which loop conditions are made of)."""
    from .onnx_import import Rule, _compare

    return {
        **{
            op: Rule(_compare(g, swap_of=swap), fold=_compare_fold(f))
            for op, g, swap, f in (
                ("Greater", "greater", None, np.greater),
                ("Less", "less", "greater", np.less),
                ("GreaterOrEqual", "greater_equal", None, np.greater_equal),
                ("LessOrEqual", "less_equal", "greater_equal", np.less_equal),
            )
        },
        "Loop": Rule(loop, ("body",), reads_views=True),
        "Scan": Rule(
            scan,
            (
                "body",
                "num_scan_inputs",
                "scan_input_axes",
                "scan_input_directions",
                "scan_output_axes",
                "scan_output_directions",
            ),
            reads_views=True,
        ),
        "If": Rule(if_rule, ("then_branch", "else_branch")),
        "SequenceEmpty": Rule(sequence_empty, ("dtype",)),
        "SequenceConstruct": Rule(sequence_construct, reads_views=True),
        "SequenceInsert": Rule(sequence_insert, reads_views=True),
        "SequenceErase": Rule(sequence_erase),
        "SequenceAt": Rule(sequence_at),
        "SequenceLength": Rule(sequence_length),
        "ConcatFromSequence": Rule(concat_from_sequence, ("axis", "new_axis"), reads_views=True),
        "SplitToSequence": Rule(split_to_sequence, ("axis", "keepdims"), reads_views=True),
        "SequenceMap": Rule(sequence_map, ("body",), reads_views=True),
        "Optional": Rule(optional, ("type",), reads_views=True),
        "OptionalHasElement": Rule(optional_has_element, reads_views=True),
        "OptionalGetElement": Rule(optional_get_element, reads_views=True),
    }


# ------------------------------------------------------------------ SequenceMap


def sequence_map(cx: NodeContext) -> list[Any]:
    """SequenceMap (opset 17) of sequences known at import time: the body imported once per
    position j (unrolled as Loop), its inputs bound to element j of each sequence input and
    to each tensor input as it is; output k is the sequence of the body's output k. The
    sequences must have one length (ONNX Runtime raises otherwise), refused naming the node."""
    body = cx.attrs["body"].g
    args = [_operand(cx, i) for i in range(cx.n_inputs)]
    if not args or not isinstance(args[0], SequenceValue):
        cx.fail("its first input must be a sequence")
    if len(body.input) != len(args) or len(body.output) != len(cx.node.output):
        cx.fail(
            f"its body has {len(body.input)} inputs and {len(body.output)} outputs; the node "
            f"{len(args)} and {len(cx.node.output)}"
        )
    lengths = {len(a.items) for a in args if isinstance(a, SequenceValue)}
    if len(lengths) != 1:
        cx.fail(f"its sequences have different lengths {sorted(lengths)}")
    steps = lengths.pop()
    _check_budget(cx, steps, body, "elements")
    outs: list[list[Any]] = [[] for _ in body.output]
    for j in range(steps):
        bind = [a.items[j] if isinstance(a, SequenceValue) else a for a in args]
        got = run_graph(cx, body, bind, f"elem{j}", [True] * len(body.output))
        for k, v in enumerate(got):
            outs[k].append(v)
    return [SequenceValue(tuple(o)) for o in outs]


# ------------------------------------------------------------------ optionals


def optional(cx: NodeContext) -> list[Any]:
    """Optional (opset 15): its input wrapped, or (no input) an empty optional of ``type``."""
    if len(cx.node.input) > 0 and cx.node.input[0]:
        return [OptionalValue(_operand(cx, 0))]
    if cx.attr("type") is None:
        cx.fail("an Optional without input needs its attribute type (the file is malformed)")
    return [OptionalValue(None)]


def optional_has_element(cx: NodeContext) -> list[Any]:
    """OptionalHasElement (opsets 15, 18): whether the optional holds a value, known at import
    time (a bool scalar); a tensor or sequence (opset 18) holds one, a missing input none."""
    if not cx.node.input or not cx.node.input[0]:
        return [np.array(False)]
    v = _operand(cx, 0)
    return [np.array(not (isinstance(v, OptionalValue) and v.item is None))]


def optional_get_element(cx: NodeContext) -> list[Any]:
    """OptionalGetElement (opsets 15, 18): the optional's value (a tensor or sequence given
    itself, opset 18). An empty optional is refused naming the node, as ONNX Runtime raises."""
    v = _operand(cx, 0)
    if not isinstance(v, OptionalValue):
        return [v]
    if v.item is None:
        cx.fail("its optional input is empty (ONNX Runtime raises): nothing to get")
    return [v.item]


# ------------------------------------------------------------------ values through bodies


@dataclass
class ScopedUses:
    """Where the values of a graph and of its subgraphs (If's branches, Loop's and Scan's
    bodies, nested ones) go, for following an integer graph input into a body
    (``onnx_import.Importer.integer_input_use``). Values are keyed by name; ONNX names are
    single-assignment across nested graphs (a sibling branch may reuse one: its readers are
    then counted too, which only adds checks).

    - ``readers[name]``: (node, where) of every node, at any depth, that lists ``name`` as an
      input (an outer-scope reference inside a body is such an input of the body's node);
      ``where`` names it as 'node k 'name' (op)', with the enclosing nodes for a body's.
    - ``passes[(id(node), k)]``: the body inputs that operand k of a Loop (loop-carried values,
      k >= 2) or Scan (states and scan inputs) becomes (Loop: body input k; Scan: body input
      k, one slice of a scan input: the same whole numbers).
    - ``exits[name]``: the values that body output ``name`` becomes: If's output k (branch
      output k), Loop's output k - 1 (body output k >= 1) and, for a loop-carried one, the
      next iteration's body input k + 1; Scan's output k and, for a state, body input k."""

    readers: dict[str, list[tuple[Any, str]]]
    passes: dict[tuple[int, int], list[str]]
    exits: dict[str, list[str]]


def scoped_uses(graph: Any) -> ScopedUses:
    """The ``ScopedUses`` of ``graph`` (a GraphProto) and its nested subgraphs. Nodes that no
    graph output needs (the import does not convert them) are left out, bodies included."""
    from .onnx_import import _node_reads

    su = ScopedUses({}, {}, {})
    needed = {o.name for o in graph.output}
    live: set[int] = set()  # (node numbers of the graph)
    for k in range(len(graph.node) - 1, -1, -1):
        if any(o in needed for o in graph.node[k].output):
            live.add(k)
            needed.update(_node_reads(graph.node[k]))

    def walk(g: Any, outer: str) -> None:
        for k, n in enumerate(g.node):
            if g is graph and k not in live:
                continue
            where = f"{outer}node {k} {n.name!r} ({n.op_type})"
            for x in dict.fromkeys(n.input):
                if x:
                    su.readers.setdefault(x, []).append((n, where))
            for sub in _subgraphs(n):
                ins = [vi.name for vi in sub.input]
                outs = [vi.name for vi in sub.output]
                if n.op_type == "If":
                    for o, to in zip(outs, n.output):
                        su.exits.setdefault(o, []).append(to)
                elif n.op_type == "Loop":
                    for j, o in enumerate(outs[1:], 1):
                        nxt = [ins[j + 1]] if j + 1 < len(ins) else []
                        to = [n.output[j - 1]] if j - 1 < len(n.output) else []
                        su.exits.setdefault(o, []).extend(to + nxt)
                    for j in range(2, min(len(n.input), len(ins))):
                        su.passes.setdefault((id(n), j), []).append(ins[j])
                elif n.op_type == "Scan":
                    for j, o in enumerate(outs):
                        back = [ins[j]] if j < len(ins) and j < len(n.input) - _scans(n) else []
                        to = [n.output[j]] if j < len(n.output) else []
                        su.exits.setdefault(o, []).extend(to + back)
                    for j in range(min(len(n.input), len(ins))):
                        su.passes.setdefault((id(n), j), []).append(ins[j])
                walk(sub, f"{where} body: ")

    walk(graph, "")
    return su


def _scans(n: Any) -> int:
    """A Scan node's num_scan_inputs (0 where absent: malformed, refused when converted)."""
    return next((int(a.i) for a in n.attribute if a.name == "num_scan_inputs"), 0)


def body_types(onnx: Any, graph: Any) -> dict[str, Any]:
    """value name -> TypeProto of the tensors of ``graph``'s subgraphs, nested ones too (their
    inputs, value_info, outputs, initializers: onnx's shape inference writes value_info into
    the bodies it infers). A name that sibling bodies give different element types is left
    out (unknown, as before)."""
    out: dict[str, Any] = {}
    clash: set[str] = set()

    def note(name: str, tp: Any) -> None:
        had = out.setdefault(name, tp)
        if had.tensor_type.elem_type != tp.tensor_type.elem_type:
            clash.add(name)

    def walk(g: Any) -> None:
        for n in g.node:
            for sub in _subgraphs(n):
                for vi in (*sub.input, *sub.value_info, *sub.output):
                    if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                        note(vi.name, vi.type)
                for t in sub.initializer:
                    note(t.name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
                walk(sub)

    walk(graph)
    return {k: v for k, v in out.items() if k not in clash}
