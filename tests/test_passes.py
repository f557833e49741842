"""Tests for the optimization passes: simplify (CSE, folding, identities), fuse_dense,
fuse_elementwise, explain_fusion and the pass pipeline.

Each rewrite is checked twice: its golden text (generated names renumbered), and that the
meaning is kept: the float64 reference interpreter gives the same outputs and updates on random
inputs before and after the pass.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import build_graphs, make_layout
from graphc.ir.errors import GraphcError
from graphc.ir.graph import Graph
from graphc.ir.interpret import interpret
from graphc.ir.ops import ACTIVATIONS, POINTWISE_OPS, SOURCE_OPS
from graphc.ir.passes.dce import eliminate_dead_nodes
from graphc.ir.passes.fuse import (
    explain_fusion,
    fuse_dense,
    fuse_elementwise,
    fuse_softmax_cross_entropy,
)
from graphc.ir.passes.pipeline import passes_for_level, run_pipeline
from graphc.ir.passes.schedule import schedule
from graphc.ir.passes.simplify import simplify
from graphc.ir.text import format_node, parse_graph, renumbered
from graphc.ir.verify import verify

# ---------------------------------------------------------------------------- helpers


def body(g: Graph) -> str:
    """Golden form: the non-source nodes (renumbered, no locations), group in brackets."""
    g = renumbered(g)
    lines = []
    for n in g.nodes:
        if n.op in SOURCE_OPS:
            continue
        lines.append(
            (f"[{n.group}] " if n.group else "") + format_node(n.with_(origin=None), with_loc=False)
        )
    lines.append("return " + ", ".join(g.outputs))
    lines += [f"update {t} <- {v}" for t, v in g.updates]
    return "\n".join(lines)


def lines(*xs: str) -> str:
    return "\n".join(xs)


def feeds_for(g: Graph, rng: np.random.Generator, n: int = 5) -> dict[str, np.ndarray]:
    out = {}
    for s in g.nodes:
        if s.op in SOURCE_OPS:
            shape = s.type.concrete(n)
            if s.type.dtype == "i32":
                out[s.name] = rng.integers(0, 3, shape).astype(np.int32)
            else:
                out[s.name] = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    return out


def assert_same_outputs(before: Graph, after: Graph, seed: int = 0, rtol: float = 1e-6) -> None:
    """The interpreter gives the same outputs and updates for both graphs on random inputs.

    (rtol 1e-6: folded constants are rounded to float32, as the compiled code computes them.)
    """
    rng = np.random.default_rng(seed)
    feeds = feeds_for(before, rng)
    a, b = interpret(before, feeds), interpret(after, feeds)
    for i, (x, y) in enumerate(zip(before.outputs, after.outputs)):
        np.testing.assert_allclose(b[y], a[x], rtol=rtol, atol=1e-12, err_msg=f"output {i}")
    for (t, _), (t2, _) in zip(before.updates, after.updates):
        np.testing.assert_allclose(b[t2 + "'"], a[t + "'"], rtol=rtol, atol=1e-12, err_msg=t)


def run_simplify(text: str) -> tuple[Graph, Graph]:
    g = verify(parse_graph(text))
    out = verify(eliminate_dead_nodes(verify(simplify(g), after="simplify")), after="dce")
    return g, out


# ---------------------------------------------------------------------------- simplify rules

RULE_CASES = {
    "mul_by_one": (
        """graph f(x: f32[4]) {
          %0 = const() {value=1.0} : f32[]
          %1 = mul(x, %0) : f32[4]
          %2 = mul(%0, %1) : f32[4]
          return %2
        }""",
        "return x",
    ),
    "add_zero_sub_zero": (
        """graph f(x: f32[4]) {
          %0 = const() {value=-0.0} : f32[]
          %5 = const() {value=0.0} : f32[]
          %1 = add(x, %0) : f32[4]
          %2 = sub(%1, %5) : f32[4]
          %3 = add(%0, %2) : f32[4]
          %4 = exp(%3) : f32[4]
          return %4
        }""",
        "%0 = exp(x) : f32[4]\nreturn %0",
    ),
    "add_positive_zero_stays": (  # -0.0 + 0.0 is +0.0: x + 0.0 is not x
        """graph f(x: f32[4]) {
          %0 = const() {value=0.0} : f32[]
          %1 = add(x, %0) : f32[4]
          return %1
        }""",
        "%0 = const() {value=0.0} : f32[]\n%1 = add(x, %0) : f32[4]\nreturn %1",
    ),
    "div_by_one": (
        """graph f(x: f32[3]) {
          %0 = const() {value=1.0} : f32[]
          %1 = div(x, %0) : f32[3]
          %2 = div(%0, %1) : f32[3]
          return %2
        }""",
        "%0 = const() {value=1.0} : f32[]\n%1 = div(%0, x) : f32[3]\nreturn %1",
    ),
    "neg_of_neg": (
        """graph f(x: f32[3]) {
          %0 = neg(x) : f32[3]
          %1 = neg(%0) : f32[3]
          %2 = tanh(%1) : f32[3]
          return %2
        }""",
        "%0 = tanh(x) : f32[3]\nreturn %0",
    ),
    "transpose_of_transpose": (
        """graph f(x: f32[2,3]) {
          %0 = transpose(x) : f32[3,2]
          %1 = transpose(%0) : f32[2,3]
          return %1
        }""",
        "return x",
    ),
    "broadcast_to_same_shape": (
        """graph f(x: f32[N,3], y: f32[N,3]) {
          %0 = broadcast_to(x, y) : f32[N,3]
          return %0
        }""",
        "return x",
    ),
    "reshape_to_same_shape_and_of_reshape": (
        """graph f(x: f32[N,6]) {
          %0 = reshape(x) {shape=["N",2,3]} : f32[N,2,3]
          %1 = reshape(%0) {shape=["N",3,2]} : f32[N,3,2]
          %2 = reshape(x) {shape=["N",6]} : f32[N,6]
          %3 = exp(%2) : f32[N,6]
          return %1, %3
        }""",
        '%0 = reshape(x) {shape=["N",3,2]} : f32[N,3,2]\n%1 = exp(x) : f32[N,6]\nreturn %0, %1',
    ),
    "fold_constants": (
        """graph f(x: f32[3]) {
          %0 = const() {value=2.0} : f32[]
          %1 = const() {value=3.0} : f32[]
          %2 = mul(%0, %1) : f32[]
          %3 = sqrt(%2) : f32[]
          %4 = mul(x, %3) : f32[3]
          return %4
        }""",
        (
            f'%0 = const() {{dtype="f32", value={float(np.sqrt(np.float32(6.0)))!r}}} : f32[]\n'
            "%1 = mul(x, %0) : f32[3]\nreturn %1"
        ),
    ),
    "fold_size_of_fixed_axes": (
        """graph f(x: f32[N,4]) {
          %0 = size(x) {axes=[1]} : f32[]
          %1 = size(x) {axes=[0]} : f32[]
          %2 = div(x, %0) : f32[N,4]
          %3 = div(%2, %1) : f32[N,4]
          return %3
        }""",
        (
            '%0 = const() {dtype="f32", value=4.0} : f32[]\n%1 = size(x) {axes=[0]} : f32[]\n'
            "%2 = div(x, %0) : f32[N,4]\n%3 = div(%2, %1) : f32[N,4]\nreturn %3"
        ),
    ),
    "common_subexpressions": (
        """graph f(x: f32[3], y: f32[3]) {
          %0 = mul(x, y) : f32[3]
          %1 = mul(x, y) : f32[3]
          %2 = const() {value=1.0} : f32[]
          %3 = const() {value=1.0} : f32[]
          %4 = add(%0, %2) : f32[3]
          %5 = add(%1, %3) : f32[3]
          %6 = div(%4, %5) : f32[3]
          return %6
        }""",
        (
            "%0 = mul(x, y) : f32[3]\n%1 = const() {value=1.0} : f32[]\n"
            "%2 = add(%0, %1) : f32[3]\n%3 = div(%2, %2) : f32[3]\nreturn %3"
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_simplify_rule_golden_and_meaning(case: str) -> None:
    text, golden = RULE_CASES[case]
    g, out = run_simplify(text)
    assert body(out) == golden
    assert_same_outputs(g, out)


def test_simplify_keeps_identities_that_broadcast() -> None:
    # x*1 and x+0 change the shape here (the constant operand is the larger one): kept
    g, out = run_simplify(
        """graph f(x: f32[], y: f32[N,3]) {
          %0 = const() {value=1.0} : f32[]
          %1 = broadcast_to(x, y) : f32[N,3]
          %2 = mul(%1, %0) : f32[N,3]
          %3 = reshape(%2) {shape=["N",3]} : f32[N,3]
          return %3
        }"""
    )
    assert body(out) == "%0 = broadcast_to(x, y) : f32[N,3]\nreturn %0"
    assert_same_outputs(g, out)


def test_simplify_renames_outputs_and_updates() -> None:
    g, out = run_simplify(
        """graph f(x: f32[3], p: f32[3] param) {
          %0 = const() {value=-0.0} : f32[]
          %1 = mul(x, p) : f32[3]
          %2 = mul(x, p) : f32[3]
          %3 = sub(p, %2) : f32[3]
          %4 = add(%3, %0) : f32[3]
          return %1
          update p <- %4
        }"""
    )
    assert (
        body(out) == "%0 = mul(x, p) : f32[3]\n%1 = sub(p, %0) : f32[3]\nreturn %0\nupdate p <- %1"
    )
    assert_same_outputs(g, out)


def test_simplify_returns_the_same_object_when_nothing_changes() -> None:
    g = parse_graph(
        """graph f(x: f32[3]) {
          %0 = exp(x) : f32[3]
          return %0
        }"""
    )
    assert simplify(g) is g
    assert fuse_dense(g) is g


# ---------------------------------------------------------------------------- fuse_dense

DENSE = """graph f(x: f32[N,4], w: f32[4,3] param, b: f32[3] param) {{
  %0 = matmul(x, w) : f32[N,3]
  %1 = add(%0, b) : f32[N,3]
  {act}
  return {out}
}}"""


# every activation op that is pointwise (the registry's traits, not a list): each fuses alike
POINTWISE_ACTIVATIONS = sorted(ACTIVATIONS & POINTWISE_OPS)


@pytest.mark.parametrize("act", [*POINTWISE_ACTIVATIONS, None])
def test_fuse_dense_puts_bias_and_activation_in_the_gemm_group(act: str | None) -> None:
    text = DENSE.format(act=f"%2 = {act}(%1) : f32[N,3]" if act else "", out="%2" if act else "%1")
    g = verify(parse_graph(text))
    out = verify(fuse_dense(g), after="fuse_dense")
    tail = f"\n[dense0] %2 = {act}(%1) : f32[N,3]" if act else ""
    ret = "%2" if act else "%1"
    assert body(out) == (
        "[dense0] %0 = matmul(x, w) : f32[N,3]\n[dense0] %1 = add(%0, b) : f32[N,3]"
        f"{tail}\nreturn {ret}"
    )
    assert_same_outputs(g, out)
    if act:
        assert explain_fusion(g, out) == [
            ("%0", True, "as the GEMM of kernel dense0 (matmul+add+" + act + ")"),
            ("%2", True, "in the epilogue of matmul %0 kernel dense0 (matmul+add+" + act + ")"),
        ]


def test_fuse_dense_leaves_an_activation_whose_input_is_read_elsewhere() -> None:
    # the pre-activation %1 is also read by %3: the GEMM kernel stores only its last value, so
    # relu cannot join it (matmul + bias still fuse, storing %1)
    g = verify(
        parse_graph(
            """graph f(x: f32[N,4], w: f32[4,3] param, b: f32[3] param) {
          %0 = matmul(x, w) : f32[N,3]
          %1 = add(%0, b) : f32[N,3]
          %2 = relu(%1) : f32[N,3]
          %3 = mul(%1, %2) : f32[N,3]
          return %3
        }"""
        )
    )
    out = verify(fuse_dense(g))
    assert body(out) == (
        "[dense0] %0 = matmul(x, w) : f32[N,3]\n[dense0] %1 = add(%0, b) : f32[N,3]\n"
        "%2 = relu(%1) : f32[N,3]\n%3 = mul(%1, %2) : f32[N,3]\nreturn %3"
    )
    why = {n: (f, r) for n, f, r in explain_fusion(g, out)}
    assert why["%2"][0] is False and "another consumer" in why["%2"][1] and "%3" in why["%2"][1]
    assert_same_outputs(g, out)


def test_fuse_dense_leaves_a_matmul_whose_result_is_an_output() -> None:
    g = verify(
        parse_graph(
            """graph f(x: f32[N,4], w: f32[4,3] param, b: f32[3] param) {
          %0 = matmul(x, w) : f32[N,3]
          %1 = add(%0, b) : f32[N,3]
          return %0, %1
        }"""
        )
    )
    out = fuse_dense(g)
    assert out is g
    assert explain_fusion(g, out)[0][:2] == ("%0", False)


def test_fuse_dense_never_makes_a_cycle() -> None:
    # %3 needs %1 (the sum of the matmul's row) before it can run: joining %3 to the GEMM group
    # would make the group depend on itself
    g = verify(
        parse_graph(
            """graph f(x: f32[N,4], w: f32[4,3] param) {
          %0 = matmul(x, w) : f32[N,3]
          %1 = sum(x) {axes=[1], keepdims=true} : f32[N,1]
          %2 = exp(%0) : f32[N,3]
          %3 = sum(%2) {axes=[1], keepdims=true} : f32[N,1]
          %4 = div(%2, %3) : f32[N,3]
          return %4, %1
        }"""
        )
    )
    out = verify(fuse_dense(g))
    assert body(out).count("[dense0]") == 2 and "[dense0] %4" not in body(out)
    assert_same_outputs(g, out)


def dense_training_graph(act: str) -> tuple[Graph, object]:
    x = gc.input("x", ("N", 5))
    y = gc.input("y", ("N", 2))
    out = gc.dense(gc.dense(x, 4, act, name="l1"), 2, name="l2")
    prog = build_graphs("t", [out], gc.mean_squared_error(out, y), gc.SGD(lr=0.1))
    return prog.training, prog


@pytest.mark.parametrize("act", POINTWISE_ACTIVATIONS)
def test_fuse_dense_puts_the_activation_derivative_in_the_backward_gemm(act: str) -> None:
    g, _ = dense_training_graph(act)
    g = eliminate_dead_nodes(simplify(g))
    out = verify(fuse_dense(g), after="fuse_dense")
    groups: dict[str, list] = {}
    for n in out.nodes:
        if n.group:
            groups.setdefault(n.group, []).append(n)
    # the GEMM computing dh = dY W2^T carries the multiply by the activation's derivative
    back = [grp for grp in groups.values() if grp[0].attr("transpose_b")]
    assert len(back) == 1
    ops = [n.op for n in back[0]]
    assert ops[0] == "matmul" and back[0][0].attr("transpose_b") and ops[-1] == "mul"
    derivative = {"relu": {"greater"}, "sigmoid": {"sub", "mul"}, "tanh": {"sub", "mul"}}
    assert derivative.get(act, set()) <= set(ops[1:-1]) and len(ops) > 2
    # the forward layer 1 is matmul + add + activation in one group, unless the activation's
    # VJP reads its input (softplus: sigmoid(x)), which the GEMM then stores for the backward pass
    fwd = [[n.op for n in grp] for grp in groups.values() if grp[0].section == "forward"]
    (a,) = [n for n in g.nodes if n.op == act]
    if a.inputs[0] in g.users and any(g[u].section == "backward" for u in g.users[a.inputs[0]]):
        assert ["matmul", "add"] in fwd
    else:
        assert ["matmul", "add", act] in fwd
    assert_same_outputs(g, out)


def test_fuse_dense_keeps_gradients_out_of_the_update() -> None:
    # with SGD the weight gradient's only reader is p - lr * g; fuse_dense keeps it a stored
    # gradient (fuse_update_epilogue, a pass of its own, then puts the update in that GEMM's
    # epilogue: tests/test_update_epilogue.py)
    g, prog = dense_training_graph("relu")
    out = run_pipeline(g, 2, disabled=("fuse_update_epilogue",)).graph
    rows = {n: (f, why) for n, f, why in explain_fusion(g, out)}
    for grad in prog.grads.values():
        if g[grad].op == "matmul":
            assert rows[grad] == (False, rows[grad][1]) and "optimizer update" in rows[grad][1]
            assert out[grad].group is None


# ---------------------------------------------------------------------------- fuse_elementwise


def test_fuse_elementwise_makes_one_group_of_a_tree() -> None:
    g = verify(
        parse_graph(
            """graph f(x: f32[N,3], b: f32[3]) {
          %0 = exp(x) : f32[N,3]
          %1 = add(%0, b) : f32[N,3]
          %2 = tanh(x) : f32[N,3]
          %3 = mul(%1, %2) : f32[N,3]
          %4 = sum(%1) {axes=[0]} : f32[3]
          return %3, %4
        }"""
        )
    )
    out = verify(fuse_elementwise(g), after="fuse_elementwise")
    assert body(out) == lines(
        "[ew0] %0 = exp(x) : f32[N,3]",
        "[ew0] %1 = add(%0, b) : f32[N,3]",
        "[ew0] %2 = tanh(x) : f32[N,3]",
        "[ew0] %3 = mul(%1, %2) : f32[N,3]",
        "%4 = sum(%1) {axes=[0]} : f32[3]",
        "return %3, %4",
    )
    assert_same_outputs(g, out)


def test_fuse_elementwise_merges_sibling_loops_over_one_value() -> None:
    g = verify(
        parse_graph(
            """graph f(x: f32[N,3], y: f32[N,3]) {
          %0 = exp(x) : f32[N,3]
          %1 = sum(%0) {axes=[0]} : f32[3]
          %2 = mul(x, y) : f32[N,3]
          %3 = sum(%2) {axes=[0]} : f32[3]
          return %1, %3
        }"""
        )
    )
    out = verify(fuse_elementwise(g))
    assert body(out) == lines(
        "[ew0] %0 = exp(x) : f32[N,3]",
        "[ew0] %1 = mul(x, y) : f32[N,3]",
        "%2 = sum(%0) {axes=[0]} : f32[3]",
        "%3 = sum(%1) {axes=[0]} : f32[3]",
        "return %2, %3",
    )
    assert_same_outputs(g, out)


def test_fuse_elementwise_does_not_fuse_through_a_reduction() -> None:
    # %0 -> %1 (sum) -> %2: putting %0 and %2 in one loop would need %1 inside it
    g = verify(
        parse_graph(
            """graph f(x: f32[N,3]) {
          %0 = exp(x) : f32[N,3]
          %1 = sum(%0) {axes=[1], keepdims=true} : f32[N,1]
          %2 = div(%0, %1) : f32[N,3]
          %3 = neg(%2) : f32[N,3]
          return %3
        }"""
        )
    )
    out = verify(fuse_elementwise(g))
    assert body(out) == lines(
        "%0 = exp(x) : f32[N,3]",
        "%1 = sum(%0) {axes=[1], keepdims=true} : f32[N,1]",
        "[ew0] %2 = div(%0, %1) : f32[N,3]",
        "[ew0] %3 = neg(%2) : f32[N,3]",
        "return %3",
    )
    assert_same_outputs(g, out)


def test_fuse_elementwise_reorders_so_that_a_group_is_contiguous() -> None:
    # %1 and %3 join; %2 (a matmul they do not depend on... but %3 does) must run first
    g = verify(
        parse_graph(
            """graph f(x: f32[3,3], w: f32[3,3]) {
          %0 = exp(x) : f32[3,3]
          %1 = neg(%0) : f32[3,3]
          %2 = matmul(x, w) : f32[3,3]
          %3 = add(%1, %2) : f32[3,3]
          return %3
        }"""
        )
    )
    out = verify(fuse_elementwise(g))
    assert body(out) == lines(
        "%0 = matmul(x, w) : f32[3,3]",
        "[ew0] %1 = exp(x) : f32[3,3]",
        "[ew0] %2 = neg(%1) : f32[3,3]",
        "[ew0] %3 = add(%2, %0) : f32[3,3]",
        "return %3",
    )
    assert_same_outputs(g, out)


def test_group_ids_may_equal_node_names() -> None:
    g = verify(
        parse_graph(
            """graph f(x: f32[N,3], w: f32[3,3]) {
          ew0 = exp(x) : f32[N,3]
          dense0 = sum(ew0) {axes=[1], keepdims=true} : f32[N,1]
          %0 = matmul(ew0, w) : f32[N,3]
          %1 = add(%0, dense0) : f32[N,3]
          %2 = neg(%1) : f32[N,3]
          %3 = tanh(ew0) : f32[N,3]
          return %2, %3
        }"""
        )
    )
    out = verify(fuse_elementwise(verify(fuse_dense(g))))
    assert [n.group for n in out.nodes if n.op in ("matmul", "add", "neg")] == ["dense0"] * 3
    assert out["ew0"].group == out["%3"].group is not None
    assert_same_outputs(g, out)


def test_fuse_softmax_cross_entropy_joins_loss_gradient_and_bias_gradient() -> None:
    g = verify(
        parse_graph(
            """graph f(z: f32[N,4], labels: i32[N]) {
          %0 = softmax_cross_entropy(z, labels) : f32[]
          %1 = const() {value=1.0} : f32[]
          %2 = softmax_cross_entropy_grad(z, labels, %1) : f32[N,4]
          %3 = sum(%2) {axes=[1]} : f32[N]
          %4 = sum(%2) {axes=[0]} : f32[4]
          %5 = softmax_cross_entropy(%2, labels) : f32[]
          return %0, %3, %4, %5
        }"""
        )
    )
    out = verify(fuse_softmax_cross_entropy(g), after="fuse_softmax_cross_entropy")
    assert body(out) == lines(
        "%0 = const() {value=1.0} : f32[]",
        "[xent0] %1 = softmax_cross_entropy(z, labels) : f32[]",
        "[xent0] %2 = softmax_cross_entropy_grad(z, labels, %0) : f32[N,4]",
        "[xent0] %3 = sum(%2) {axes=[0]} : f32[4]",
        "%4 = sum(%2) {axes=[1]} : f32[N]",
        "%5 = softmax_cross_entropy(%2, labels) : f32[]",
        "return %1, %4, %3, %5",
    )
    assert_same_outputs(g, out)


def _digits_training():
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 32, "relu", name="fc1"), 10, name="fc2")
    return build_graphs(
        "digits", [logits], gc.softmax_cross_entropy(logits, labels), gc.Adam(lr=1e-2)
    )


def test_adam_updates_become_one_kernel_per_parameter() -> None:
    # without fuse_optimizer (which makes them one flat kernel: tests/test_optimizer_fusion.py)
    prog = _digits_training()
    make_layout(prog)
    g = run_pipeline(prog.training, 2, verify_each=True, disabled=("fuse_optimizer",)).graph
    sched = schedule(g, prog.layout, prog.grads)
    update = [k for k in sched.kernels if g[k.nodes[0]].section == "update"]
    params = [p.name for p in g.params]
    for p in params:
        writers = [k for k in update if any(g[n].inputs and p in g[n].inputs for n in k.nodes)]
        assert len(writers) == 1, (p, writers)
        assert len(writers[0].stores) == 3  # m, v and the parameter, in place
    # + 1 scalar kernel: the i64 step increment and Adam's two bias corrections from it
    assert len(update) == len(params) + 1
    assert_same_outputs(prog.training, g)


def test_explain_fusion_names_the_backward_consumer() -> None:
    prog = _digits_training()
    g = prog.training
    out = run_pipeline(g, 2).graph
    rows = {n: (f, why) for n, f, why in explain_fusion(g, out)}
    assert set(rows) == {n.name for n in g.nodes if n.op in ("matmul", "relu")}
    relu = next(n.name for n in g.nodes if n.op == "relu")
    assert rows[relu][0] is True
    # the weight gradients are read by Adam's m and v updates: two consumers
    wgrads = [n.name for n in g.nodes if n.op == "matmul" and n.attr("transpose_a")]
    assert wgrads and all(not rows[w][0] and "another consumer" in rows[w][1] for w in wgrads)


# ---------------------------------------------------------------------------- pipeline


def test_levels_and_disabled_passes() -> None:
    def names(lvl):
        return [p.__name__ for p in passes_for_level(lvl)]

    assert names(0) == ["eliminate_dead_nodes"]
    assert names(1) == ["simplify", "eliminate_dead_nodes"]
    assert names(2) == [
        "simplify",
        "eliminate_dead_nodes",
        "fuse_dense",
        "fuse_conv",
        "fuse_elementwise",
        "fuse_softmax_cross_entropy",
        "fuse_update_epilogue",
        "fuse_optimizer",
    ]
    prog = _digits_training()
    res = run_pipeline(prog.training, 2, disabled=("fuse_dense",))
    assert [r.name for r in res.records] == [
        "simplify",
        "eliminate_dead_nodes",
        "fuse_conv",
        "fuse_elementwise",
        "fuse_softmax_cross_entropy",
        "fuse_update_epilogue",
        "fuse_optimizer",
    ]
    assert not any(n.group and n.op == "matmul" for n in res.graph.nodes)
    assert any(n.group for n in res.graph.nodes)
    with pytest.raises(GraphcError, match="unknown pass 'fuse_dens'"):
        run_pipeline(prog.training, 2, disabled=("fuse_dens",))
