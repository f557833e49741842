"""Dead-code elimination: drop nodes that no output or update needs (sources are kept)."""

from __future__ import annotations

from ..graph import Graph
from ..ops import SOURCE_OPS


def eliminate_dead_nodes(g: Graph) -> Graph:
    """Remove every non-source node whose value reaches no output and no update."""
    live: set[str] = set(g.outputs) | {v for _, v in g.updates} | {t for t, _ in g.updates}
    for n in reversed(g.nodes):
        if n.name in live:
            live.update(n.inputs)
    keep = tuple(n for n in g.nodes if n.name in live or n.op in SOURCE_OPS)
    return g if len(keep) == len(g.nodes) else g.with_(nodes=keep)
