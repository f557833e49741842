"""The IR text format: parse_graph(print_graph(g)) == g for every op and stage; parse errors."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.compiler import build_graphs
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphcError, ParseError
from graphc.ir.graph import Graph, Node, make_node
from graphc.ir.interpret import interpret
from graphc.ir.ops import OPS
from graphc.ir.passes.pipeline import run_pipeline
from graphc.ir.text import graph_from_json, graph_to_json, parse_graph, print_graph
from graphc.ir.types import TensorType
from graphc.ir.verify import verify
from graphc.modelspec import resolve

EXAMPLES = "examples/models.py"
MODELS = ("digits", "breast_cancer", "diabetes")

F = TensorType(("N", 3))
SQ = TensorType((3, 3))
ROW = TensorType((3,))
SCALAR = TensorType(())
LABELS = TensorType(("N",), "i32")
STEP = TensorType((), "i64")  # the optimizer's step counter

# op -> (operand types, attrs) for a graph that exercises it; ops added later fall back to a search
OP_CASES: dict[str, tuple[list[TensorType], dict]] = {
    "broadcast_to": ([ROW, F], {}),
    "reshape": ([F], {"shape": ("N", 3, 1)}),
    "matmul": ([F, SQ], {"transpose_b": True}),
    "transpose": ([SQ], {}),
    "softmax": ([F], {}),
    "softmax_cross_entropy": ([F, LABELS], {}),
    "softmax_cross_entropy_grad": ([F, LABELS, SCALAR], {}),
    "sum": ([F], {"axes": (0,), "keepdims": True}),
    "mean": ([F], {"axes": (1,)}),
    "size": ([F], {"axes": (0, 1)}),
    "const": ([], {"value": 0.1 + 0.2, "dtype": "f32"}),
    "dropout": ([F, SCALAR], {"p": 0.25, "seed": 7, "stream": 1}),
    "one_minus_pow": ([STEP], {"base": 0.999, "dtype": "f32"}),
    "increment": ([STEP], {}),
    "cast": ([STEP], {"dtype": "f64"}),
    "batch_norm": ([F, ROW, ROW, ROW, ROW], {"momentum": 0.25, "eps": 1e-3}),
    "clip": ([F], {"min": -0.5, "max": 1.0 / 3.0}),
    "pow": ([F], {"exponent": -1.5}),
    "slice": ([SQ], {"axes": (1, 0), "starts": (1, -2), "ends": (3, 100)}),
    "pad": ([F], {"axes": (1,), "before": (2,), "after": (0,)}),
    "concat": ([F, F], {"axis": 1}),
    "reverse": ([SQ], {"axes": (1, 0)}),
    "permute": ([TensorType(("N", 2, 3, 4))], {"perm": (0, 3, 1, 2)}),
    "batched_matmul": (
        [TensorType(("N", 2, 3, 4)), TensorType((2, 5, 3))],
        {"transpose_a": True, "transpose_b": True},
    ),
    "gelu": ([F], {"approximate": "tanh"}),
    "argmax": ([F], {"axis": 1, "keepdims": True}),
    "conv": (
        [TensorType(("N", 4, 7, 6)), TensorType((4, 2, 3, 2))],
        {"strides": (2, 1), "pads": (1, 0, 1, 1), "dilations": (1, 2), "groups": 2},
    ),
    "conv_transpose": (
        [TensorType(("N", 4, 5)), TensorType((4, 3, 3))],
        {"strides": (2,), "output_padding": (1,)},
    ),
    "conv_filter_grad": (
        [TensorType(("N", 4, 5)), TensorType(("N", 3, 11))],
        {"strides": (2,), "kernel_shape": (3,)},
    ),
}
CANDIDATE_TYPES = (F, SQ, ROW, SCALAR, LABELS)


def loaded(model: str):
    spec = resolve(f"{EXAMPLES}:{model}")
    return build_graphs(spec.name, spec.outputs, spec.loss, spec.optimizer)


@functools.cache
def example_program(model: str):
    return loaded(model)


def op_graph(op: str) -> Graph | None:
    """A small graph whose last node applies ``op``, or None if no candidate operands fit."""
    spec = OPS[op]
    if spec.kind == "source":
        b = Builder()
        b.source(op, "s", F, {"init": "zeros"} if "init" in spec.attr_names else None)
        return b.graph("g_" + op, ["s"])
    cases = [OP_CASES[op]] if op in OP_CASES else []
    arity = spec.arity if spec.arity is not None else 2
    for t in CANDIDATE_TYPES:
        cases.append(([t] * arity, {}))
    for types, attrs in cases:
        b = Builder()
        names = [b.source("input", f"a{i}", t) for i, t in enumerate(types)]
        try:
            out = b.emit(op, names, attrs)
        except GraphcError:
            continue
        return b.graph("g_" + op, [out])
    return None


def assert_round_trip(g: Graph) -> None:
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g, f"round trip changed the graph:\n{text}"
    assert [(n.loc, n.origin) for n in back.nodes] == [(n.loc, n.origin) for n in g.nodes]
    assert print_graph(back) == text


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_round_trips(op: str) -> None:
    g = op_graph(op)
    if g is None:
        pytest.skip(f"no operand types in the test table fit op {op}; add it to OP_CASES")
    verify(g)
    assert_round_trip(g)
    # the same graph in a fused group and in the backward section
    last = g.nodes[-1].with_(group="k0", section="backward", loc="m.py:3", origin="grad of %1")
    assert_round_trip(g.with_(nodes=g.nodes[:-1] + (last,)))


@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("model", MODELS)
def test_example_networks_round_trip_at_every_stage(model: str, level: int) -> None:
    prog = example_program(model)
    stages = [prog.forward, prog.training, prog.inference]
    for g in (prog.training, prog.forward, prog.inference):
        res = run_pipeline(g, level, verify_each=True)
        stages += [r.graph for r in res.records]
    if level == 2:
        assert any(n.group for n in stages[-1].nodes), "expected fused nodes at -O2"
    for g in stages:
        assert_round_trip(g)
        assert graph_from_json(json.loads(json.dumps(graph_to_json(g)))) == g


def test_attrs_round_trip_exactly() -> None:
    values = {
        "f": 0.1 + 0.2,
        "tiny": 5e-324,
        "big": 1.7976931348623157e308,
        "neg": -2.5e-08,
        "inf": math.inf,
        "ninf": -math.inf,
        "i": -7,
        "t": True,
        "n": False,
        "s": 'a "quoted" \\ back\nslash',
        "nested": ((1, 2.0), ("x", (True,))),
        "empty": (),
    }
    node = make_node("s", "state", (), SCALAR, values)
    g = Graph("attrs", (node,), ("s",))
    back = parse_graph(print_graph(g))
    assert back == g
    for k, v in back.nodes[0].attrs:
        assert type(v) is type(values[k]), k


def test_names_that_are_not_words_are_quoted() -> None:
    b = Builder()
    x = b.source("input", "my x", F)
    y = b.emit("relu", [x], name="return")
    z = b.emit("exp", [y], name="update")
    g = b.graph("odd graph", [z], ())
    nodes = tuple(n.with_(group="g 1") if n.name == "update" else n for n in g.nodes)
    assert_round_trip(g.with_(nodes=nodes))


def test_hand_written_graph_infers_missing_types_and_computes_the_numpy_result() -> None:
    g = parse_graph("""
        # a one-layer network, types left out where they can be inferred
        graph f(x: f32[N,3], w: f32[3,2] param {init="zeros"}, b: f32[2] param) {
          %0 = matmul(x, w)
          %1 = add(%0, b)          @net.py:4   # the bias
          fused k {
            %2 = tanh(%1) : f32[N,2]
          }
          return %2
        }""")
    assert g["%0"].type == TensorType(("N", 2))
    assert g["%1"].loc == "net.py:4" and g["%1"].origin == "the bias"
    assert g["%2"].group == "k"
    verify(g)
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((4, 3)),
        "w": rng.standard_normal((3, 2)),
        "b": rng.standard_normal(2),
    }
    got = interpret(g, feeds)["%2"]
    np.testing.assert_allclose(got, np.tanh(feeds["x"] @ feeds["w"] + feeds["b"]), rtol=1e-12)


def test_renumber_gives_dense_names() -> None:
    g = parse_graph(
        "graph f(x: f32[4]) {\n  %7 = exp(x) : f32[4]\n  %9 = neg(%7) : f32[4]\n  return %9\n}"
    )
    assert print_graph(g, renumber=True) == (
        "graph f(x: f32[4]) {\n  %0 = exp(x) : f32[4]\n  %1 = neg(%0) : f32[4]\n  return %1\n}"
    )


@pytest.mark.parametrize(
    "text, where, words",
    [
        ("graph f(x: f32[4]) {\n  %0 = exp(x) : f32[4\n  return %0\n}", "3:3", "',' or ']'"),
        ("graph f(x: f32[4]) {\n  %0 = expo(x) : f32[4]\n  return %0\n}", "2:8", "unknown op"),
        ("graph f(x: f32[4]) {\n  %0 = exp(y) : f32[4]\n  return %0\n}", "2:12", "not defined"),
        ("graph f(x: f32[4]) {\n  %0 = exp(x) {a=} : f32[4]\n}", "2:18", "attr value"),
        ("graph f(x: f32[4]) {\n  %0 = exp(x) : f32[4]\n  %0 = neg(x) : f32[4]\n}", "3:3", "twice"),
        ("graph f(x: f32[M]) {\n}", "1:16", "expected a dimension"),
        ("graph f(x: f32[N,N]) {\n}", "1:12", "more than once"),
        ("graph f(x: f32[4]) {\n  %0 = exp(x) : f32[4]\n", "3:1", "expected '}'"),
        ("graph f(x: f32[4]) {\n  %0 = add(x, x, x)\n}", "2:3", "cannot infer"),
    ],
)
def test_parse_errors_give_line_col_and_caret(text: str, where: str, words: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_graph(text)
    msg = str(e.value)
    assert msg.startswith(where + ":"), msg
    assert words in msg
    line, col = map(int, where.split(":"))
    lines = msg.split("\n")
    src = text.split("\n")[line - 1]
    assert lines[1] == "  " + src
    assert lines[2] == "  " + " " * (col - 1) + "^"


def test_check_false_parses_a_broken_graph_for_the_verifier() -> None:
    g = parse_graph(
        "graph f(x: f32[4]) {\n  %0 = exp(%1) : f32[4]\n  %1 = frob(%0) : f32[4]\n  return %1\n}",
        check=False,
    )
    assert [n.op for n in g.nodes] == ["input", "exp", "frob"]
    assert isinstance(g.nodes[1], Node)


attr_values = st.recursive(
    st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.booleans() | st.text(),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), attr_values, max_size=4
    ),
    st.text(min_size=1).filter(lambda s: "\n" not in s and s.strip() == s),
    st.text(min_size=1).filter(lambda s: "\n" not in s),
)
def test_any_attrs_names_and_provenance_round_trip(attrs: dict, origin: str, loc: str) -> None:
    node = make_node("s", "state", (), SCALAR, attrs, loc=loc, origin=origin)
    user = make_node("%0", "exp", ("s",), SCALAR, loc=loc, origin=origin)
    g = Graph("g", (node, user), ("%0",))
    back = parse_graph(print_graph(g))
    assert back == g
    assert [(n.loc, n.origin) for n in back.nodes] == [(loc, origin)] * 2
    for k, v in back.nodes[0].attrs:
        assert repr(v) == repr(attrs[k])  # same types: 1 stays int, 1.0 float, True bool


def test_a_fused_group_may_span_sections() -> None:
    g = parse_graph("""graph f(x: f32[4]) {
      fused k {
        %0 = exp(x) : f32[4]
       backward:
        %1 = neg(%0) : f32[4]
      }
      %2 = log(%1) : f32[4]
      return %2
    }""")
    assert [(n.section, n.group) for n in g.nodes[1:]] == [
        ("forward", "k"),
        ("backward", "k"),
        ("backward", None),
    ]
    assert_round_trip(g)
