"""The ops of issue #14 (activations, pointwise math, comparisons, reductions, log_softmax,
movement), batched: every case is one output of one model, so the whole table costs a few
compiles (forward in float32, gradients in float64, fused against unfused, dense epilogues).

References are the registry's numpy references in float64 (``OPS[op].evaluate``), gradients
are central finite differences of them; the largest errors measured are printed with ``-s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import numeric_grad

import graphc as gc
from graphc.dsl import ACTIVATION_ALIASES, apply
from graphc.ir.ops import OPS


@dataclass
class Case:
    op: str
    shapes: list[tuple]
    attrs: dict = field(default_factory=dict)
    low: float = -2.0
    high: float = 2.0
    avoid: tuple[float, ...] = ()  # resample values within 0.05 of these kinks
    mask: bool = False  # operand 0 is a 0/1 mask (where's condition)
    ties: bool = False  # values on a coarse grid: reductions see ties
    grad: bool = True

    @property
    def id(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"{self.op}({extra})" if extra else self.op

    def sample(self, rng: np.random.Generator) -> list[np.ndarray]:
        xs = []
        for k, s in enumerate(self.shapes):
            if self.mask and k == 0:
                xs.append((rng.random(s) < 0.5).astype(np.float64))
                continue
            if self.ties:
                xs.append(rng.integers(-2, 3, s).astype(np.float64))
                continue
            x = rng.uniform(self.low, self.high, s)
            for kink in self.avoid:
                bad = np.abs(x - kink) < 0.05
                while bad.any():
                    x[bad] = rng.uniform(self.low, self.high, bad.sum())
                    bad = np.abs(x - kink) < 0.05
            xs.append(x)
        return xs


CASES = [
    Case("elu", [(3, 4)], {"alpha": 0.7}, avoid=(0.0,)),
    Case("selu", [(3, 4)], avoid=(0.0,)),
    Case("gelu", [(3, 4)], low=-4, high=4),
    Case("gelu", [(3, 4)], {"approximate": "tanh"}, low=-4, high=4),
    Case("silu", [(3, 4)], low=-6, high=6),
    Case("mish", [(3, 4)], low=-6, high=6),
    Case("softsign", [(3, 4)], low=-5, high=5, avoid=(0.0,)),
    Case("hard_sigmoid", [(3, 4)], low=-4, high=4, avoid=(-2.5, 2.5)),
    Case("hard_sigmoid", [(3, 4)], {"alpha": 1 / 6, "beta": 0.5}, low=-4, high=4, avoid=(-3, 3)),
    Case("hard_tanh", [(3, 4)], avoid=(-1.0, 1.0)),
    Case("abs", [(3, 4)], avoid=(0.0,)),
    Case("minimum", [(3, 4), (4,)]),
    Case("clip", [(3, 4)], {"min": -0.5, "max": 0.75}, avoid=(-0.5, 0.75)),
    Case("pow", [(3, 4)], {"exponent": 3.0}),
    Case("pow", [(3, 4)], {"exponent": -2.0}, low=0.5, high=2.0),
    Case("pow", [(3, 4)], {"exponent": 2.5}, low=0.2, high=3.0),
    Case("pow", [(3, 4)], {"exponent": 0.5}, low=0.2, high=3.0),
    Case("reciprocal", [(3, 4)], low=0.5, high=3.0),
    Case("rsqrt", [(3, 4)], low=0.2, high=3.0),
    Case("erf", [(3, 4)], low=-3, high=3),
    Case("less", [(3, 4), (3, 4)], grad=False),
    Case("less_equal", [(3, 4), ()], ties=True, grad=False),
    Case("equal", [(3, 4), (4,)], ties=True, grad=False),
    Case("not_equal", [(3, 4), (3, 1)], ties=True, grad=False),
    Case("where", [(3, 4), (3, 4), (4,)], mask=True),
    Case("max", [(3, 5)], {"axes": (1,)}),
    Case("max", [(2, 3, 4)], {"axes": (0, 2), "keepdims": True}),
    Case("max", [(3, 5)], {"axes": (1,)}, ties=True, grad=False),  # forward at ties
    Case("min", [(3, 5)], {"axes": (0,)}),
    Case("min", [(3, 4)], {}),
    Case("argmax", [(3, 5)], {"axis": 1}, ties=True, grad=False),
    Case("argmax", [(2, 3, 4)], {"axis": 1, "keepdims": True}, grad=False),
    Case("log_softmax", [(3, 5)], low=-4, high=4),
    Case("slice", [(3, 6)], {"axes": (1,), "starts": (1,), "ends": (-1,)}),
    Case("slice", [(4, 3, 5)], {"axes": (0, 2), "starts": (1, 2), "ends": (3, 100)}),
    Case("pad", [(3, 4)], {"axes": (1, 0), "before": (1, 2), "after": (2, 0)}),
    Case("concat", [(3, 2), (3, 4), (3, 1)], {"axis": 1}),
    Case("concat", [(1, 2, 3), (2, 2, 3)], {"axis": 0}),
    Case("reverse", [(3, 6)], {"axes": (1,)}),
    Case("reverse", [(4, 3, 5)], {"axes": (0, 2)}),
    Case("permute", [(2, 3, 4)], {"perm": (2, 0, 1)}),
    Case("permute", [(2, 1, 3, 4)], {"perm": (0, 3, 1, 2)}),
    Case("batched_matmul", [(2, 3, 4), (2, 4, 5)], {}),
    Case("batched_matmul", [(2, 1, 4, 3), (3, 5, 4)], {"transpose_a": True, "transpose_b": True}),
    Case("batched_matmul", [(3, 4), (2, 3, 5, 4)], {"transpose_b": True}),
    Case("batched_matmul", [(2, 4, 3), (4, 5)], {"transpose_a": True}),
    Case("conv", [(2, 3, 5, 6), (4, 3, 3, 2)], {"strides": (2, 1), "pads": (1, 0, 1, 1)}),
    Case("conv", [(1, 4, 7), (4, 1, 3)], {"groups": 4, "dilations": (2,)}),
    Case(
        "conv_transpose",
        [(2, 4, 3, 3), (4, 1, 2, 3)],
        {"strides": (2, 2), "groups": 2, "output_padding": (1, 0)},
    ),
]


def _model(cases: list[Case], dtype: str, opt_level: int = 2, disabled=()):
    """One model: per case, params for its operands, its result as an output; loss sum(u * y)."""
    outs, terms = [], []
    for c, case in enumerate(cases):
        ps = [
            gc.input(f"c{c}p{k}", s, dtype=dtype)  # where's condition: data, no gradient
            if case.mask and k == 0
            else gc.param(f"c{c}p{k}", s, init="zeros", dtype=dtype)
            for k, s in enumerate(case.shapes)
        ]
        y = apply(case.op, *ps, **case.attrs)
        outs.append(y)
        if case.grad:
            u = gc.input(f"u{c}", y.shape, dtype=dtype)
            terms.append(gc.sum(u * y) if y.shape else u * y)
    loss = terms[0]
    for t in terms[1:]:
        loss = loss + t
    return gc.compile(
        outs, loss, gc.SGD(lr=1.0), name="ops", opt_level=opt_level, disabled_passes=disabled
    )


def _run(m, entry: str, feeds: dict[str, np.ndarray]):
    e = m.entries[entry]
    arrays = []
    for name, t in zip(e.sched.input_slots, e.in_types):
        v = np.array(float(m.lr)) if name == "lr" else feeds[name]
        arrays.append(np.array(v, dtype=t.np_dtype, order="C"))
    return [o.copy() for o in e(arrays, 1)]


def _data(cases: list[Case], seed: int):
    rng = np.random.default_rng(seed)
    xs = [case.sample(rng) for case in cases]
    us = {}
    for c, case in enumerate(cases):
        if case.grad:
            us[f"u{c}"] = rng.standard_normal(np.shape(OPS[case.op].evaluate(*xs[c], **case.attrs)))
        if case.mask:
            us[f"c{c}p0"] = xs[c][0]
    return xs, us


def _weights(cases, xs):
    return {
        f"c{c}p{k}": x
        for c in range(len(cases))
        for k, x in enumerate(xs[c])
        if not (cases[c].mask and k == 0)
    }


@pytest.fixture(scope="module")
def forward_f32():
    m = _model(CASES, "f32")
    xs, us = _data(CASES, 1)
    m.set_weights(_weights(CASES, xs))
    return m, xs, us, _run(m, "infer", us)


@pytest.mark.parametrize("c", range(len(CASES)), ids=[c.id for c in CASES])
def test_forward_matches_float64_reference(forward_f32, c: int) -> None:
    _, xs, _, got = forward_f32
    case = CASES[c]
    x32 = [x.astype(np.float32).astype(np.float64) for x in xs[c]]  # the inputs the model saw
    want = OPS[case.op].evaluate(*x32, **case.attrs)
    if case.op == "argmax":
        np.testing.assert_array_equal(got[c], want)
        assert got[c].dtype == np.int32
        return
    err = np.abs(got[c] - want)
    big = np.abs(want) > 1e-3
    rel = float(np.max(err[big] / np.abs(want[big]))) if big.any() else 0.0
    print(f"\nforward {case.id}: max abs err {np.max(err):.2e}, max rel err {rel:.2e} (|ref|>1e-3)")
    np.testing.assert_allclose(got[c], want, rtol=1e-5, atol=1e-6, err_msg=case.id)


@pytest.fixture(scope="module")
def gradient_f64():
    cases = [c for c in CASES if c.grad]
    m = _model(cases, "f64")
    xs, us = _data(cases, 0)
    before = _weights(cases, xs)
    m.set_weights(before)
    _run(m, "train_step", us)
    return cases, m, xs, us, before


@pytest.mark.parametrize("case", [c for c in CASES if c.grad], ids=lambda c: c.id)
def test_gradient_matches_finite_differences(gradient_f64, case: Case) -> None:
    """float64: one SGD step with lr=1 moves each operand by exactly its gradient."""
    cases, m, xs, us, before = gradient_f64
    c = cases.index(case)
    u = us[f"u{c}"]

    def f(*a):
        return float(np.sum(u * OPS[case.op].evaluate(*a, **case.attrs)))

    for k in range(len(case.shapes)):
        if case.mask and k == 0:
            continue  # where's condition: no gradient
        name = f"c{c}p{k}"
        got = before[name] - m.params[name]
        want = numeric_grad(f, xs[c], k)
        print(f"\ngradient {case.id} operand {k}: max abs err {np.max(np.abs(got - want)):.2e}")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=f"{case.id} op {k}")


def test_fused_and_unfused_paths_agree() -> None:
    """-O2 (fusion) and -O2 with every fusion pass off: same outputs and same gradients."""
    cases = [c for c in CASES if c.grad]
    xs, us = _data(cases, 2)
    w = _weights(cases, xs)
    off = ("fuse_dense", "fuse_elementwise", "fuse_softmax_cross_entropy", "fuse_optimizer")
    res = []
    for disabled in ((), off):
        m = _model(cases, "f32", disabled=disabled)
        m.set_weights(w)
        outs = _run(m, "infer", us)
        _run(m, "train_step", us)
        res.append((outs, {k: m.params[k].copy() for k in w}))
    for c, case in enumerate(cases):
        np.testing.assert_allclose(
            res[0][0][c], res[1][0][c], rtol=1e-6, atol=1e-7, err_msg=case.id
        )
    for k in w:
        np.testing.assert_allclose(res[0][1][k], res[1][1][k], rtol=1e-6, atol=1e-7, err_msg=k)


ACTS = [
    ("elu", {}),
    ("selu", {}),
    ("gelu", {}),
    ("gelu_tanh", {}),
    ("silu", {}),
    ("swish", {}),
    ("mish", {}),
    ("softsign", {}),
    ("hard_sigmoid", {}),
    ("hard_tanh", {}),
]


def test_every_activation_fuses_into_the_dense_epilogue() -> None:
    """dense(..., activation=NAME) for every new activation: the activation runs in the GEMM's
    epilogue at -O2 (inference), and the outputs equal the float64 reference."""
    rng = np.random.default_rng(3)
    x = gc.input("x", ("N", 6))
    outs = [gc.dense(x, 5, act, name=f"d{i}") for i, (act, _) in enumerate(ACTS)]
    loss = gc.mean(gc.concat(outs, axis=1))
    m = gc.compile(outs, loss, gc.SGD(lr=0.1), name="acts")
    # activations whose VJP reads only their output fuse into the forward GEMM in training too
    from_output = {"elu", "selu", "softsign", "hard_sigmoid", "hard_tanh"}
    for entry in ("infer", "train_step"):
        graph = m.program.optimized[entry].graph
        for i, (act, _) in enumerate(ACTS):
            if entry == "train_step" and act not in from_output:
                continue
            mm = next(n for n in graph.nodes if n.op == "matmul" and n.inputs[1] == f"d{i}.w")
            tail = [n.op for n in graph.nodes if n.group is not None and n.group == mm.group]
            assert mm.group is not None and len(tail) >= 3, f"{entry} {act}: not fused ({tail})"
    xv = rng.standard_normal((7, 6)).astype(np.float32)
    pred = m.predict(xv)
    got = [pred[o.name] for o in outs]
    for i, (act, _) in enumerate(ACTS):
        w = m.params[f"d{i}.w"].astype(np.float64)
        b = m.params[f"d{i}.b"].astype(np.float64)
        z = xv.astype(np.float64) @ w + b
        op, attrs = ACTIVATION_ALIASES.get(act, (act, {}))
        want = OPS[op].evaluate(z, **attrs)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6, err_msg=act)


def test_onnx_export_of_every_case_matches_onnxruntime(forward_f32, tmp_path) -> None:
    """graphc.onnx_export's entries for these ops: ONNX Runtime computes the model's outputs."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m, _, us, got = forward_f32
    path = str(tmp_path / "ops.onnx")
    m.to_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: us[i.name].astype(np.float32) for i in sess.get_inputs()}  # where's mask
    outs = sess.run(None, feeds)
    for c, case in enumerate(CASES):
        np.testing.assert_allclose(outs[c], got[c], rtol=2e-6, atol=1e-6, err_msg=case.id)
