"""Compiled code against the float64 reference interpreter, and vectorized machine code."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.codegen.target import host_cpu
from graphc.ir.interpret import interpret


def _mlp(activation: str, loss_kind: str, optimizer):
    x = gc.input("x", ("N", 6))
    h = gc.dense(x, 5, activation, name="h")
    if loss_kind == "sce":
        labels = gc.input("labels", ("N",), dtype="i32")
        out = gc.dense(h, 3, name="o")
        loss = gc.softmax_cross_entropy(out, labels)
    elif loss_kind == "bce":
        labels = gc.input("labels", ("N", 1))
        out = gc.dense(h, 1, name="o")
        loss = gc.binary_cross_entropy(out, labels)
    else:
        labels = gc.input("labels", ("N", 1))
        out = gc.dense(h, 1, name="o")
        loss = gc.mean_squared_error(out, labels)
    return gc.compile(out, loss, optimizer, name="mlp", seed=3)


@pytest.mark.parametrize(
    "activation,loss_kind,opt",
    [
        ("relu", "sce", "adam"),
        ("tanh", "bce", "sgd"),
        ("sigmoid", "mse", "momentum"),
    ],
)
@pytest.mark.parametrize("n", [1, 7, 13])
def test_training_step_matches_interpreter(activation, loss_kind, opt, n) -> None:
    optimizer = {
        "adam": gc.Adam(lr=0.01),
        "sgd": gc.SGD(lr=0.1),
        "momentum": gc.SGD(lr=0.05, momentum=0.9, nesterov=True),
    }[opt]
    m = _mlp(activation, loss_kind, optimizer)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (
        rng.integers(0, 3, n).astype(np.int32)
        if loss_kind == "sce"
        else rng.integers(0, 2, (n, 1)).astype(np.float32)
    )
    g = m.program.training
    for step in range(3):
        feeds = {"x": x, "labels": y, "lr": np.float64(m.lr), **m.params, **m.state}
        ref = interpret(g, feeds)
        loss = m.train_step(x, y)
        np.testing.assert_allclose(
            loss, ref[m.program.loss], rtol=2e-5, atol=1e-6, err_msg=f"loss at step {step}"
        )
        for target, _ in g.updates:
            cur = m.params.get(target, m.state.get(target))
            np.testing.assert_allclose(
                cur, ref[target + "'"], rtol=1e-4, atol=1e-5, err_msg=f"{target} after step {step}"
            )


def test_inference_matches_interpreter_for_batch_sizes_off_the_vector_width() -> None:
    m = _mlp("tanh", "sce", gc.SGD(lr=0.1))
    rng = np.random.default_rng(0)
    for n in (1, 3, 8, 17, 64):
        x = rng.standard_normal((n, 6)).astype(np.float32) * 3
        ref = interpret(m.program.inference, {"x": x, **m.params})
        np.testing.assert_allclose(m.predict(x), ref[m.program.outputs[0]], rtol=1e-5, atol=1e-5)


def test_float32_loops_are_vectorized(monkeypatch) -> None:
    """The machine code of a compiled training step uses packed vector instructions."""
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")  # compile afresh, so the assembly can be printed
    m = _mlp("relu", "sce", gc.Adam())
    asm = m.jit.asm()
    features = host_cpu()[1].split(",")
    if "+avx2" in features or "+avx" in features:
        assert re.search(r"\bv\w+ps\s+%ymm", asm), "no 256-bit packed float instruction"
    else:
        assert re.search(r"\b(mul|add|max)ps\s", asm), "no packed float instruction"


def test_no_fast_math_flags_that_assume_finite_values() -> None:
    m = _mlp("sigmoid", "bce", gc.Adam())
    assert not re.search(r"\b(nnan|ninf|fast)\b", m.program.llvm_ir)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_signed_zero_constants_stay_apart(opt_level) -> None:
    """+0.0 and -0.0 are different constants (CSE, kernel reuse and the simplifier's x + 0 key
    them by bits): 1/(x * 0.0), 1/(x * -0.0), 1/(x + 0.0), ... against float64 numpy."""
    x = gc.input("x", ("N", 3))
    fns = [
        lambda v, z: 1 / (v * z),
        lambda v, z: 1 / (v + z),
        lambda v, z: 1 / (v - z),
        lambda v, z: 1 / (z - v),
    ]
    outs = [f(x, gc.const(z)) for f in fns for z in (0.0, -0.0)]
    m = gc.compile(outs, opt_level=opt_level, name=f"zeros{opt_level}")
    xs = np.array([[1.0, -0.0, 0.0], [-2.0, 0.0, -0.0]], np.float32)
    got = list(m.predict({"x": xs}).values())
    with np.errstate(divide="ignore", invalid="ignore"):
        want = [f(xs.astype(np.float64), np.float64(z)) for f in fns for z in (0.0, -0.0)]
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
        assert np.array_equal(np.signbit(g), np.signbit(w)), f"output {i}"


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_batch_dimension_in_every_position(opt_level) -> None:
    """N as a GEMM's column count (and its epilogue operands' row stride), as its reduction
    length, as the row length of a softmax and a reduction, and size-1 axes before others:
    compiled outputs against float64 numpy for a batch that is no multiple of a vector."""
    x = gc.input("x", ("N", 4))
    x2 = gc.input("x2", ("N", 3))
    x3 = gc.input("x3", ("N", 1, 3))
    w = gc.param("w", (3, 4))
    c = gc.param("c", (3, 1))
    mm = gc.matmul(w, x, transpose_b=True)  # [3, N]
    outs = [
        gc.tanh(mm) * gc.transpose(x2),  # epilogue operand [3, N]: row stride N
        gc.relu(mm + c),  # a [3, 1] column operand
        gc.matmul(x, x, transpose_a=True),  # K = N
        gc.sum(mm, axes=1),
        gc.softmax(gc.transpose(x2)),  # rows of length N
        gc.sum(x3, axes=2),  # a size-1 axis before the reduced one
        gc.mean(x3, axes=(0, 1)),
        gc.sum(gc.reshape(x2, ("N", 3, 1)), axes=1),
    ]
    m = gc.compile(outs, opt_level=opt_level, name=f"npos{opt_level}")
    rng = np.random.default_rng(3)
    n = 37
    feeds = {
        "x": rng.standard_normal((n, 4)).astype(np.float32),
        "x2": rng.standard_normal((n, 3)).astype(np.float32),
        "x3": rng.standard_normal((n, 1, 3)).astype(np.float32),
    }
    got = list(m._run("infer", feeds, n))
    X, X2, X3 = (feeds[k].astype(np.float64) for k in ("x", "x2", "x3"))
    W, C = m.params["w"].astype(np.float64), m.params["c"].astype(np.float64)
    MM = W @ X.T
    e = np.exp(X2.T - X2.T.max(axis=1, keepdims=True))
    want = [
        np.tanh(MM) * X2.T,
        np.maximum(MM + C, 0.0),
        X.T @ X,
        MM.sum(axis=1),
        e / e.sum(axis=1, keepdims=True),
        X3.sum(axis=2),
        X3.mean(axis=(0, 1)),
        X2.reshape(n, 3, 1).sum(axis=1),
    ]
    for i, (g, w_) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w_, rtol=2e-5, atol=2e-5, err_msg=f"output {i}")


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_l2_penalty_on_weights(opt_level) -> None:
    """loss = mse + c * sum(w * w) on a dense weight and sum(square(v)) on a (1, 5) param (a
    size-1 leading axis): the gradient 2 c w joins the GEMM's; checked by one SGD step against
    float64 numpy (was KeyError in the GEMM planner at -O2, AttributeError in emit_reduce)."""
    x, y = gc.input("x", ("N", 5)), gc.input("y", ("N", 2))
    w, v = gc.param("w", (5, 2)), gc.param("v", (1, 5))
    out = gc.matmul(x, w) + gc.matmul(x, v, transpose_b=True)
    loss = gc.mean_squared_error(out, y) + 0.01 * gc.sum(w * w) + 0.1 * gc.sum(gc.square(v))
    m = gc.compile(out, loss=loss, optimizer=gc.SGD(lr=1.0), opt_level=opt_level, name="l2")
    rng = np.random.default_rng(4)
    xs, ys = rng.standard_normal((9, 5)).astype("f4"), rng.standard_normal((9, 2)).astype("f4")
    W, V = m.params["w"].astype(np.float64), m.params["v"].astype(np.float64)
    X, Y = xs.astype(np.float64), ys.astype(np.float64)
    r = X @ W + X @ V.T - Y
    dr = 2 * r / r.size
    want_loss = (r**2).mean() + 0.01 * (W**2).sum() + 0.1 * (V**2).sum()
    loss_got = m.train_step({"x": xs}, ys)
    np.testing.assert_allclose(loss_got, want_loss, rtol=1e-5)
    np.testing.assert_allclose(m.params["w"], W - (X.T @ dr + 0.02 * W), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        m.params["v"], V - (dr.sum(axis=1) @ X + 0.2 * V), rtol=1e-5, atol=1e-6
    )
