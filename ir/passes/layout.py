"""Parameter layout: the offsets of params and states in the model's flat persistent regions."""

from __future__ import annotations

from ..graph import Graph
from ..plan import Buffer, align


def layout_state(g: Graph) -> tuple[dict[str, Buffer], int, int]:
    """Offsets of the params and states of ``g`` in their flat regions (64-byte aligned).

    Params in graph order. States: first those that are no optimizer slot (e.g. "step"), then
    one sub-region per slot kind laid out like the param region (``P.exp_avg`` at
    ``base_exp_avg + offset(P)``), so that one flat loop can update every param and its slots
    (ir.passes.schedule, fuse_optimizer). A slot whose type differs from its param's goes last.

    Returns:
        (value -> Buffer of region "param" or "state", param region bytes, state region bytes).
    """
    layout: dict[str, Buffer] = {}
    off = {"param": 0, "state": 0}
    kinds: dict[str, list] = {}
    for n in g.nodes:
        if n.op == "param":
            size = n.type.size(1) * n.type.itemsize
            layout[n.name] = Buffer(n.name, "param", off["param"], 0, size)
            off["param"] += align(size)
    late = []
    for n in g.nodes:
        if n.op != "state":
            continue
        p = dict(n.attrs).get("slot_of")
        if p in layout and n.name.startswith(f"{p}.") and g[p].type == n.type:
            kinds.setdefault(n.name[len(p) + 1 :], []).append((n, p))
        elif p is not None:
            late.append(n)
        else:
            size = n.type.size(1) * n.type.itemsize
            layout[n.name] = Buffer(n.name, "state", off["state"], 0, size)
            off["state"] += align(size)
    for slots in kinds.values():
        base = off["state"]
        for n, p in slots:
            pb = layout[p]
            layout[n.name] = Buffer(n.name, "state", base + pb.offset, 0, pb.size)
        off["state"] = base + off["param"]
    for n in late:
        size = n.type.size(1) * n.type.itemsize
        layout[n.name] = Buffer(n.name, "state", off["state"], 0, size)
        off["state"] += align(size)
    return layout, off["param"], off["state"]
