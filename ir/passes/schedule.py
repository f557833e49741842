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

from itertools import pairwise

from ..graph import Graph, Node
from ..ops import INLINE_OPS, OPS, SOURCE_OPS
from ..plan import ALIGN, Buffer, Kernel, Schedule, align

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


def schedule(
    g: Graph,
    layout: dict[str, Buffer],
    grads: dict[str, str] | None = None,
    *,
    reuse: bool = True,
    in_place_reuse: bool = True,
) -> Schedule:
    """Order the kernels of ``g`` and give every value a buffer.

    Args:
        g: the (fused) graph; its node order is a valid execution order.
        layout: the buffers of params and states (regions "param" and "state").
        grads: param -> gradient value; these go to the contiguous "grad" region.
        reuse: share arena memory between values whose lifetimes do not overlap (-O1 and up).
        in_place_reuse: with ``reuse``, let an elementwise kernel write a result into the buffer
            of an operand of the same type that dies in that kernel (see _in_place_aliases).
    """
    grads = grads or {}
    kernels_nodes = form_kernels(g)
    kernel_of: dict[str, int] = {}
    for k, nodes in enumerate(kernels_nodes):
        for n in nodes:
            kernel_of[n.name] = k

    buffers: dict[str, Buffer] = {}
    input_slots = [n.name for n in g.inputs]
    for i, name in enumerate(input_slots):
        buffers[name] = Buffer(name, "input", slot=i)
    for n in g.nodes:
        if n.op in ("param", "state"):
            if n.name not in layout:
                raise KeyError(f"schedule: {n.op} {n.name} has no place in the model's layout")
            buffers[n.name] = layout[n.name]
        elif n.op in INLINE_OPS:
            buffers[n.name] = Buffer(n.name, "inline")

    # outputs: written straight into the caller's buffer unless the value has storage already
    output_slots = list(g.outputs)
    extra: list[Kernel] = []
    direct_out: dict[str, int] = {}
    for j, name in enumerate(output_slots):
        if name in direct_out or name in buffers:
            extra.append(Kernel(f"k_out{j}", "copy", (name,), (), copy_to=f"output:{j}"))
        else:
            direct_out[name] = j

    readers: dict[str, set[int]] = {}
    for k, nodes in enumerate(kernels_nodes):
        for n in nodes:
            for i in n.inputs:
                if kernel_of.get(i) != k:
                    readers.setdefault(i, set()).add(k)

    # updates: in place when every reader of the old value runs no later than the writer
    update_copies: list[Kernel] = []
    in_place: dict[str, str] = {}
    for target, value in g.updates:
        vnode, tnode = g[value], g[target]
        k = kernel_of.get(value)
        ok = (
            k is not None
            and value not in direct_out
            and value not in in_place
            and vnode.type.shape == tnode.type.shape
            and kernel_kind(vnode) == "elementwise"
            and all(r <= k for r in readers.get(target, ()))
            and all(
                nd.type.shape == tnode.type.shape for nd in kernels_nodes[k] if target in nd.inputs
            )
            # a GEMM accumulates in its output buffer before the epilogue reads the operands:
            # an epilogue that reads the old value must not write it in place (found by graphc.fuzz)
            and not (
                any(kernel_kind(nd) == "matmul" for nd in kernels_nodes[k])
                and any(target in nd.inputs for nd in kernels_nodes[k])
            )
        )
        if ok:
            in_place[value] = target
        else:
            update_copies.append(Kernel(f"k_upd_{target}", "copy", (value,), (), copy_to=target))

    # which values must be stored
    needed: set[str] = set(readers) | set(direct_out) | set(in_place)
    needed |= {k.nodes[0] for k in extra + update_copies}

    # a gradient sits at grad_base + the offset of its param (the grad region is laid out like
    # the param region, so fuse_optimizer's flat loops see param i and its gradient at one index)
    grad_values = {v: p for p, v in grads.items()}
    grad_at: dict[str, int] = {}
    for v, p in grad_values.items():
        pb = layout.get(p)
        if (
            v in g.by_name
            and pb is not None
            and pb.region == "param"
            and not g[v].type.is_batched
            and g[v].type.size(1) * g[v].type.itemsize == pb.size
        ):
            grad_at[v] = pb.offset
    grad_bytes = max(
        (align(layout[grad_values[v]].offset + layout[grad_values[v]].size) for v in grad_at),
        default=0,
    )
    intervals: list[tuple[str, int, int, int, int]] = []  # name, start, end, size, size_row
    unplanned_fixed = unplanned_row = 0
    for k, nodes in enumerate(kernels_nodes):
        for n in nodes:
            if n.name in buffers:
                continue
            if n.name not in needed:
                buffers[n.name] = Buffer(n.name, "fused")
            elif n.name in direct_out:
                buffers[n.name] = Buffer(n.name, "output", slot=direct_out[n.name])
            elif n.name in in_place:
                tb = buffers[in_place[n.name]]
                buffers[n.name] = Buffer(
                    n.name, tb.region, tb.offset, tb.offset_row, tb.size, tb.size_row, tb.slot
                )
            elif n.name in grad_at:
                size = n.type.size(1) * n.type.itemsize
                buffers[n.name] = Buffer(n.name, "grad", grad_at[n.name], 0, size)
            elif n.name in grad_values and not n.type.is_batched:
                size = n.type.size(1) * n.type.itemsize
                buffers[n.name] = Buffer(n.name, "grad", grad_bytes, 0, size)
                grad_bytes += align(size)
            else:
                per = n.type.elements_per_row() * n.type.itemsize
                size, size_row = (0, per) if n.type.is_batched else (per, 0)
                last = max(readers.get(n.name, {k}) | {k})
                if n.name in {kk.nodes[0] for kk in extra + update_copies}:
                    last = len(kernels_nodes) + len(extra) + len(update_copies)
                intervals.append((n.name, k, last, size, size_row))
                unplanned_fixed += align(size)
                unplanned_row += align(size_row)

    alias = _in_place_aliases(g, kernels_nodes, intervals) if reuse and in_place_reuse else {}
    merged = _merge_aliased(intervals, alias)
    arena_fixed, fixed_off = _place([(nm, s, e, sz) for nm, s, e, sz, _ in merged if sz], reuse)
    arena_row, row_off = _place([(nm, s, e, sr) for nm, s, e, _, sr in merged if sr], reuse)
    for nm, _, _, sz, sr in intervals:
        root = alias.get(nm, nm)
        if sz:
            buffers[nm] = Buffer(nm, "arena", grad_bytes + fixed_off[root], 0, sz, 0)
        if sr:
            buffers[nm] = Buffer(nm, "arena", grad_bytes + arena_fixed, row_off[root], 0, sr)

    kernels: list[Kernel] = []
    flat_at, flat_skip, flat_notes = _flat_updates(g, kernels_nodes, buffers, in_place)
    for k, nodes in enumerate(kernels_nodes):
        if k in flat_skip:
            continue
        if k in flat_at:
            kernels.append(flat_at[k])
            continue
        names = tuple(n.name for n in nodes)
        stores = tuple(n for n in names if buffers[n].region != "fused")
        kind = kernel_kind(nodes[0]) if len(nodes) == 1 else _group_kind(nodes)
        kernels.append(Kernel(f"k{k}_{_slug(nodes[0])}", kind, names, stores))
    kernels += extra + update_copies
    return Schedule(
        g,
        kernels,
        buffers,
        grad_bytes,
        arena_fixed,
        arena_row,
        unplanned_fixed,
        unplanned_row,
        input_slots,
        output_slots,
        flat_notes,
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
