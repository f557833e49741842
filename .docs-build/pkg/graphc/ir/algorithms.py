"""Graph algorithms on the IR, run by networkx: dependency graph, cycles, reachability."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .graph import Graph

if TYPE_CHECKING:
    import networkx as nx


def dependency_graph(g: Graph) -> nx.DiGraph:
    """A networkx DiGraph with an edge operand -> user for every operand of every node."""
    import networkx as nx  # deferred: keeps `import graphc` fast

    d = nx.DiGraph()
    d.add_nodes_from(n.name for n in g.nodes)
    d.add_edges_from((i, n.name) for n in g.nodes for i in n.inputs)
    return d


def ancestors(g: Graph, names: list[str] | tuple[str, ...]) -> set[str]:
    """Every value that ``names`` depend on, ``names`` included."""
    import networkx as nx  # deferred: keeps `import graphc` fast

    d = dependency_graph(g)
    out: set[str] = set(names)
    for name in names:
        out |= nx.ancestors(d, name)
    return out


def descendants(g: Graph, names: list[str] | tuple[str, ...]) -> set[str]:
    """Every value computed from ``names``, ``names`` included."""
    import networkx as nx  # deferred: keeps `import graphc` fast

    d = dependency_graph(g)
    out: set[str] = set(names)
    for name in names:
        out |= nx.descendants(d, name)
    return out


def find_cycle(g: Graph) -> list[str] | None:
    """The names along one dependency cycle, or None if the graph is acyclic."""
    import networkx as nx  # deferred: keeps `import graphc` fast

    try:
        return [u for u, _ in nx.find_cycle(dependency_graph(g))]
    except nx.NetworkXNoCycle:
        return None
