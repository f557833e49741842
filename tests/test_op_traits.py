"""Op traits: the named op sets come from the registry, attr defaults are declared once on the op
class, and every pointwise activation works end to end through ``dense`` (fused into the GEMM
epilogue, forward and gradient against numpy float64)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import numeric_grad

import graphc as gc
from graphc.ir.ops import (
    ACTIVATIONS,
    INLINE_OPS,
    OPS,
    POINTWISE_OPS,
    REQUIRED,
    SOURCE_OPS,
    Kind,
    ops_where,
)

POINTWISE_ACTIVATIONS = sorted(ACTIVATIONS & POINTWISE_OPS)


def test_named_sets_are_the_ops_with_the_trait() -> None:
    assert {n for n, op in OPS.items() if op.kind is Kind.SOURCE} == SOURCE_OPS
    assert {"input", "param", "state"} <= SOURCE_OPS
    assert {"const", "size"} <= INLINE_OPS
    assert {"relu", "sigmoid", "tanh", "softplus", "leaky_relu"} <= ACTIVATIONS
    assert "transpose" not in POINTWISE_OPS  # a movement, not one element from the same index
    assert ops_where(kind=Kind.MATMUL) == {"matmul", "batched_matmul"}


@pytest.mark.parametrize("name", sorted(OPS))
def test_traits_are_consistent(name: str) -> None:
    op = OPS[name]
    assert isinstance(op.kind, Kind), name
    if op.inline:
        assert op.kind is Kind.SCALAR, name
    if op.identity is not None or op.commutative:
        assert op.arity == 2 and op.kind is Kind.POINTWISE, name
    if op.commutative:
        x, y = np.array([0.5, -2.0, 3.0]), np.array([1.5, 2.0, -1.0])
        np.testing.assert_array_equal(op.evaluate(x, y), op.evaluate(y, x), err_msg=name)
    if op.identity is not None:  # bit for bit, signed zeros and infinities included
        x = np.array([0.5, -2.0, 3.0, 0.0, -0.0, np.inf, -np.inf])
        got = op.evaluate(x, np.array(op.identity))
        np.testing.assert_array_equal(got.view(np.int64), x.view(np.int64), err_msg=name)
    if op.data_operands is not None:
        assert op.arity is not None and 0 < op.data_operands < op.arity, name


@pytest.mark.parametrize("name", sorted(gc.dsl.OP_FUNCTIONS))
def test_dsl_function_keywords_are_the_op_attrs_with_their_defaults(name: str) -> None:
    sig = inspect.signature(getattr(gc, name))
    for k, v in OPS[name].attrs.items():
        want = inspect.Parameter.empty if v is REQUIRED else v
        assert sig.parameters[k].default == want, (name, k)


def test_leaky_relu_default_alpha_comes_from_the_op() -> None:
    x = gc.input("x", ("N", 3))
    assert gc.leaky_relu(x).node.attr("alpha") == OPS["leaky_relu"].attrs["alpha"]
    assert gc.leaky_relu(x, alpha=0.3).node.attr("alpha") == 0.3
    with pytest.raises(gc.GraphcError, match="alpha"):
        gc.leaky_relu(x, alpah=0.3)


@pytest.mark.parametrize("act", POINTWISE_ACTIVATIONS)
def test_dense_with_every_pointwise_activation_is_fused_and_matches_numpy(act: str) -> None:
    """dense(x, 3, act): the activation runs in the GEMM's epilogue; predict and one SGD step
    (lr = 1, so the weight moves by its gradient) agree with numpy in float64."""
    rng = np.random.default_rng(3)
    x = gc.input("x", ("N", 5), dtype="f64")
    t = gc.input("t", ("N", 3), dtype="f64")
    out = gc.dense(x, 3, act, name="d")
    m = gc.compile(out, gc.mean_squared_error(out, t), gc.SGD(lr=1.0), name=f"act_{act}")
    sched = m.entries["infer"].sched
    fused = [k for k in sched.kernels if {sched.graph[v].op for v in k.nodes} >= {"matmul", act}]
    assert fused, f"{act} is not in the GEMM epilogue: {[k.nodes for k in sched.kernels]}"

    xs = rng.uniform(-2, 2, (7, 5))
    ts = rng.uniform(-1, 1, (7, 3))
    w, b = m.params["d.w"].copy(), m.params["d.b"].copy() + rng.uniform(-0.5, 0.5, 3)
    bad = np.any(np.abs(xs @ w + b) < 0.05, axis=1)  # keep pre-activations off a kink
    while bad.any():
        xs[bad] = rng.uniform(-2, 2, (int(bad.sum()), 5))
        bad = np.any(np.abs(xs @ w + b) < 0.05, axis=1)
    m.set_weights({"d.b": b})

    def forward(w: np.ndarray) -> np.ndarray:
        return OPS[act].evaluate(xs @ w + b)

    np.testing.assert_allclose(m.predict(xs), forward(w), rtol=1e-10, atol=1e-12)
    m.train_step(xs, ts)
    want = numeric_grad(lambda w: float(np.mean((forward(w) - ts) ** 2)), [w], 0)
    np.testing.assert_allclose(w - m.params["d.w"], want, rtol=1e-6, atol=1e-8, err_msg=act)


@pytest.mark.parametrize("name", sorted(n for n, o in OPS.items() if o.identity is not None))
def test_simplify_removes_every_declared_identity_and_only_it(name: str) -> None:
    """One rule serves every op declaring an identity; the other signed zero is not one."""
    from graphc.ir.passes.simplify import SIMPLIFY_RULES, identity_operand, simplify
    from graphc.ir.text import parse_graph

    assert identity_operand in SIMPLIFY_RULES[name]
    e = OPS[name].identity
    text = "graph f(x: f32[4]) {{\n  %0 = const() {{value={v!r}}} : f32[]\n  %1 = {op}({a}) : f32[4]\n  return %1\n}}"
    out = simplify(parse_graph(text.format(v=e, op=name, a="x, %0")))
    assert out.outputs == ("x",)
    if OPS[name].commutative:
        assert simplify(parse_graph(text.format(v=e, op=name, a="%0, x"))).outputs == ("x",)
    if e == 0.0:
        kept = simplify(parse_graph(text.format(v=-e, op=name, a="x, %0")))
        assert kept.outputs == ("%1",), f"{name}(x, {-e!r}) is not x at x = -0.0"
