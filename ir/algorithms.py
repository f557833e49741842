"""Graph algorithms on the IR: reachability and ordering (plain walks: they run on every
compile), dependency graph and cycles (networkx: the verifier's error path, graphc dump)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .graph import Graph

T = TypeVar("T")

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
    """Every value that ``names`` depend on, ``names`` included.

    A walk over the operands, not networkx: the compiler calls this on every model (autodiff,
    weight penalties), and importing networkx costs about 80 ms, more than all the passes."""
    by_name = g.by_name
    out: set[str] = set(names)
    todo = list(names)
    while todo:
        for i in by_name[todo.pop()].inputs:
            if i not in out:
                out.add(i)
                todo.append(i)
    return out


def descendants(g: Graph, names: list[str] | tuple[str, ...]) -> set[str]:
    """Every value computed from ``names``, ``names`` included (a walk over the users, as
    ``ancestors``)."""
    users = g.users
    out: set[str] = set(names)
    todo = list(names)
    while todo:
        for u in users.get(todo.pop(), ()):
            if u not in out:
                out.add(u)
                todo.append(u)
    return out


def lexicographic_order(
    units: Iterable[T], edges: Iterable[tuple[T, T]], key: Callable[[T], Any]
) -> list[T]:
    """A topological order of ``units`` (edges u -> v: u before v) that takes, whenever several
    units are ready, the one with the smallest ``key`` (Kahn's algorithm with a heap; the same
    order as networkx's lexicographical_topological_sort when the keys are distinct).

    Raises:
        ValueError: the edges form a cycle.
    """
    order = list(dict.fromkeys(units))
    succ: dict[T, list[T]] = {u: [] for u in order}
    indeg = dict.fromkeys(order, 0)
    for u, v in dict.fromkeys(edges):  # an edge given twice counts once
        succ[u].append(v)
        indeg[v] += 1
    pos = {u: i for i, u in enumerate(order)}  # breaks ties between equal keys
    ready = [(key(u), pos[u], u) for u in order if indeg[u] == 0]
    heapq.heapify(ready)
    out: list[T] = []
    while ready:
        _, _, u = heapq.heappop(ready)
        out.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(ready, (key(v), pos[v], v))
    if len(out) != len(order):
        raise ValueError("lexicographic_order: the edges form a cycle")
    return out


def find_cycle(g: Graph) -> list[str] | None:
    """The names along one dependency cycle, or None if the graph is acyclic."""
    import networkx as nx  # deferred: keeps `import graphc` fast

    try:
        return [u for u, _ in nx.find_cycle(dependency_graph(g))]
    except nx.NetworkXNoCycle:
        return None
