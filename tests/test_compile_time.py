"""What a cold ``gc.compile`` does not pay for (issue 12, compile time), and the plain graph
walks that replaced networkx on the compile path, checked against networkx."""

from __future__ import annotations

import random
import subprocess
import sys

import networkx as nx

import graphc as gc
from graphc.compiler import build_graphs
from graphc.ir.algorithms import ancestors, dependency_graph, descendants, lexicographic_order


def test_lexicographic_order_is_networkx_order() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 25)
        units = list(range(n))
        rng.shuffle(units)
        edges = [(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.2]
        edges += edges[: len(edges) // 3]  # repeated edges count once
        keys = {u: rng.random() for u in units}
        d = nx.DiGraph()
        d.add_nodes_from(units)
        d.add_edges_from(edges)
        want = list(nx.lexicographical_topological_sort(d, key=keys.__getitem__))
        assert lexicographic_order(units, edges, keys.__getitem__) == want


def test_ancestors_and_descendants_are_networkx_reachability() -> None:
    x = gc.input("x", ("N", 5))
    y = gc.input("y", ("N",), dtype="i32")
    h = gc.dropout(gc.dense(x, 8, "relu", name="a", kernel_l2=1e-3), 0.3)
    o = gc.dense(h, 3, name="b")
    g = build_graphs("walk", [o], gc.softmax_cross_entropy(o, y), gc.Adam()).training
    d = dependency_graph(g)
    for n in g.nodes[:: max(1, len(g.nodes) // 25)]:
        assert ancestors(g, [n.name]) == nx.ancestors(d, n.name) | {n.name}
        assert descendants(g, [n.name]) == nx.descendants(d, n.name) | {n.name}


def test_cold_compile_imports_no_networkx(tmp_path) -> None:
    """networkx's import (about 80 ms) is more than all the passes take: the compile path uses
    plain walks; networkx stays for the verifier's cycle report and graphc dump."""
    code = (
        "import sys, graphc as gc\n"
        "x = gc.input('x', ('N', 4)); y = gc.input('y', ('N',), dtype='i32')\n"
        "h = gc.dropout(gc.dense(x, 8, 'relu', kernel_l2=1e-3), 0.5)\n"
        "o = gc.dense(h, 3)\n"
        "m = gc.compile(o, gc.softmax_cross_entropy(o, y), gc.Adam())\n"
        "print('networkx' in sys.modules)\n"
    )
    env = {"GRAPHC_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert r.stdout.split() == ["False"]
