"""Every op: compiled forward against its numpy reference, compiled gradient against central
finite differences in float64, and the registry's completeness."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import numeric_grad

import graphc as gc
from graphc.codegen.lower import LOWERINGS
from graphc.ir.ops import OPS


@dataclass
class Case:
    op: str
    shapes: list[tuple]
    attrs: dict = field(default_factory=dict)
    low: float = -2.0
    high: float = 2.0
    avoid: float | None = None  # resample values within 0.05 of this kink
    labels: int | None = None  # the last operand is i32 labels in [0, labels)
    id: str = ""

    def sample(self, rng: np.random.Generator, dtype=np.float64) -> list[np.ndarray]:
        xs = []
        shapes = self.shapes[:-1] if self.labels else self.shapes
        for s in shapes:
            x = rng.uniform(self.low, self.high, s)
            if self.avoid is not None:
                bad = np.abs(x - self.avoid) < 0.05
                while bad.any():
                    x[bad] = rng.uniform(self.low, self.high, bad.sum())
                    bad = np.abs(x - self.avoid) < 0.05
            xs.append(x.astype(dtype))
        if self.labels:
            xs.append(rng.integers(0, self.labels, self.shapes[-1]).astype(np.int32))
        if self.op == "broadcast_to":  # the second operand only gives the shape
            xs = xs[:1]
        return xs


CASES = [
    Case("add", [(3, 4), (4,)], id="add-broadcast"),
    Case("add", [(3, 4), (3, 4)]),
    Case("sub", [(3, 4), (1, 4)], id="sub-broadcast"),
    Case("mul", [(2, 3), (2, 3)]),
    Case("mul", [(2, 3), ()], id="mul-scalar"),
    Case("div", [(2, 3), (2, 3)], low=0.5, high=2.0),
    Case("maximum", [(3, 5), (3, 5)]),
    Case("neg", [(4, 3)]),
    Case("exp", [(3, 4)]),
    Case("log", [(5,)], low=0.2, high=3.0),
    Case("sqrt", [(5,)], low=0.2, high=3.0),
    Case("square", [(3, 2)]),
    Case("sigmoid", [(3, 4)], low=-6, high=6),
    Case("tanh", [(3, 4)], low=-3, high=3),
    Case("relu", [(3, 4)], avoid=0.0),
    Case("softplus", [(3, 4)], low=-6, high=6),
    Case("sigmoid_cross_entropy", [(3, 4), (3, 4)], avoid=0.0),
    Case("sigmoid_cross_entropy", [(3, 4), (4,)], low=-5, high=5, id="sigmoid_xent-bcast"),
    Case("leaky_relu", [(3, 4)], {"alpha": 0.2}, avoid=0.0),
    Case("leaky_relu", [(3, 4)], avoid=0.0, id="leaky_relu-default-alpha"),
    Case("matmul", [(3, 4), (4, 5)]),
    Case("matmul", [(4, 3), (4, 5)], {"transpose_a": True}, id="matmul-ta"),
    Case("matmul", [(3, 4), (5, 4)], {"transpose_b": True}, id="matmul-tb"),
    Case("matmul", [(4, 3), (5, 4)], {"transpose_a": True, "transpose_b": True}, id="matmul-tatb"),
    Case("transpose", [(3, 5)]),
    Case("sum", [(3, 4)], {"axes": (0,)}, id="sum-axis0"),
    Case("sum", [(3, 4)], {"axes": (1,), "keepdims": True}, id="sum-axis1-keep"),
    Case("sum", [(2, 3, 4)], {}, id="sum-all"),
    Case("mean", [(3, 4)], {"axes": (1,)}, id="mean-axis1"),
    Case("mean", [(3, 4)], {}, id="mean-all"),
    Case("reshape", [(3, 4)], {"shape": (4, 3)}),
    Case("broadcast_to", [(4,), (3, 4)], id="broadcast_to"),
    Case("softmax", [(3, 5)]),
    Case("softmax_cross_entropy", [(4, 5), (4,)], labels=5),
    Case(
        "conv_filter_grad",
        [(2, 2, 3, 2), (2, 3, 5, 4)],
        {"strides": (2, 1), "pads": (1, 0, 0, 0), "kernel_shape": (2, 3)},
    ),
]

TESTED_ELSEWHERE = {"dropout"}  # random mask: tests/test_dropout.py checks its VJP
NONDIFF = {
    "greater",
    "greater_equal",
    "softmax_cross_entropy_grad",
    "const",
    "size",
    "input",
    "param",
    "state",
}


def _build(case: Case, dtype: str, shapes: list[tuple]):
    """A model whose params are the op's float operands and whose output is the op's result."""
    params, operands = [], []
    if case.op == "broadcast_to":
        shapes = shapes[:1]
    for k, s in enumerate(shapes):
        if case.labels and k == len(shapes) - 1:
            operands.append(gc.input("labels", s, dtype="i32"))
        else:
            p = gc.param(f"p{k}", s, init="zeros", dtype=dtype)
            params.append(p)
            operands.append(p)
    from graphc.dsl import apply

    if case.op == "broadcast_to":
        like = gc.input("like", case.shapes[1], dtype=dtype)
        y = apply("broadcast_to", operands[0], like)
        operands = operands[:1]
        return y, params, like
    return apply(case.op, *operands, **case.attrs), params, None


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id or c.op)
def test_forward_matches_reference(case: Case) -> None:
    rng = np.random.default_rng(1)
    xs = case.sample(rng, np.float32)
    y, params, like = _build(case, "f32", case.shapes)
    u = gc.input("u", y.shape)  # loss = sum(u * y) so that every op can be trained
    loss = gc.sum(u * y) if y.shape else u * y
    feeds_x = {"u": np.ones(y.shape, np.float32)}
    if like is not None:
        feeds_x["like"] = np.zeros(case.shapes[1], np.float32)
    if case.labels:
        feeds_x["labels"] = xs[-1]
    m = gc.compile(y, loss, gc.SGD(lr=1.0), name="fwd")
    m.set_weights({f"p{k}": xs[k] for k in range(len(params))})
    got = _predict_no_inputs(m, feeds_x)
    ref_args = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
    if like is not None:
        ref_args.append(np.zeros(case.shapes[1]))
    want = OPS[case.op].evaluate(*ref_args, **case.attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{case.op}: forward")


def _predict_no_inputs(m, feeds):
    """Run the inference entry directly (these graphs have no batch dimension)."""
    e = m.entries["infer"]
    arrays = [
        np.array(feeds[n], dtype=t.np_dtype, order="C")
        for n, t in zip(e.sched.input_slots, e.in_types)
    ]
    return e(arrays, 1)[0].copy()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id or c.op)
def test_gradient_matches_finite_differences(case: Case) -> None:
    """Compiled in float64: one SGD step with lr=1 moves each operand by exactly its gradient."""
    rng = np.random.default_rng(0)
    xs = case.sample(rng, np.float64)
    y, params, like = _build(case, "f64", case.shapes)
    ref = OPS[case.op].evaluate
    out_shape = np.shape(
        ref(*xs, *([np.zeros(case.shapes[1])] if like is not None else []), **case.attrs)
    )
    u = np.asarray(rng.standard_normal(out_shape))
    uin = gc.input("u", y.shape, dtype="f64")
    loss = gc.sum(uin * y) if y.shape else uin * y
    m = gc.compile(y, loss, gc.SGD(lr=1.0), name="grad")
    before = {f"p{k}": xs[k] for k in range(len(params))}
    m.set_weights(before)
    feeds = {"u": u}
    if like is not None:
        feeds["like"] = np.zeros(case.shapes[1])
    if case.labels:
        feeds["labels"] = xs[-1]
    feats = {k: v for k, v in feeds.items() if k in m.program.feature_inputs}
    labs = {k: v for k, v in feeds.items() if k in m.program.label_inputs}
    _train_step_any_batch(m, feats, labs)
    extra = [np.zeros(case.shapes[1])] if like is not None else []

    def f(*a):
        return float(np.sum(u * ref(*a, *extra, **case.attrs)))

    for k in range(len(params)):
        got = before[f"p{k}"] - m.params[f"p{k}"]
        want = numeric_grad(f, xs, k)
        np.testing.assert_allclose(
            got, want, rtol=1e-5, atol=1e-7, err_msg=f"{case.op}: gradient of operand {k}"
        )


def _train_step_any_batch(m, feats, labs):
    e = m.entries["train_step"]
    arrays = []
    for name in e.sched.input_slots:
        if name == "lr":
            arrays.append(np.array(m.lr, dtype=e.in_types[len(arrays)].np_dtype))
        else:
            v = {**feats, **labs}[name]
            arrays.append(np.array(v, dtype=e.in_types[len(arrays)].np_dtype, order="C"))
    e(arrays, 1)


def test_every_op_has_doc_reference_lowering_and_gradient_check() -> None:
    from test_ops_new import CASES as NEW_CASES  # issue #14's ops, batched into few compiles

    covered = {c.op for c in CASES} | {c.op for c in NEW_CASES if c.grad}
    kernel_ops = {
        "max",
        "min",
        "argmax",
        "log_softmax",
        "slice",
        "pad",
        "concat",
        "reverse",
        "permute",
        "batched_matmul",
        "conv",
        "conv_transpose",
        "conv_filter_grad",
        "matmul",
        "sum",
        "mean",
        "transpose",
        "reshape",
        "softmax",
        "softmax_cross_entropy",
        "softmax_cross_entropy_grad",
        "const",
        "size",
    }
    for name, op in OPS.items():
        assert type(op).__doc__, f"op {name} has no docstring"
        if name in ("input", "param", "state"):
            continue
        assert type(op).reference is not type(op).__mro__[-2].reference, f"{name}: no reference"
        if hasattr(op, "decompose"):  # a composite: its primitives have lowerings and VJPs
            continue
        assert name in LOWERINGS or name in kernel_ops, f"op {name} has no lowering"
        if not op.nondifferentiable and op.kind != "source" and name not in TESTED_ELSEWHERE:
            assert name in covered, f"op {name} has no row in CASES (gradient check)"
        else:
            assert name in NONDIFF | {"dropout"} or op.nondifferentiable, name
