"""The verifier: passes every stage of the examples, and names the node of a corrupted graph."""

from __future__ import annotations

import pytest

from graphc.compiler import build_graphs
from graphc.ir.errors import VerifyError
from graphc.ir.graph import Graph
from graphc.ir.passes.pipeline import run_pipeline
from graphc.ir.text import parse_graph
from graphc.ir.types import TensorType
from graphc.ir.verify import verify
from graphc.modelspec import resolve

GOOD = """graph f(x: f32[N,3], w: f32[3,2] param, b: f32[2] param) {
  %0 = matmul(x, w) : f32[N,2]
  %1 = add(%0, b) : f32[N,2]
  %2 = relu(%1) : f32[N,2]
  %3 = mean(%2) : f32[]
  return %3
}"""


def broken(text: str) -> Graph:
    return parse_graph(text, check=False)


def message(g: Graph, after: str | None = "some_pass") -> str:
    with pytest.raises(VerifyError) as e:
        verify(g, after=after)
    return str(e.value)


def marked_line(msg: str) -> str:
    (line,) = [s for s in msg.split("\n") if s.startswith(">>")]
    return line


def test_a_good_graph_verifies_and_is_returned() -> None:
    g = parse_graph(GOOD)
    assert verify(g) is g


@pytest.mark.parametrize("model", ["digits", "breast_cancer", "diabetes"])
def test_every_stage_of_the_examples_verifies(model: str) -> None:
    spec = resolve(f"examples/models.py:{model}")
    prog = build_graphs(spec.name, spec.outputs, spec.loss, spec.optimizer)
    for g in (prog.forward, prog.training, prog.inference):
        verify(g)
        res = run_pipeline(g, 2, verify_each=True)  # raises VerifyError naming the pass
        verify(res.graph)


def test_wrong_shape_names_the_node_and_the_pass() -> None:
    msg = message(
        broken(GOOD.replace("%1 = add(%0, b) : f32[N,2]", "%1 = add(%0, b) : f32[N,5]")),
        after="fuse_dense",
    )
    assert "after pass fuse_dense" in msg and "node %1" in msg
    assert "f32[N,5]" in msg and "f32[N,2]" in msg
    assert "%1 = add(%0, b)" in marked_line(msg)
    assert "graphc bug" in msg
    # +-5 lines of context: the graph's header line is within 5 lines of %1
    assert "%0 = matmul" in msg and "return %3" in msg


def test_cycle_is_reported_with_its_nodes() -> None:
    msg = message(broken(GOOD.replace("%0 = matmul(x, w)", "%0 = matmul(%2, w)")))
    assert "cycle" in msg
    for n in ("%0", "%1", "%2"):
        assert n in msg.split("\n")[0]
    assert marked_line(msg).lstrip(">").strip().startswith("%")


def test_dangling_operand_names_the_node() -> None:
    msg = message(broken(GOOD.replace("add(%0, b)", "add(%0, c)")))
    assert "node %1" in msg and "'c'" not in msg and "(c) is not defined" in msg
    assert "%1 = add(%0, c)" in marked_line(msg)


def test_unknown_op_names_the_node() -> None:
    msg = message(broken(GOOD.replace("relu(%1)", "frobnicate(%1)")))
    assert "node %2" in msg and "unknown op 'frobnicate'" in msg
    assert "frobnicate" in marked_line(msg)


def test_bad_attr_names_the_node() -> None:
    msg = message(broken(GOOD.replace("mean(%2) :", "mean(%2) {axis=[0]} :")))
    assert "node %3" in msg and "'axis'" in msg and "axes" in msg


def test_wrong_arity_names_the_node() -> None:
    msg = message(broken(GOOD.replace("relu(%1)", "relu(%1, %0)")))
    assert "node %2" in msg and "expects 1 operands, got 2" in msg


def test_duplicate_name() -> None:
    msg = message(broken(GOOD.replace("%2 = relu", "%1 = relu").replace("mean(%2)", "mean(%1)")))
    assert "defined twice" in msg


def test_use_before_definition_without_a_cycle() -> None:
    g = parse_graph(GOOD)
    nodes = list(g.nodes)
    nodes[3], nodes[4] = nodes[4], nodes[3]  # %0 after %1, which reads it
    msg = message(g.with_(nodes=tuple(nodes)))
    assert "node %1" in msg and "before its definition" in msg


def test_group_must_be_contiguous() -> None:
    g = parse_graph(GOOD)
    nodes = tuple(n.with_(group="k") if n.name in ("%0", "%2") else n for n in g.nodes)
    msg = message(g.with_(nodes=nodes))
    assert "node %2" in msg and "not contiguous" in msg


def test_outputs_and_updates_are_checked() -> None:
    msg = message(parse_graph(GOOD).with_(outputs=("%9",)))
    assert "output '%9'" in msg and "return" in marked_line(msg)
    g = parse_graph(GOOD)
    assert "changes the type" in message(g.with_(updates=(("w", "%2"),)))
    assert "must be a param or state" in message(g.with_(updates=(("x", "x"),)))
    ok = g.with_(updates=(("b", "b"),))
    assert verify(ok) is ok


def test_stored_type_of_a_const_is_checked() -> None:
    text = 'graph f() {\n  %0 = const() {dtype="f64", value=1.0} : f32[]\n  return %0\n}'
    msg = message(broken(text), after=None)
    assert "in verify()" in msg and "node %0" in msg and "f64[]" in msg
    assert "graphc bug" not in msg


def test_verify_each_in_the_pipeline_names_the_pass(monkeypatch) -> None:
    from graphc.ir.passes import pipeline

    def corrupt(g: Graph) -> Graph:
        n = g.nodes[-1]
        return g.with_(nodes=g.nodes[:-1] + (n.with_(type=TensorType((7,))),))

    monkeypatch.setattr(pipeline, "passes_for_level", lambda level: [corrupt])
    with pytest.raises(VerifyError, match="after pass corrupt: node %3"):
        pipeline.run_pipeline(parse_graph(GOOD), 2, verify_each=True)
