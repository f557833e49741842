"""Graph transforms that make the training and inference forms of a forward graph: composite
ops (those with ``decompose``, e.g. batch_norm) replaced by primitives, and weight penalties
added to the loss."""

from __future__ import annotations

from ..builder import Builder
from ..graph import Graph
from ..ops import OPS


def decompose(g: Graph, *, training: bool) -> tuple[Graph, list[tuple[str, str]]]:
    """``g`` with every composite node replaced by its primitives in training or inference mode.

    The last primitive of a composite keeps the composite's name, so readers are unchanged.
    Returns the graph (``g`` itself when it has no composite) and the (state, new value)
    updates the training forms ask for (batch_norm's running statistics), one per state.

    Two composites of the training form that update one state (a BatchNorm layer object
    called twice) update it in graph order, as torch's in-place buffer updates do: the later
    one reads the earlier one's new value in place of the state, and its new value is the
    state's update (running_mean = (1 - m)((1 - m) rm + m mu1) + m mu2).
    """
    if not any(hasattr(OPS[n.op], "decompose") for n in g.nodes):
        return g, []
    b = Builder()
    for n in g.nodes:  # fresh names must not clash with later nodes' names
        b.names.reserve(n.name)
    latest: dict[str, str] = {}  # state -> its newest value (insertion order: the first update's)
    state_of: dict[str, str] = {}  # each new value -> its state (a chained update reads one)
    for n in g.nodes:
        op = OPS[n.op]
        if not hasattr(op, "decompose"):
            b.add_node(n)
            continue
        b.loc, b.origin, b.section = n.loc, f"{n.op} {n.name}", n.section
        if training and any(i in latest for i in n.inputs):
            n = n.with_(inputs=tuple(latest.get(i, i) for i in n.inputs))
        _, ups = op.decompose(b, n, training)
        for state, value in ups:
            root = state_of.get(state, state)
            latest[root] = value
            state_of[value] = root
    b.loc = b.origin = None
    return b.graph(g.name, g.outputs, g.updates), list(latest.items())


def add_weight_penalties(g: Graph, loss: str) -> tuple[Graph, str]:
    """loss + sum over params P with attr ``l2`` of l2 * sum(P^2) + with ``l1``, l1 * sum(|P|)
    (the Keras regularizers' formulas), for the params the loss depends on. Returns the graph
    with the new loss as its last output in place of ``loss`` (``g`` itself when no param has a
    penalty) and the new loss's name."""
    from ..algorithms import ancestors

    feeding = ancestors(g, [loss])
    pen = [n for n in g.params if n.name in feeding and (n.attr("l1") or n.attr("l2"))]
    if not pen:
        return g, loss
    b = Builder(g)
    b.section = "forward"
    total = loss
    for p in pen:
        b.origin = f"weight penalty of {p.name}"
        for key, term in (("l2", b.square), ("l1", b.abs)):
            w = float(p.attr(key) or 0.0)
            if w:
                total = b.add(total, b.mul(b.const(w, like=p.name), b.sum(term(p.name))))
    b.origin = None
    outputs = tuple(total if o == loss else o for o in g.outputs)
    return b.graph(g.name, outputs, g.updates), total
