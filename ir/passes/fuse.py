"""Fusion: mark nodes that run as one kernel (``Node.group``), and order the graph so they can.

Six passes, each Graph -> Graph (run in this order at -O2):

``fuse_dense``
    A matmul and the elementwise nodes of its shape that consume it (bias add, activation,
    the activation-derivative multiply of the backward pass, ...) become one group. The
    scheduler makes it one matmul kernel whose GEMM applies the other nodes as its epilogue
    while the tile is in registers (``codegen.kernels.emit_matmul``). Only the last node of
    the group is stored, so every other member may be read only inside the group::

        %0 = matmul(x, w) : f32[N,32]           fused dense0 {
        %1 = add(%0, b) : f32[N,32]      ==>      %0 = matmul(x, w) : f32[N,32]
        %2 = relu(%1) : f32[N,32]                 %1 = add(%0, b) : f32[N,32]
                                                  %2 = relu(%1) : f32[N,32]
                                                }

``fuse_conv``
    A conv or conv_transpose and the chain of pointwise nodes after it whose other operands
    are scalars, one value per output channel or values of its shape (bias add, activation,
    a residual add) become one group: the
    conv kernel applies them to each output before its only store (``codegen.conv``).

``fuse_elementwise``
    Connected elementwise nodes of one shape and dtype (operands may broadcast) become one
    group: one loop, several stored outputs where values are read outside the group. Sibling
    loops that read the same full-size value are merged too (one pass over it). The
    optimizer's updates of one parameter (its m, v and new value) end up in one kernel.
    Connected scalar nodes become one kernel whatever their dtypes: the i64 step counter's
    increment and the float factors made from it (Adam's bias corrections, lr / (1 - beta1^t)).

``fuse_softmax_cross_entropy``
    The loss, its gradient and the bias gradient (the gradient's column sums) become one loop
    over the rows of the logits.

``fuse_update_epilogue``
    A param's update group (from fuse_elementwise) joins the GEMM kernel that makes its
    gradient: the epilogue applies the update while the gradient's tile is in L1 and stores
    the new param and slots; nothing reads the param between that kernel and the end of the
    step (the others that read it are ordered before). Not for updates that need the whole
    gradient first, split entries, params read after their gradient, or (by default) updates
    that divide or take square roots (``DIVIDER_UPDATES_IN_EPILOGUE``); ``update_epilogues``
    says why, and the scheduler keeps it in ``Schedule.update_notes``.

``fuse_optimizer``
    The other update groups (one per param, from fuse_elementwise) that have the same
    structure (ops, attrs, scalar operands such as lr and the bias corrections; param,
    gradient and slots in the same roles) are marked as one set (group ids ``"optK|<id>"``). The scheduler makes a
    set one loop over the contiguous param, gradient and state regions when the layout allows
    it (``ir.passes.schedule._flat_updates``; ``Schedule.flat_notes`` says why not otherwise).

A merge is made only when the contracted graph stays acyclic; the nodes are then re-emitted in
a topological order of the groups (each group's members contiguous, matmul first), keeping the
original order wherever the dependencies allow. Each pass returns ``g`` itself when it fuses
nothing.

Not fused (yet): the bias gradient (a sum over the batch) with a GEMM or elementwise kernel that
produces the gradient it sums (that needs a column reduction in the GEMM epilogue or the
elementwise loop; only the softmax cross-entropy gradient has it), and the updates of several
parameters into one loop over the contiguous regions (``fuse_optimizer`` marks alike update
groups; the scheduler makes them one loop where the memory layout allows it), and a bias's
update in the column sum that makes its gradient (a few hundred values: when the weights'
updates run in their GEMMs, the biases' stay small kernels of their own, not adjacent in the
param region, so not one flat loop).

``explain_fusion(before, after)`` says, for every matmul and activation, whether it was fused
and, if not, why.
"""

from __future__ import annotations

from collections.abc import Callable

from ..algorithms import lexicographic_order
from ..graph import Graph, Node, attrs_key
from ..ops import ACTIVATIONS, DIVIDER_OPS, INLINE_OPS, OPS, POINTWISE_OPS, SOURCE_OPS


def is_pointwise(n: Node) -> bool:
    """True for a pointwise op that a fused loop can evaluate element by element."""
    return n.op in POINTWISE_OPS and n.type.dtype in ("f32", "f64")


def _is_scalar_pointwise(n: Node) -> bool:
    """A pointwise op on one value (shape []), of any dtype: the optimizer's i64 step counter
    and the float factors made from it (increment, cast, one_minus_pow, lr / (1 - beta^t)).
    Its kernel is one iteration, so values of several dtypes share it."""
    return n.op in POINTWISE_OPS and n.type.shape == ()


def _one_loop(a: Node, b: Node) -> bool:
    """Whether two pointwise nodes can be one loop: the same type, or both scalars."""
    return a.type == b.type or (a.type.shape == () and b.type.shape == ())


def _needs_index(n: Node) -> bool:
    """Ops such as dropout whose lowering needs the element's flat index."""
    return OPS[n.op].needs_index


def _escaping(g: Graph) -> set[str]:
    """Values read from outside any kernel: graph outputs and update values."""
    return set(g.outputs) | {v for _, v in g.updates}


def _fresh_group_ids(g: Graph, prefix: str):
    taken = {n.group for n in g.nodes if n.group is not None}
    k = 0
    while True:
        gid = f"{prefix}{k}"
        k += 1
        if gid not in taken:
            yield gid


class _Groups:
    """Union of nodes into groups with a cycle check on the contracted dependency graph."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.group_of: dict[str, str] = {n.name: n.group for n in g.nodes if n.group is not None}
        self.members: dict[str, set[str]] = {}
        for name, gid in self.group_of.items():
            self.members.setdefault(gid, set()).add(name)

    def unit(self, name: str) -> set[str]:
        gid = self.group_of.get(name)
        return self.members[gid] if gid is not None else {name}

    def creates_cycle(self, members: set[str]) -> bool:
        """Whether a path leaves ``members`` and comes back (through other nodes or groups)."""
        users = self.g.users
        stack = [u for m in members for u in users.get(m, ()) if u not in members]
        seen: set[str] = set()
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            if v in members:
                return True
            for w in self.unit(v):
                seen.add(w)
                stack.extend(u for u in users.get(w, ()) if u not in seen)
        return False

    def assign(self, members: set[str], gid: str) -> None:
        for m in members:
            old = self.group_of.get(m)
            if old is not None and old != gid:
                self.members[old].discard(m)
                if not self.members[old]:
                    del self.members[old]
            self.group_of[m] = gid
        self.members.setdefault(gid, set()).update(members)


def _reorder(
    g: Graph,
    group_of: dict[str, str],
    after: list[tuple[str, str]] = (),  # type: ignore[assignment]
    early: set[str] = frozenset(),  # type: ignore[assignment]
) -> Graph:
    """``g`` with groups stamped on the nodes and emitted contiguously in a topological order.

    ``after``: more ordering constraints (a, b): a's unit runs before b's (a reader of a
    param before the kernel that updates it in place). ``early``: nodes whose units stand
    just before their first reader, as sources do (the optimizer's step counter and bias
    corrections, read by an update in a GEMM's epilogue)."""
    # a unit is ("group", id) or ("node", name): a group id may equal some node's name
    unit_of = {
        n.name: ("group", group_of[n.name]) if n.name in group_of else ("node", n.name)
        for n in g.nodes
    }
    index = g.index
    first: dict[tuple[str, str], int] = {}
    edges: list[tuple[tuple[str, str], tuple[str, str]]] = []
    readers: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for n in g.nodes:
        u = unit_of[n.name]
        first[u] = min(first.get(u, index[n.name]), index[n.name])
        for i in n.inputs:
            if unit_of[i] != u:
                edges.append((unit_of[i], u))
    edges += [(unit_of[a], unit_of[b]) for a, b in after if unit_of[a] != unit_of[b]]
    for a, b in dict.fromkeys(edges):
        readers.setdefault(a, []).append(b)
    members: dict[tuple[str, str], list[Node]] = {}
    for n in g.nodes:
        members.setdefault(unit_of[n.name], []).append(n.with_(group=group_of.get(n.name)))
    # a unit runs where its first member stood; a source stands just before its first reader
    key = {u: (first[u], 0, first[u]) for u in first}
    for n in g.nodes:  # early units first: their sources then stand before them
        if n.name in early:
            u = unit_of[n.name]
            at = min((first[r] for r in readers.get(u, ())), default=index[n.name])
            key[u] = (at, -1, index[n.name])
    for n in g.nodes:
        if n.op in SOURCE_OPS:
            u = unit_of[n.name]
            at = min((key[r][0] for r in readers.get(u, ())), default=index[n.name])
            key[u] = (at, -1, index[n.name])
    out: list[Node] = []
    for u in lexicographic_order(first, edges, key.__getitem__):
        nodes = members[u]
        mm = [n for n in nodes if n.op == "matmul"]
        out += mm + [n for n in nodes if n.op != "matmul"]  # the GEMM first, its epilogue after
    return g.with_(nodes=tuple(out))


# ---------------------------------------------------------------------------- fuse_dense


def _epilogue_operand_ok(t_shape, mm_shape) -> bool:
    """Operand shapes the GEMM epilogue can read: [M,N], [N], [1,N], [M,1], scalar. A GEMM
    result of rank > 2 ([N, T, U]: its rows are N*T) reads its own shape, or one value per
    column ([U], [1, .., 1, U]), or one value (all sizes 1)."""
    if len(mm_shape) > 2:
        t_shape = tuple(t_shape)
        ones = all(d == 1 for d in t_shape[:-1])
        return t_shape == tuple(mm_shape) or (ones and t_shape[-1:] in ((), (1,), mm_shape[-1:]))
    m, n = mm_shape
    return t_shape in ((), (1,), (n,), (1, n), (m, 1), (m, n), (1, 1))


Grow = Callable[[Node, set[str], str], "set[str] | None"]


def _chain(g: Graph, start: Node, escaping: set[str], grow: Grow) -> set[str]:
    """``start`` plus the chain after it: while the last member (the sink) has one reader and
    is read nowhere else, ``grow(reader, group, sink)`` gives the group with that reader (and
    what it brings along), or None to stop there."""
    users = g.users
    group = {start.name}
    sink = start.name
    while True:
        us = set(users.get(sink, ()))
        if len(us) != 1 or sink in escaping:
            return group
        u = g[us.pop()]
        trial = grow(u, group, sink)
        if trial is None:
            return group
        group, sink = trial, u.name


def _fuse_chains(g: Graph, prefix: str, starts: Callable[[Node], bool], group_of) -> Graph:
    """Each node ``starts`` accepts (and no earlier group took) with ``group_of(g, node,
    groups, escaping)``'s members as one group (ids ``prefix``0, 1, ...)."""
    groups = _Groups(g)
    escaping = _escaping(g)
    ids = _fresh_group_ids(g, prefix)
    changed = False
    for n in g.nodes:
        if not starts(n) or n.name in groups.group_of:
            continue
        members = group_of(g, n, groups, escaping)
        if len(members) > 1:
            groups.assign(members, next(ids))
            changed = True
    return _reorder(g, groups.group_of) if changed else g


def _dense_group(g: Graph, mm: Node, groups: _Groups, escaping: set[str]) -> set[str]:
    """The matmul ``mm`` plus the epilogue nodes it can take (a set of one when none)."""

    def grow(u: Node, group: set[str], sink: str) -> set[str] | None:
        if not is_pointwise(u) or u.name in groups.group_of or u.type != mm.type:
            return None
        if u.section == "update" and mm.section != "update":
            # a gradient stays stored (in the contiguous gradient region), and the update then
            # runs in place over the parameter instead of through a GEMM output and a copy
            return None
        if _needs_index(u) and not isinstance(mm.type.shape[-1], int):
            return None  # the epilogue knows an element's flat index only for a fixed column count
        trial = group | {u.name}
        trial |= _side_producers(g, u, trial, mm, groups, escaping)
        if any(
            not _epilogue_operand_ok(g[i].type.shape, mm.type.shape)
            for m in trial
            if m != mm.name
            for i in g[m].inputs
            if i not in trial
        ):
            return None
        return None if groups.creates_cycle(trial) else trial

    return _chain(g, mm, escaping, grow)


def _side_producers(
    g: Graph, u: Node, group: set[str], mm: Node, groups: _Groups, escaping: set[str]
) -> set[str]:
    """Pointwise producers of ``u``'s other operands that only the group reads (absorbed)."""
    out: set[str] = set()
    stack = [i for i in u.inputs if i not in group]
    while stack:
        v = stack.pop()
        n = g[v]
        if (
            v in out
            or v in group
            or v in mm.inputs
            or not is_pointwise(n)
            or v in escaping
            or (_needs_index(n) and not isinstance(mm.type.shape[-1], int))
            or v in groups.group_of
            or n.type != mm.type
            or any(x not in group | out | {v} for x in g.users[v])
        ):
            continue
        out.add(v)
        stack.extend(i for i in n.inputs if i not in group and i not in out)
    # a producer counts only when all its readers ended up in the group
    while True:
        bad = {v for v in out if any(x not in group | out for x in g.users[v])}
        if not bad:
            return out
        out -= bad


def fuse_dense(g: Graph) -> Graph:
    """Each matmul takes its bias add, activation and other same-shape pointwise consumers."""
    return _fuse_chains(g, "dense", lambda n: n.op == "matmul", _dense_group)


# ---------------------------------------------------------------------------- fuse_conv


def _channel_operand_ok(t, out) -> bool:
    """Operands a conv kernel's epilogue can read, of the output's dtype: one value ([], or
    all sizes 1), one value per output channel ([C, 1, ..., 1] against the output [N, C, D1,
    ...]), or a value of the output's shape (a residual, read at the output's own index)."""
    if t.dtype != out.dtype:
        return False
    if tuple(t.shape) == tuple(out.shape):
        return True
    if "N" in t.shape:
        return False
    if all(d == 1 for d in t.shape):
        return True
    want = (out.shape[1],) + (1,) * (len(out.shape) - 2)
    return tuple(t.shape) == want


def _conv_group(g: Graph, conv: Node, groups: _Groups, escaping: set[str]) -> set[str]:
    """``conv`` plus the chain of pointwise consumers it can apply to each output before
    storing it (a set of one when none): each the only reader of the one before, of the
    conv's type, its other operands scalars, per-channel values or values of the conv's
    shape from outside the chain."""

    def grow(u: Node, group: set[str], sink: str) -> set[str] | None:
        if (
            not is_pointwise(u)
            or u.name in groups.group_of
            or u.type != conv.type
            or _needs_index(u)
            or u.section != conv.section
        ):
            return None
        others = [i for i in OPS[u.op].data_inputs(u) if i != sink]
        if sink not in u.inputs or any(
            i in group or not _channel_operand_ok(g[i].type, conv.type) for i in others
        ):
            return None
        trial = group | {u.name}
        return None if groups.creates_cycle(trial) else trial

    return _chain(g, conv, escaping, grow)


def fuse_conv(g: Graph) -> Graph:
    """Each conv / conv_transpose (ops with ``channel_epilogue``) takes the chain of pointwise
    nodes after it whose other operands are scalars, per-channel values or values of its
    output's shape (a conv layer's bias add, its activation, a scale, a residual block's
    skip connection) as its kernel's epilogue: applied to each output
    before it is stored (``codegen.conv``), so the layer's output is written once instead of
    written, read and written again by an elementwise kernel. Only the last node of the group
    is stored: a member read elsewhere (a graph output, a value the backward pass reads) ends
    the chain, so the gradient graph is unchanged."""
    return _fuse_chains(g, "conv", lambda n: OPS[n.op].channel_epilogue, _conv_group)


# ---------------------------------------------------------------------------- fuse_elementwise


def fuse_elementwise(g: Graph) -> Graph:
    """Connected pointwise nodes of one shape and dtype become one loop (several outputs
    allowed); connected scalar ones become one kernel whatever their dtypes (the step counter
    and the bias corrections made from it)."""
    groups = _Groups(g)
    ids = _fresh_group_ids(g, "ew")
    fusible = {
        n.name
        for n in g.nodes
        if (is_pointwise(n) or _is_scalar_pointwise(n)) and n.name not in groups.group_of
    }
    mine: set[str] = set()  # groups made by this pass (those of fuse_dense stay as they are)
    changed = False
    for n in g.nodes:
        if n.name not in fusible:
            continue
        for i in OPS[n.op].data_inputs(n):
            if i not in fusible or not _one_loop(g[i], n):
                continue
            gi, gn = groups.group_of.get(i), groups.group_of.get(n.name)
            if gi is not None and gi == gn:
                continue
            trial = groups.unit(i) | groups.unit(n.name)
            if groups.creates_cycle(trial):
                continue
            gid = gn if gn in mine else gi if gi in mine else next(ids)
            mine.add(gid)
            groups.assign(trial, gid)
            changed = True
    # siblings: loops that read the same full-size value share one pass over it
    for v in g.nodes:
        if v.op in INLINE_OPS:
            continue
        readers = sorted(
            {u for u in g.users[v.name] if u in fusible and g[u].type == v.type},
            key=g.index.__getitem__,
        )
        for u in readers[1:]:
            a, b = groups.group_of.get(readers[0]), groups.group_of.get(u)
            if a is not None and a == b:
                continue
            trial = groups.unit(readers[0]) | groups.unit(u)
            if groups.creates_cycle(trial):
                continue
            gid = a if a in mine else b if b in mine else next(ids)
            mine.add(gid)
            groups.assign(trial, gid)
            changed = True
    return _reorder(g, groups.group_of) if changed else g


# ---------------------------------------------------------------------------- softmax + cross-entropy


def fuse_softmax_cross_entropy(g: Graph) -> Graph:
    """softmax_cross_entropy_grad(z, l, dy) runs in one row loop with the loss
    softmax_cross_entropy(z, l) and with the bias gradient sum(dz) over every axis but the
    classes ({axes=[0]} of dz [N, C]; {axes=[0, 1]} of a sequence's dz [N, T, C]), where present.

    All need each row's max and sum of exponentials (the loss) or the row of dz just computed
    (the column sums); the fused kernel (codegen.kernels.emit_softmax_cross_entropy)
    computes them once::

        %5 = softmax_cross_entropy(%4, labels) : f32[]             fused xent0 {
        %7 = softmax_cross_entropy_grad(%4, labels, %6) : f32[N,10]    %5 = ...   (same nodes)
        %8 = sum(%7) {axes=[0]} : f32[10]                 ==>          %7 = ...
                                                                       %8 = ...
                                                                     }
    """
    groups = _Groups(g)
    ids = _fresh_group_ids(g, "xent")
    changed = False
    for gr in g.nodes:
        if gr.op != "softmax_cross_entropy_grad" or gr.name in groups.group_of:
            continue
        members = {gr.name}
        for n in g.nodes:
            if (
                n.op == "softmax_cross_entropy"
                and n.inputs == gr.inputs[:2]
                and n.attrs == gr.attrs  # the same options (ignore_index, weight, reduction)
                and n.name not in groups.group_of
                and not groups.creates_cycle(members | {n.name})
            ):
                members.add(n.name)
                break
        for u in sorted(set(g.users[gr.name]), key=g.index.__getitem__):
            n = g[u]
            if (
                n.op == "sum"
                and tuple(n.attr("axes") or ()) == tuple(range(g[gr.name].type.rank - 1))
                and not n.attr("keepdims", False)
                and n.name not in groups.group_of
                and not groups.creates_cycle(members | {n.name})
            ):
                members.add(n.name)
                break
        if len(members) > 1:
            groups.assign(members, next(ids))
            changed = True
    return _reorder(g, groups.group_of) if changed else g


# ---------------------------------------------------------------------------- fuse_update_epilogue

# Updates that divide or take square roots (DIVIDER_OPS: Adam, AdamW, RMSprop, Adagrad,
# Adadelta) stay in the flat loop unless this is True. Measured on the 2-core Xeon (AVX-512)
# this project benchmarks on, 784-256-128-10 train step, 1 thread, A/B in one process: such an
# update is bound by the divide unit (exactly rounded sqrt and division, about 1.4 cycles per
# element either way), so the epilogue saved nothing (Adam b32/b128/b512: 1.00-1.01x the
# flat loop's step time) and cost a copy of the update's code per GEMM (about +0.1 s of CPU
# in a cold compile of the Adam step). SGD, momentum and Nesterov updates are bound by memory:
# in the epilogue the gradient is never read back (SGD b32 0.96x, b128 0.986x).
# Re-measured with the gradient never stored either (the JIT's c_unread: the update reads each
# tile of dW from the GEMM's stack buffer where the batch fits one K block), True against False
# on the same code, public train_step / fit in separate processes, 1 thread, interleaved
# rounds, load 1.3-1.7: Adam b32 0.97x, b128 1.00x, b512 (two K blocks) 1.04x, the fit epoch
# (60,000 rows, b128) 1.03x; cold compile +0.04 s of LLVM CPU (the bias updates also leave the
# flat loop: 3 kernels instead of 1). No gain where it matters, so it stays False.
DIVIDER_UPDATES_IN_EPILOGUE = False


def fuse_update_epilogue(g: Graph) -> Graph:
    """Each param's update group joins the GEMM kernel that makes its gradient, as the rest of
    that GEMM's epilogue, where it is safe (see ``update_epilogues`` for when it is not).

    The epilogue runs once per element of C after the last K block, while the element's tile
    is in L1: it reads the param and its slots at that element, stores their new values, and
    C still receives the gradient (in the grad region, where an exported library's header
    says; the JIT, whose callers never read it, skips that store where K fits one block:
    codegen.gemm's c_unread). The gradient is then never read back from memory by a loop of
    its own, and each param and slot line is touched once::

        %24 = matmul(x, %21) {transpose_a=true}         fused dense5 {
        fused ew1 {                              ==>       %24 = matmul(x, %21) {transpose_a=true}
          %32 = mul(%31, fc1.w.exp_avg)                    %32 = mul(%31, fc1.w.exp_avg)
          ...                                              ...
          %48 = sub(fc1.w, %47)                            %48 = sub(fc1.w, %47)
        }                                                }

    Every other reader of the param (the forward product, the backward product dX = dY @ W^T)
    is ordered before the merged kernel, and the scalar kernel of the step counter and the
    bias corrections just before the first such kernel. The update groups that stay apart are
    left to fuse_optimizer.
    """
    merged, after, early = update_epilogues(g)[:3]
    if not merged:
        return g
    return _reorder(g, merged, after, early)


def update_epilogues(
    g: Graph,
) -> tuple[dict[str, str], list[tuple[str, str]], set[str], dict[str, str]]:
    """Which update groups of ``g`` can run in the epilogue of their gradient's GEMM.

    Returns (node -> group id for every grouped node, merges included; ordering constraints
    (reader, member of a merged kernel); nodes to place early; param -> what happens to its
    update). An update group (as fuse_optimizer defines it) of param P joins the kernel that
    makes its gradient when:

    - the gradient is the group's only full-size operand besides P and P's slots, and the last
      node of a kernel that starts with a matmul, of P's type (a GEMM with one stored result);
    - the GEMM's operands A and B are neither P nor a slot of P (a GEMM reads them until its
      last panel, while the epilogue writes them panel by panel);
    - no path leads from the GEMM back into the update (the update needs no value made from
      the whole gradient first: a norm for clipping, a sum over other gradients);
    - every other reader of P and of its slots can run before the merged kernel (nothing
      computed from the GEMM's kernel reads P: the next step's forward pass reads the new P).

    The split entries (train_grads, apply_update) have no such group: their gradients pass
    through the grad region between the two entries, where the all-reduce runs. A group
    already merged with a GEMM counts as done: calling this again on the pass's result
    finds the same merges, so its notes explain the scheduled graph.
    """
    groups = _Groups(g)
    target_of = {v: t for t, v in g.updates}
    users = g.users
    outputs = set(g.outputs)
    by_gid: dict[str, list[Node]] = {}
    for n in g.nodes:
        if n.group is not None:
            by_gid.setdefault(n.group, []).append(n)
    readers_of = {t: [u for u in users.get(t, ())] for t, _ in g.updates}
    after: list[tuple[str, str]] = []
    succ: dict[str, list[str]] = {}  # the ordering constraints as extra edges of the walk
    early: set[str] = set()
    notes: dict[str, str] = {}
    ids = _fresh_group_ids(g, "dense")

    def reached(members: set[str]) -> set[str]:
        """Every node a path from ``members`` reaches (data edges, constraints, groups)."""
        stack = [
            u for m in members for u in list(users.get(m, ())) + succ.get(m, []) if u not in members
        ]
        seen: set[str] = set()
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            for w in groups.unit(v) if v not in members else {v}:
                seen.add(w)
                stack.extend(u for u in list(users.get(w, ())) + succ.get(w, []) if u not in seen)
        return seen

    for gid, nodes in by_gid.items():
        mm = next((n for n in nodes if n.op == "matmul"), None)
        upd = [n for n in nodes if n.section == "update"]
        if mm is not None and upd and mm.section != "update":
            p = _updated_param(g, upd, target_of)
            if p is not None:
                notes[p] = f"in the epilogue of the GEMM {mm.name} (fused {gid})"
            continue
        if mm is not None:
            continue
        parts = _update_parts(g, nodes, target_of, users, outputs)
        if parts is None:
            continue
        p, _, grads = parts
        if not DIVIDER_UPDATES_IN_EPILOGUE and any(n.op in DIVIDER_OPS for n in nodes):
            ops = sorted({n.op for n in nodes if n.op in DIVIDER_OPS})
            notes[p] = (
                f"not in a GEMM epilogue: the update uses {', '.join(ops)} (bound by the divide "
                "unit, not by memory: as fast in the flat loop, see DIVIDER_UPDATES_IN_EPILOGUE)"
            )
            continue
        why = _gemm_for_update(g, groups, p, grads, nodes, target_of)
        if isinstance(why, str):
            notes[p] = f"not in a GEMM epilogue: {why}"
            continue
        gemm = why
        trial = gemm | {n.name for n in nodes}
        seen = reached(trial)
        if seen & trial:
            notes[p] = (
                "not in a GEMM epilogue: the update needs a value computed from the whole "
                "gradient first (a path leads from the GEMM back into the update)"
            )
            continue
        written = [target_of[n.name] for n in nodes if n.name in target_of]
        readers = [r for t in written for r in readers_of.get(t, ()) if r not in trial]
        late = [r for r in readers if r in seen]
        if late:
            notes[p] = (
                f"not in a GEMM epilogue: {late[0]} ({g[late[0]].op}) reads "
                f"{next(t for t in written if late[0] in readers_of[t])} after its gradient's GEMM"
            )
            continue
        first = min(gemm, key=g.index.__getitem__)  # the matmul
        gid_new = groups.group_of.get(first) or next(ids)
        groups.assign(trial, gid_new)
        for r in readers:
            after.append((r, first))
            succ.setdefault(r, []).append(first)
        notes[p] = f"in the epilogue of the GEMM {first} (fused {gid_new})"
        # the scalar kernels the update reads (step counter, bias corrections) run just
        # before the first GEMM that needs them, not after the backward pass
        for n in nodes:
            for x in n.inputs:
                xn = g[x]
                if xn.op in INLINE_OPS:
                    early.add(x)  # a constant stands where it stood: perhaps after the GEMM
                if x in trial or xn.op in SOURCE_OPS or xn.op in INLINE_OPS or xn.type.shape:
                    continue
                unit = groups.unit(x)
                if all(g[u].type.shape == () for u in unit):
                    early |= unit
                    for u in unit:
                        if u in target_of:
                            for r in readers_of.get(target_of[u], ()):
                                if r not in unit:
                                    after.append((r, u))
                                    succ.setdefault(r, []).append(u)
    return groups.group_of, after, early, notes


def _updated_param(g: Graph, nodes: list[Node], target_of: dict[str, str]) -> str | None:
    """The one param that ``nodes`` write, or None."""
    ps = [t for n in nodes if (t := target_of.get(n.name)) is not None and g[t].op == "param"]
    return ps[0] if len(ps) == 1 else None


def _gemm_for_update(
    g: Graph, groups: _Groups, p: str, grads: list[str], nodes: list[Node], target_of: dict
) -> set[str] | str:
    """The members of the GEMM kernel whose epilogue can take ``p``'s update, or why none."""
    if len(grads) != 1:
        return f"the update reads {len(grads)} full-size values besides the param and its slots"
    s = grads[0]
    sn = g[s]
    unit = groups.unit(s)
    first = min(unit, key=g.index.__getitem__)
    last = max(unit, key=g.index.__getitem__)
    if g[first].op != "matmul":
        what = "a kernel of " + "+".join(g[u].op for u in sorted(unit, key=g.index.__getitem__))
        return f"its gradient {s} is made by {what}, not a GEMM"
    if last != s or any(u != s and any(x not in unit for x in g.users.get(u, ())) for u in unit):
        return f"the GEMM of its gradient {s} stores more than the gradient"
    if sn.type != g[p].type or g[first].section == "update":
        return f"its gradient {s} is not a backward GEMM's result of {p}'s type"
    written = {target_of[n.name] for n in nodes if n.name in target_of}
    bad = [x for x in g[first].inputs if x in written]
    if bad:
        return f"the GEMM {first} reads {bad[0]}, which the update writes"
    return set(unit)


# ---------------------------------------------------------------------------- explain


def fuse_optimizer(g: Graph) -> Graph:
    """Mark the per-parameter update groups that have one structure as one flat update.

    An update group (made by fuse_elementwise) is a group of section "update" whose elementwise
    nodes all have the shape of one param ``P``, whose update targets are ``P`` and states with
    ``slot_of == P`` (each written from the group), and none of whose members is read outside
    the group. Two such groups are alike when their nodes have the same ops, attrs and dtypes,
    connect the same way, read the same scalar operands (lr, bias corrections, constants) by
    name and their full-size operands (param, gradient, slots) in the same roles. Each set of
    two or more alike groups gets group ids ``"optK|<old id>"``; the scheduler
    (ir.passes.schedule) turns such a set into one loop over the contiguous param, gradient
    and state regions when the memory layout allows it, else keeps one kernel per group.
    """
    groups: dict[str, list[Node]] = {}
    for n in g.nodes:
        if n.group is not None:
            groups.setdefault(n.group, []).append(n)
    target_of = {v: t for t, v in g.updates}
    users = g.users
    outputs = set(g.outputs)
    by_sig: dict[tuple, list[str]] = {}
    for gid, nodes in groups.items():
        sig = _update_signature(g, nodes, target_of, users, outputs)
        if sig is not None:
            by_sig.setdefault(sig, []).append(gid)
    rename: dict[str, str] = {}
    k = 0
    for gids in by_sig.values():
        if len(gids) < 2:
            continue
        for gid in gids:
            rename[gid] = f"opt{k}|{gid}"
        k += 1
    if not rename:
        return g
    return g.with_(
        nodes=tuple(n.with_(group=rename[n.group]) if n.group in rename else n for n in g.nodes)
    )


def _update_signature(
    g: Graph, nodes: list[Node], target_of: dict[str, str], users: dict, outputs: set[str]
) -> tuple | None:
    """The structure of an update group with names abstracted (see fuse_optimizer), or None."""
    if "|" in (nodes[0].group or ""):
        return None
    parts = _update_parts(g, nodes, target_of, users, outputs)
    return None if parts is None else parts[1]


def _update_parts(
    g: Graph, nodes: list[Node], target_of: dict[str, str], users: dict, outputs: set[str]
) -> tuple[str, tuple, list[str]] | None:
    """(param P, the group's signature, its full-size operands other than P and P's slots:
    the gradient) when ``nodes`` are the update group of one param, else None.

    An update group: every node pointwise, of section "update" and of P's type; the group
    writes P and only states with ``slot_of == P``; no member is read outside the group or
    is a graph output."""
    shape = nodes[-1].type.shape
    members = {n.name: i for i, n in enumerate(nodes)}
    params = [
        target_of[n.name]
        for n in nodes
        if n.name in target_of and g[target_of[n.name]].op == "param"
    ]
    if len(params) != 1:
        return None
    p = params[0]
    ptype = g[p].type
    if ptype.is_batched or shape != ptype.shape:
        return None
    roles: dict[str, tuple] = {}
    keys: list[tuple] = []
    for n in nodes:
        spec = OPS[n.op]
        if n.section != "update" or not is_pointwise(n) or n.type != ptype:
            return None
        if spec.data_operands is not None or spec.needs_index:
            return None
        if n.name in outputs or any(u not in members for u in users.get(n.name, ())):
            return None
        ins: list[tuple] = []
        for x in n.inputs:
            if x in members:
                ins.append(("n", members[x]))
                continue
            xn = g[x]
            if xn.type.size(1) == 1 and not xn.type.is_batched:
                ins.append(("s", x, xn.type))  # a scalar: shared by name
            elif xn.type != ptype:
                return None
            elif x == p:
                ins.append(("p",))
            elif xn.op == "state" and dict(xn.attrs).get("slot_of") == p:
                ins.append(("slot", x[len(p) + 1 :] if x.startswith(p + ".") else x))
            else:
                roles.setdefault(x, ("x", len(roles)))  # e.g. the gradient
                ins.append(roles[x])
        upd: tuple[str, ...] | None = None
        if n.name in target_of:
            t = target_of[n.name]
            tn = g[t]
            if t == p:
                upd = ("p",)
            elif tn.op == "state" and dict(tn.attrs).get("slot_of") == p and t.startswith(p + "."):
                upd = ("slot", t[len(p) + 1 :])
            else:
                return None
        keys.append((n.op, attrs_key(n.attrs), tuple(ins), upd))
    return p, (ptype.dtype, tuple(keys)), list(roles)


def explain_fusion(before: Graph, after: Graph) -> list[tuple[str, bool, str]]:
    """For every matmul and activation of ``before``: (name, fused?, what happened or why not).

    A node is fused when ``after`` puts it in a group with other nodes. The reasons given for
    an unfused node: removed by an earlier pass; another consumer reads an intermediate (the
    value is needed by the backward pass, or by other nodes); it is a graph output or update;
    or the pattern is unsupported (the consumer is not pointwise or changes the shape).
    """
    members: dict[str, list[Node]] = {}
    for n in after.nodes:
        if n.group is not None:
            members.setdefault(n.group, []).append(n)
    out: list[tuple[str, bool, str]] = []
    escaping = _escaping(before)
    for n in before.nodes:
        if n.op != "matmul" and n.op not in ACTIVATIONS:
            continue
        a = after.by_name.get(n.name)
        if a is None:
            out.append((n.name, False, "removed (simplified or dead)"))
            continue
        grp = members.get(a.group, []) if a.group is not None else []
        if len(grp) > 1:
            mm = next((m.name for m in grp if m.op == "matmul"), None)
            cv = next((m for m in grp if OPS[m.op].channel_epilogue), None)
            what = (
                f"in the epilogue of matmul {mm}"
                if mm and mm != n.name
                else "as the GEMM of"
                if mm
                else f"in the epilogue of {cv.op} {cv.name}"
                if cv
                else "in the elementwise loop"
            )
            ops = "+".join(m.op for m in grp)
            out.append((n.name, True, f"{what} kernel {a.group} ({ops})"))
            continue
        out.append((n.name, False, _why_not(before, n, escaping)))
    return out


def _why_not(g: Graph, n: Node, escaping: set[str]) -> str:
    users = g.users
    if n.op == "matmul":
        us = sorted(set(users.get(n.name, ())), key=g.index.__getitem__)
        if n.name in escaping:
            return "its result is a graph output or update, stored by itself"
        if len(us) > 1:
            return _consumers_text("another consumer: its result is also read by", g, us)
        if not us:
            return "unused"
        u = g[us[0]]
        if not is_pointwise(u) or u.type != n.type:
            return f"unsupported pattern: its only consumer {u.name} is {u.op} : {u.type}"
        if u.section == "update" and n.section != "update":
            return f"its consumer {u.name} is the optimizer update: the gradient stays stored"
        return f"its consumer {u.name} ({u.op}) is already fused elsewhere or would make a cycle"
    x = n.inputs[0]
    p = g[x]
    if p.op in SOURCE_OPS:
        return f"unsupported pattern: its input {x} is a {p.op}"
    others = sorted(set(users[x]) - {n.name}, key=g.index.__getitem__)
    if others:
        return _consumers_text(f"another consumer: its input {x} is also read by", g, others)
    if x in escaping:
        return f"its input {x} is a graph output or update"
    if p.op not in ("matmul", "add") and not is_pointwise(p):
        return f"unsupported pattern: its input {x} is made by {p.op}, not a matmul (+ bias)"
    return f"unsupported pattern: its input {x} ({p.op}) is not fused with a matmul"


def _consumers_text(prefix: str, g: Graph, names: list[str]) -> str:
    back = [u for u in names if g[u].section == "backward"]
    listed = ", ".join(f"{u} ({g[u].op})" for u in names[:4]) + (" ..." if len(names) > 4 else "")
    tail = " (value needed by the backward pass)" if back else ""
    return f"{prefix} {listed}{tail}"
