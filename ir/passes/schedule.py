"""Scheduling and static memory planning: kernels in order, liveness, buffers in one arena.

A value lives in one of these regions:
    param, state      the persistent flat regions (offsets fixed by the model's layout)
    input, output     caller-owned buffers, passed as an array of pointers (index = slot)
    grad              the gradients of the params at the front of the workspace, laid out like
                      the param region (gradient of P at grad_base + offset(P))
    arena             intermediates; offset = fixed + row * N bytes, reused once dead; an
                      elementwise kernel may also write a result over an operand of the same
                      type that dies in that kernel (in place, see _in_place_aliases)
    inline            constants and sizes, computed in registers where used (no memory)
    fused             computed and consumed inside one kernel (no memory)

The workspace is [grad | arena fixed part | arena per-row part x N]; its size for batch N is
``workspace_bytes(N)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from ..errors import VerifyError
from ..graph import Graph, Node
from ..ops import INLINE_OPS, OPS, SOURCE_OPS
from ..plan import ALIGN, Buffer, Kernel, Schedule, align, gemm_result
from .fuse import update_epilogues

__all__ = ["ALIGN", "Buffer", "Kernel", "Schedule", "align", "form_kernels", "schedule"]


def kernel_kind(node: Node) -> str:
    """The kernel kind of ``node`` running alone (``Op.kernel_kind``)."""
    return OPS[node.op].kernel_kind


def form_kernels(g: Graph) -> list[list[Node]]:
    """Nodes grouped into kernels in graph order: a fusion group is one kernel, others alone."""
    groups: dict[str, list[Node]] = {}
    order: list[list[Node]] = []
    for n in g.nodes:
        if n.op in SOURCE_OPS or n.op in INLINE_OPS:
            continue
        if n.group is None:
            order.append([n])
        elif n.group in groups:
            groups[n.group].append(n)
        else:
            groups[n.group] = [n]
            order.append(groups[n.group])
    return order


@dataclass
class _Plan:
    """What ``schedule`` works out, step by step (each step fills some fields)."""

    g: Graph
    layout: dict[str, Buffer]
    kernels_nodes: list[list[Node]]
    kernel_of: dict[str, int]
    # matmul kernels whose C holds another value than their last node: kernel -> that value
    gemm_out: dict[int, str] = field(default_factory=dict)
    buffers: dict[str, Buffer] = field(default_factory=dict)
    input_slots: list[str] = field(default_factory=list)
    readers: dict[str, set[int]] = field(default_factory=dict)  # value -> kernels reading it
    direct_out: dict[str, int] = field(default_factory=dict)  # value -> output slot it is
    out_copies: list[Kernel] = field(default_factory=list)
    in_place: dict[str, str] = field(default_factory=dict)  # update value -> its target
    update_copies: list[Kernel] = field(default_factory=list)
    grad_values: dict[str, str] = field(default_factory=dict)  # gradient value -> param
    grad_at: dict[str, int] = field(default_factory=dict)  # gradient -> offset in grad region
    grad_bytes: int = 0
    # arena values: (name, first kernel, last kernel, fixed bytes, bytes per row)
    intervals: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    unplanned_fixed: int = 0
    unplanned_row: int = 0
    arena_fixed: int = 0
    arena_row: int = 0


def schedule(
    g: Graph,
    layout: dict[str, Buffer],
    grads: dict[str, str] | None = None,
    *,
    reuse: bool = True,
    in_place_reuse: bool = True,
    grad_region: int = 0,
) -> Schedule:
    """Order the kernels of ``g`` and give every value a buffer.

    Args:
        g: the (fused) graph; its node order is a valid execution order.
        layout: the buffers of params and states (regions "param" and "state").
        grads: param -> gradient value; these go to the contiguous "grad" region.
        reuse: share arena memory between values whose lifetimes do not overlap (-O1 and up).
        in_place_reuse: with ``reuse``, let an elementwise kernel write a result into the buffer
            of an operand of the same type that dies in that kernel (see _in_place_aliases).
        grad_region: the grad region's least size in bytes (the split step's: the whole param
            region, also where non-trainable params lie past the last trainable one).
    """
    plan = _start(g, layout)
    _plan_outputs(plan)
    _plan_readers(plan)
    _plan_updates(plan)
    _plan_gradients(plan, grads or {})
    plan.grad_bytes = max(plan.grad_bytes, grad_region)
    _plan_values(plan)
    _plan_arena(plan, reuse, in_place_reuse)
    kernels, flat_notes = _kernel_list(plan)
    _check_updates_in_place(g, kernels, plan.buffers)
    return Schedule(
        g,
        kernels,
        plan.buffers,
        plan.grad_bytes,
        plan.arena_fixed,
        plan.arena_row,
        plan.unplanned_fixed,
        plan.unplanned_row,
        plan.input_slots,
        list(g.outputs),
        flat_notes,
        update_notes=update_epilogues(g)[3] if g.updates else {},
    )


def _start(g: Graph, layout: dict[str, Buffer]) -> _Plan:
    """The kernels (in graph order), and the buffers fixed from the start: inputs by slot,
    params and states from the model's layout, constants and sizes inline."""
    kernels_nodes = form_kernels(g)
    kernel_of = {n.name: k for k, nodes in enumerate(kernels_nodes) for n in nodes}
    plan = _Plan(g, layout, kernels_nodes, kernel_of)
    for k, nodes in enumerate(kernels_nodes):
        if kernel_kind(nodes[0]) == "matmul" and gemm_result(nodes) != nodes[-1].name:
            plan.gemm_out[k] = gemm_result(nodes)
    plan.input_slots = [n.name for n in g.inputs]
    for i, name in enumerate(plan.input_slots):
        plan.buffers[name] = Buffer(name, "input", slot=i)
    for n in g.nodes:
        if n.op in ("param", "state"):
            if n.name not in layout:
                raise KeyError(f"schedule: {n.op} {n.name} has no place in the model's layout")
            plan.buffers[n.name] = layout[n.name]
        elif n.op in INLINE_OPS:
            plan.buffers[n.name] = Buffer(n.name, "inline")
    return plan


def _plan_outputs(plan: _Plan) -> None:
    """Outputs are written straight into the caller's buffer unless the value has storage
    already (a param, an input, another output): then a copy kernel writes them."""
    for j, name in enumerate(plan.g.outputs):
        if name in plan.direct_out or name in plan.buffers:
            plan.out_copies.append(Kernel(f"k_out{j}", "copy", (name,), (), copy_to=f"output:{j}"))
        else:
            plan.direct_out[name] = j


def _plan_readers(plan: _Plan) -> None:
    """For every value, the kernels that read it from memory (not from inside their loop)."""
    for k, nodes in enumerate(plan.kernels_nodes):
        for n in nodes:
            for i in n.inputs:
                if plan.kernel_of.get(i) != k:
                    plan.readers.setdefault(i, set()).add(k)


def _plan_updates(plan: _Plan) -> None:
    """An update writes its new value over its target in place when that is safe
    (``_can_update_in_place``); otherwise a copy kernel writes it after all kernels."""
    for target, value in plan.g.updates:
        if _can_update_in_place(plan, target, value):
            plan.in_place[value] = target
        else:
            copy = Kernel(f"k_upd_{target}", "copy", (value,), (), copy_to=target)
            plan.update_copies.append(copy)


def _can_update_in_place(plan: _Plan, target: str, value: str) -> bool:
    """Whether ``value`` can be written over ``target``: made by an elementwise kernel of the
    target's shape, after every other reader of the old value ran, and not as the C of a GEMM
    whose epilogue reads the old value (a GEMM accumulates in C before the epilogue reads the
    operands; found by graphc.fuzz). A value that a GEMM's epilogue stores besides C (an
    optimizer update, ir.passes.fuse.fuse_update_epilogue) is written element by element
    after that element's operands were read, so it may go over its target, unless the GEMM
    itself multiplies the target (A and B are read until the last panel)."""
    vnode, tnode = plan.g[value], plan.g[target]
    k = plan.kernel_of.get(value)
    if k is None or value in plan.direct_out or value in plan.in_place:
        return False
    nodes = plan.kernels_nodes[k]
    reads_old = [nd for nd in nodes if target in nd.inputs]
    gemm_ok = True
    if kernel_kind(nodes[0]) == "matmul":
        if value == plan.gemm_out.get(k, nodes[-1].name):
            gemm_ok = not reads_old
        else:
            gemm_ok = target not in nodes[0].inputs
    return (
        vnode.type.shape == tnode.type.shape
        and kernel_kind(vnode) == "elementwise"
        and all(r <= k for r in plan.readers.get(target, ()))
        and all(nd.type.shape == tnode.type.shape for nd in reads_old)
        and gemm_ok
    )


def _plan_gradients(plan: _Plan, grads: dict[str, str]) -> None:
    """A gradient sits at grad_base + the offset of its param (the grad region is laid out like
    the param region, so fuse_optimizer's flat loops see param i and its gradient at one
    index) when it has its param's size; ``grad_bytes`` is the region's size so far."""
    g, layout = plan.g, plan.layout
    plan.grad_values = {v: p for p, v in grads.items()}
    for v, p in plan.grad_values.items():
        pb = layout.get(p)
        if (
            v in g.by_name
            and pb is not None
            and pb.region == "param"
            and not g[v].type.is_batched
            and g[v].type.size(1) * g[v].type.itemsize == pb.size
        ):
            plan.grad_at[v] = pb.offset
    ends = (
        align(layout[plan.grad_values[v]].offset + layout[plan.grad_values[v]].size)
        for v in plan.grad_at
    )
    plan.grad_bytes = max(ends, default=0)


def _plan_values(plan: _Plan) -> None:
    """A buffer for every value a kernel computes: none ("fused") when no one reads it from
    memory, the caller's output, its update target, its place in the grad region, or an
    interval of the arena (placed by ``_plan_arena``)."""
    copied = {kk.nodes[0] for kk in plan.out_copies + plan.update_copies}
    needed = set(plan.readers) | set(plan.direct_out) | set(plan.in_place) | copied
    needed |= set(plan.gemm_out.values())  # C of a GEMM that updates a param in its epilogue
    n_kernels = len(plan.kernels_nodes) + len(plan.out_copies) + len(plan.update_copies)
    for k, nodes in enumerate(plan.kernels_nodes):
        for n in nodes:
            if n.name in plan.buffers:
                continue
            if n.name not in needed:
                plan.buffers[n.name] = Buffer(n.name, "fused")
            elif n.name in plan.direct_out:
                plan.buffers[n.name] = Buffer(n.name, "output", slot=plan.direct_out[n.name])
            elif n.name in plan.in_place:
                tb = plan.buffers[plan.in_place[n.name]]
                plan.buffers[n.name] = Buffer(
                    n.name, tb.region, tb.offset, tb.offset_row, tb.size, tb.size_row, tb.slot
                )
            elif not _grad_buffer(plan, n):
                last = n_kernels if n.name in copied else max(plan.readers.get(n.name, {k}) | {k})
                _arena_interval(plan, n, k, last)


def _grad_buffer(plan: _Plan, n: Node) -> bool:
    """Give gradient ``n`` its place in the grad region (its param's offset, or the region's
    end when its size differs); False when ``n`` is no gradient with a place there."""
    size = n.type.size(1) * n.type.itemsize
    if n.name in plan.grad_at:
        plan.buffers[n.name] = Buffer(n.name, "grad", plan.grad_at[n.name], 0, size)
        return True
    if n.name in plan.grad_values and not n.type.is_batched:
        plan.buffers[n.name] = Buffer(n.name, "grad", plan.grad_bytes, 0, size)
        plan.grad_bytes += align(size)
        return True
    return False


def _arena_interval(plan: _Plan, n: Node, first: int, last: int) -> None:
    """Value ``n`` lives in the arena from kernel ``first`` to kernel ``last``."""
    per = n.type.elements_per_row() * n.type.itemsize
    size, size_row = (0, per) if n.type.is_batched else (per, 0)
    plan.intervals.append((n.name, first, last, size, size_row))
    plan.unplanned_fixed += align(size)
    plan.unplanned_row += align(size_row)


def _plan_arena(plan: _Plan, reuse: bool, in_place_reuse: bool) -> None:
    """Offsets in the arena (after the grad region): the fixed part, then the per-row part;
    values whose lifetimes do not overlap share memory when ``reuse``."""
    g, intervals = plan.g, plan.intervals
    alias = _in_place_aliases(g, plan.kernels_nodes, intervals) if reuse and in_place_reuse else {}
    merged = _merge_aliased(intervals, alias)
    plan.arena_fixed, fixed_off = _place(
        [(nm, s, e, sz) for nm, s, e, sz, _ in merged if sz], reuse
    )
    plan.arena_row, row_off = _place([(nm, s, e, sr) for nm, s, e, _, sr in merged if sr], reuse)
    base = plan.grad_bytes
    for nm, _, _, sz, sr in intervals:
        root = alias.get(nm, nm)
        if sz:
            plan.buffers[nm] = Buffer(nm, "arena", base + fixed_off[root], 0, sz, 0)
        if sr:
            plan.buffers[nm] = Buffer(nm, "arena", base + plan.arena_fixed, row_off[root], 0, sr)


def _kernel_list(plan: _Plan) -> tuple[list[Kernel], dict[str, str]]:
    """The kernels in execution order (fuse_optimizer's sets as one flat loop where the layout
    allows it), then the output and update copies; and the flat sets' notes."""
    flat_at, flat_skip, flat_notes = _flat_updates(
        plan.g, plan.kernels_nodes, plan.buffers, plan.in_place
    )
    kernels: list[Kernel] = []
    for k, nodes in enumerate(plan.kernels_nodes):
        if k in flat_skip:
            continue
        if k in flat_at:
            kernels.append(flat_at[k])
            continue
        names = tuple(n.name for n in nodes)
        stores = tuple(n for n in names if plan.buffers[n].region != "fused")
        kind = kernel_kind(nodes[0]) if len(nodes) == 1 else _group_kind(nodes)
        kernels.append(
            Kernel(f"k{k}_{_slug(nodes[0])}", kind, names, stores, gemm_out=plan.gemm_out.get(k))
        )
    return kernels + plan.out_copies + plan.update_copies, flat_notes


def _check_updates_in_place(g: Graph, kernels: list[Kernel], buffers: dict[str, Buffer]) -> None:
    """The order the step's updates need: a value written over its update target in place is
    written after every other kernel that reads the target's old value ran (the next step, and
    no later kernel of this one, sees the new value), and never by a GEMM into its own operand
    A or B or into C while the epilogue reads the old value.

    Raises:
        VerifyError: a kernel reads an update target after the kernel that overwrote it (a
            graphc bug: the scheduler would have made a copy at the end of the step).
    """
    where: dict[str, int] = {}
    for k, kern in enumerate(kernels):
        for v in kern.stores:
            where[v] = k
    for target, value in g.updates:
        vb, tb = buffers.get(value), buffers.get(target)
        if (
            vb is None
            or tb is None
            or (vb.region, vb.offset, vb.slot)
            != (
                tb.region,
                tb.offset,
                tb.slot,
            )
        ):
            continue  # not in place: a copy kernel writes it after all the others
        writer = where.get(value)
        if writer is None:
            continue
        for j, kern in enumerate(kernels):
            if kern.kind == "copy":
                continue  # output and update copies run last by design
            reads = [n for n in kern.nodes if target in g[n].inputs]
            if j > writer and reads:
                raise VerifyError(
                    f"schedule: kernel {kern.name} reads {target} after kernel "
                    f"{kernels[writer].name} wrote its update {value} over it"
                )
            if j == writer and kern.kind == "matmul":
                mm = g[kern.nodes[0]]
                c = kern.gemm_out or kern.nodes[-1]
                if target in mm.inputs or (value == c and reads):
                    raise VerifyError(
                        f"schedule: GEMM kernel {kern.name} writes {value} over {target}, "
                        "which it reads as an operand"
                    )


def _flat_updates(
    g: Graph, kernels_nodes: list[list[Node]], buffers: dict[str, Buffer], in_place: dict[str, str]
) -> tuple[dict[int, Kernel], set[int], dict[str, str]]:
    """The flat update kernels of the groups fuse_optimizer marked ``"optK|..."``.

    A set of alike update groups becomes one elementwise Kernel over ``elements`` values that
    runs the nodes of the group whose param comes first, at the place of the set's last group,
    when: the params are adjacent in the param region (offsets follow with 64-byte alignment),
    and every full-size operand and stored value of each group lies in one region at
    ``base + offset(param)`` with the same base for all groups (gradients in the grad region,
    slots in their state sub-regions, results written in place). Padding between params is
    zero in every region and stays finite and zero under the optimizers' formulas. Otherwise
    the groups stay one kernel each. Returns (kernel index -> flat Kernel, kernel indexes
    dropped, set id -> what was done or why not).
    """
    sets: dict[str, list[int]] = {}
    for k, nodes in enumerate(kernels_nodes):
        gid = nodes[0].group
        if gid and "|" in gid and all(n.group == gid for n in nodes):
            sets.setdefault(gid.split("|", 1)[0], []).append(k)
    at: dict[int, Kernel] = {}
    skip: set[int] = set()
    notes: dict[str, str] = {}
    for sid, ks in sets.items():
        why = (
            _why_not_flat(g, [kernels_nodes[k] for k in ks], buffers, in_place)
            if len(ks) > 1
            else "only one group left"
        )
        if isinstance(why, str):
            notes[sid] = f"not flat: {why}"
            continue
        first, elements = why
        nodes = kernels_nodes[ks[first]]
        names = tuple(n.name for n in nodes)
        stores = tuple(n for n in names if buffers[n].region != "fused")
        at[max(ks)] = Kernel(
            f"k{max(ks)}_{sid}_flat", "elementwise", names, stores, elements=elements
        )
        skip |= set(ks) - {max(ks)}
        notes[sid] = f"one loop over {elements} elements for {len(ks)} params"
    return at, skip, notes


def _why_not_flat(
    g: Graph, groups: list[list[Node]], buffers: dict[str, Buffer], in_place: dict[str, str]
) -> str | tuple[int, int]:
    """(index of the group whose param comes first, element count) or why not flat."""
    target_of = {v: t for t, v in g.updates}
    params = []
    for nodes in groups:
        ps = [
            target_of[n.name]
            for n in nodes
            if n.name in target_of and g[target_of[n.name]].op == "param"
        ]
        if len(ps) != 1:
            return "a group does not update exactly one param"
        params.append(ps[0])
    dtypes = {g[p].type.dtype for p in params}
    if len(dtypes) != 1:
        return f"params of several dtypes ({', '.join(sorted(dtypes))})"
    pbs = [buffers[p] for p in params]
    order = sorted(range(len(groups)), key=lambda i: pbs[i].offset)
    for a, b in pairwise(order):
        if pbs[b].offset != align(pbs[a].offset + pbs[a].size):
            return f"params {params[a]} and {params[b]} are not adjacent in the param region"
    itemsize = g[params[0]].type.itemsize
    first = order[0]
    base: dict[int, tuple[str, int]] = {}
    for i, nodes in enumerate(groups):
        members = {n.name for n in nodes}
        pos = 0
        for n in nodes:
            for x in list(n.inputs) + [n.name]:
                if x in members and x != n.name:
                    continue
                xt = g[x].type
                if x != n.name and xt.size(1) == 1 and not xt.is_batched:
                    continue  # a scalar operand
                buf = buffers[x]
                if buf.region == "fused":
                    continue
                if buf.region not in ("param", "state", "grad") or buf.offset_row or buf.size_row:
                    return f"{x} is in the {buf.region} region, not a param/grad/state region"
                if x == n.name and x not in in_place:
                    return f"{x} is not written in place"
                key = (buf.region, buf.offset - pbs[i].offset)
                if i == 0:
                    base[pos] = key
                elif base.get(pos) != key:
                    return (
                        f"{x} is not at the same place relative to its param as in the "
                        f"other groups ({buf.describe()})"
                    )
                pos += 1
    end = pbs[order[-1]].offset + pbs[order[-1]].size
    return first, (end - pbs[first].offset) // itemsize


def _in_place_aliases(
    g: Graph, kernels_nodes: list[list[Node]], intervals: list[tuple[str, int, int, int, int]]
) -> dict[str, str]:
    """Results of elementwise kernels that take over the arena buffer of a dying operand.

    A kernel of kind "elementwise" loads every operand element before it stores the results of
    that element (codegen.kernels.emit_elementwise), so a result may overwrite an operand that
    has the same type (hence the same index in the loop) and whose last reader is this kernel.
    Each operand buffer goes to at most one result. Returns result -> root value whose buffer
    it shares (chains resolved).
    """
    info = {nm: (s, e) for nm, s, e, _, _ in intervals}
    alias: dict[str, str] = {}
    for k, nodes in enumerate(kernels_nodes):
        if (kernel_kind(nodes[0]) if len(nodes) == 1 else _group_kind(nodes)) != "elementwise":
            continue
        members = {n.name for n in nodes}
        taken: set[str] = set()
        for n in nodes:
            if n.name not in info or info[n.name][0] != k:
                continue
            cands = [x for nd in nodes for x in OPS[nd.op].data_inputs(nd) if x not in members]
            for x in cands:
                if (
                    x in info
                    and x not in taken
                    and info[x][1] == k
                    and info[x][0] < k
                    and g[x].type == n.type
                ):
                    root = alias.get(x, x)
                    alias[n.name] = root
                    taken.add(x)
                    break
    return alias


def _merge_aliased(
    intervals: list[tuple[str, int, int, int, int]], alias: dict[str, str]
) -> list[tuple[str, int, int, int, int]]:
    """The intervals with every alias folded into its root (which then lives until the last end)."""
    end = {nm: e for nm, _, e, _, _ in intervals}
    for nm, root in alias.items():
        end[root] = max(end[root], end[nm])
    return [(nm, s, end[nm], sz, sr) for nm, s, _, sz, sr in intervals if nm not in alias]


def _group_kind(nodes: list[Node]) -> str:
    kinds = {kernel_kind(n) for n in nodes}
    if "matmul" in kinds:
        return "matmul"
    if "conv" in kinds:  # a conv and its epilogue (fuse_conv)
        return "conv"
    if "rowwise" in kinds:  # a row loop with reductions over its rows (fuse_softmax_cross_entropy)
        return "rowwise"
    if kinds == {"elementwise"}:
        return "elementwise"
    return "+".join(sorted(kinds))


def _slug(n: Node) -> str:
    return n.op


def _place(items: list[tuple[str, int, int, int]], reuse: bool) -> tuple[int, dict[str, int]]:
    """Greedy best-fit by size: each value at the lowest aligned offset free during its lifetime."""
    placed: list[tuple[int, int, int, int]] = []  # offset, size, start, end
    out: dict[str, int] = {}
    peak = 0
    for name, start, end, size in sorted(items, key=lambda t: (-t[3], t[1], t[0])):
        size = align(size)
        if not reuse:
            out[name] = peak
            peak += size
            continue
        busy = sorted((o, o + s) for o, s, st, en in placed if not (en < start or end < st))
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, hi)
        out[name] = off
        placed.append((off, size, start, end))
        peak = max(peak, off + size)
    return peak, out
