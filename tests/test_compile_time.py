"""What a cold ``gc.compile`` does not pay for (issue 12, compile time), and the plain graph
walks that replaced networkx on the compile path, checked against networkx."""

from __future__ import annotations

import random
import subprocess
import sys

import networkx as nx
import numpy as np

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


def test_backward_products_of_several_widths_share_one_gemm(monkeypatch) -> None:
    """dX = dY @ W^T of two hidden layers of different widths (100, 120) compile to one GEMM
    function (N and K as arguments), and an SGD step matches float64 numpy's."""
    from graphc.compiler import build_module, schedule_program

    def net(name):
        x = gc.input("x", ("N", 20))
        y = gc.input("y", ("N",), dtype="i32")
        h = gc.dense(gc.dense(x, 100, "relu", name="a"), 120, "relu", name="b")
        o = gc.dense(h, 5, name="c")
        return [o], gc.softmax_cross_entropy(o, y), x, y

    outs, loss, _, _ = net("share")
    prog = schedule_program(build_graphs("share", outs, loss, gc.SGD(lr=0.1)), split=False)
    mb = build_module(prog)
    assert sum(1 for key in mb._gemms if key[2]) == 1  # trans_b: the backward dX products

    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    outs, loss, _, _ = net("share2")
    m = gc.compile(outs, loss, gc.SGD(lr=0.1), name="share2", seed=3)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((64, 20)).astype(np.float32)
    yb = rng.integers(0, 5, 64).astype(np.int32)
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    h1 = xb @ p["a.w"] + p["a.b"]
    a1 = np.maximum(h1, 0)
    h2 = a1 @ p["b.w"] + p["b.b"]
    a2 = np.maximum(h2, 0)
    z = a2 @ p["c.w"] + p["c.b"]
    e = np.exp(z - z.max(1, keepdims=True))
    sm = e / e.sum(1, keepdims=True)
    loss_ref = -np.log(sm[np.arange(64), yb]).mean()
    dz = sm.copy()
    dz[np.arange(64), yb] -= 1
    dz /= 64
    dh2 = (dz @ p["c.w"].T) * (h2 > 0)
    dh1 = (dh2 @ p["b.w"].T) * (h1 > 0)
    grads = {
        "c.w": a2.T @ dz,
        "c.b": dz.sum(0),
        "b.w": a1.T @ dh2,
        "b.b": dh2.sum(0),
        "a.w": xb.T @ dh1,
        "a.b": dh1.sum(0),
    }
    assert abs(m.train_step(xb, yb) - loss_ref) < 1e-5
    for k, g in grads.items():
        np.testing.assert_allclose(m.params[k], p[k] - 0.1 * g, rtol=1e-4, atol=1e-6)
