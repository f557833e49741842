"""Fusion: mark nodes that run as one kernel (``Node.group``), and order the graph so they can.

Four passes, each Graph -> Graph (run in this order at -O2):

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

``fuse_optimizer``
    Update groups (one per param, from fuse_elementwise) that have the same structure (ops,
    attrs, scalar operands such as lr and the bias corrections; param, gradient and slots in
    the same roles) are marked as one set (group ids ``"optK|<id>"``). The scheduler makes a
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
groups; the scheduler makes them one loop where the memory layout allows it).

``explain_fusion(before, after)`` says, for every matmul and activation, whether it was fused
and, if not, why.
"""

from __future__ import annotations

from ..algorithms import lexicographic_order
from ..graph import Graph, Node, attrs_key
from ..ops import ACTIVATIONS, INLINE_OPS, OPS, POINTWISE_OPS, SOURCE_OPS


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


def _reorder(g: Graph, group_of: dict[str, str]) -> Graph:
    """``g`` with groups stamped on the nodes and emitted contiguously in a topological order."""
    # a unit is ("group", id) or ("node", name): a group id may equal some node's name
    unit_of = {
        n.name: ("group", group_of[n.name]) if n.name in group_of else ("node", n.name)
        for n in g.nodes
    }
    index = g.index
    first: dict[tuple[str, str], int] = {}
    edges: list[tuple[tuple[str, str], tuple[str, str]]] = []
    readers: dict[tuple[str, str], list[int]] = {}
    for n in g.nodes:
        u = unit_of[n.name]
        first[u] = min(first.get(u, index[n.name]), index[n.name])
        for i in n.inputs:
            if unit_of[i] != u:
                edges.append((unit_of[i], u))
    for a, b in dict.fromkeys(edges):
        readers.setdefault(a, []).append(first[b])
    members: dict[tuple[str, str], list[Node]] = {}
    for n in g.nodes:
        members.setdefault(unit_of[n.name], []).append(n.with_(group=group_of.get(n.name)))
    # a unit runs where its first member stood; a source stands just before its first reader
    key = {u: (first[u], 0, first[u]) for u in first}
    for n in g.nodes:
        if n.op in SOURCE_OPS:
            u = unit_of[n.name]
            key[u] = (min(readers.get(u, ()), default=index[n.name]), -1, index[n.name])
    out: list[Node] = []
    for u in lexicographic_order(first, edges, key.__getitem__):
        nodes = members[u]
        mm = [n for n in nodes if n.op == "matmul"]
        out += mm + [n for n in nodes if n.op != "matmul"]  # the GEMM first, its epilogue after
    return g.with_(nodes=tuple(out))


# ---------------------------------------------------------------------------- fuse_dense


def _epilogue_operand_ok(t_shape, mm_shape) -> bool:
    """Operand shapes the GEMM epilogue can read: [M,N], [N], [1,N], [M,1], scalar."""
    m, n = mm_shape
    return t_shape in ((), (1,), (n,), (1, n), (m, 1), (m, n), (1, 1))


def _dense_group(g: Graph, mm: Node, groups: _Groups, escaping: set[str]) -> set[str]:
    """The matmul ``mm`` plus the epilogue nodes it can take (a set of one when none)."""
    users = g.users
    group = {mm.name}
    sink = mm.name
    while True:
        us = set(users.get(sink, ()))
        if len(us) != 1 or sink in escaping:
            break
        u = g[us.pop()]
        if not is_pointwise(u) or u.name in groups.group_of or u.type != mm.type:
            break
        if u.section == "update" and mm.section != "update":
            # a gradient stays stored (in the contiguous gradient region), and the update then
            # runs in place over the parameter instead of through a GEMM output and a copy
            break
        if _needs_index(u) and not isinstance(mm.type.shape[1], int):
            break  # the epilogue knows an element's flat index only for a fixed column count
        trial = group | {u.name}
        trial |= _side_producers(g, u, trial, mm, groups, escaping)
        if any(
            not _epilogue_operand_ok(g[i].type.shape, mm.type.shape)
            for m in trial
            if m != mm.name
            for i in g[m].inputs
            if i not in trial
        ):
            break
        if groups.creates_cycle(trial):
            break
        group, sink = trial, u.name
    return group


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
            or (_needs_index(n) and not isinstance(mm.type.shape[1], int))
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
    groups = _Groups(g)
    escaping = _escaping(g)
    ids = _fresh_group_ids(g, "dense")
    changed = False
    for n in g.nodes:
        if n.op != "matmul" or n.name in groups.group_of:
            continue
        members = _dense_group(g, n, groups, escaping)
        if len(members) > 1:
            groups.assign(members, next(ids))
            changed = True
    return _reorder(g, groups.group_of) if changed else g


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
    softmax_cross_entropy(z, l) and with the bias gradient sum(dz) {axes=[0]}, where present.

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
                and n.name not in groups.group_of
                and not groups.creates_cycle(members | {n.name})
            ):
                members.add(n.name)
                break
        for u in sorted(set(g.users[gr.name]), key=g.index.__getitem__):
            n = g[u]
            if (
                n.op == "sum"
                and tuple(n.attr("axes") or ()) == (0,)
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
    return (ptype.dtype, tuple(keys))


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
            what = (
                f"in the epilogue of matmul {mm}"
                if mm and mm != n.name
                else "as the GEMM of"
                if mm
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
