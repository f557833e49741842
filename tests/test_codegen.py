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
