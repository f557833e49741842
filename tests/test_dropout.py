"""Dropout: the compiled mask is bit-identical to the reference's SplitMix64 mask, the backward
pass reuses it, the statistics are right, and evaluation/prediction/inference are the identity."""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import GraphcError, ShapeError
from graphc.ir.interpret import interpret
from graphc.ir.ops import OPS
from graphc.ir.ops.random import keep_mask, mix64

ROWS, COLS = 20, 40


def test_mix64_matches_splitmix64_reference_values() -> None:
    # The first outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c: state += GAMMA; mix)
    gamma = 0x9E3779B97F4A7C15
    want = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    got = [int(mix64(np.uint64((k * gamma) % 2**64))) for k in (1, 2, 3)]
    assert got == want


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_and_mean_within_bounds(p: float) -> None:
    n = 200_000
    keep = keep_mask((n,), p, seed=3, stream=11, step=5)
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 5 * sigma
    y = OPS["dropout"].reference(np.ones(n), np.array(5.0), p=p, seed=3, stream=11)
    assert abs(y.mean() - 1.0) < 5 * sigma / (1 - p)  # inverted dropout keeps the mean
    assert set(np.unique(y)) <= {0.0, 1.0 / (1 - p)}


def test_masks_differ_between_steps_streams_and_seeds() -> None:
    p, shape = 0.5, (100_000,)
    base = keep_mask(shape, p, 0, 1, 0)
    for other in (
        keep_mask(shape, p, 0, 1, 1),
        keep_mask(shape, p, 0, 2, 0),
        keep_mask(shape, p, 1, 1, 0),
    ):
        agree = np.mean(base == other)
        assert abs(agree - 0.5) < 0.01  # independent masks agree on p^2 + (1-p)^2 of elements
    assert np.array_equal(base, keep_mask(shape, p, 0, 1, 0))  # a pure function


def _mask_model(p: float):
    x = gc.input("x", ("N", COLS), dtype="f64")
    w = gc.param("w", (COLS,), init="ones", dtype="f64")
    d = gc.dropout(x * w, p, seed=5)
    model = gc.compile(d, loss=gc.sum(d), optimizer=gc.SGD(lr=1.0), name="mask")
    node = next(n for n in model.program.training.nodes if n.op == "dropout")
    return model, node


@pytest.mark.parametrize("p", [0.5, 0.75])
def test_compiled_mask_is_bit_identical_to_the_reference(p: float) -> None:
    # x[n, j] = 2^n, so dloss/dw[j] = scale * sum_n 2^n mask[n, j]: the mask, bit by bit.
    model, node = _mask_model(p)
    x = np.repeat(2.0 ** np.arange(ROWS)[:, None], COLS, axis=1)
    scale = 1.0 / (1.0 - p)
    for step in range(3):
        model.set_weights({"w": np.ones(COLS)})
        model.train_step(x, None)
        code = np.rint((1.0 - model.params["w"]) / scale).astype(np.int64)
        got = ((code[None, :] >> np.arange(ROWS)[:, None]) & 1).astype(bool)
        want = keep_mask((ROWS, COLS), p, node.attr("seed"), node.attr("stream"), step)
        assert np.array_equal(got, want), f"step {step}: {np.sum(got != want)} mask bits differ"
        assert 0.1 < got.mean() < 0.9


@pytest.fixture(scope="module")
def mlp():
    """dense -> relu -> dropout -> dense (f32), compiled once for the tests below."""
    x = gc.input("x", ("N", 16))
    y = gc.input("y", ("N", 1))
    h = gc.dropout(gc.dense(x, 24, "relu", name="a"), 0.4, seed=1)
    out = gc.dense(h, 1, name="b")
    return gc.compile(out, loss=gc.mean_squared_error(out, y), optimizer=gc.SGD(0.05), name="dx")


XS = np.random.default_rng(0).normal(size=(13, 16))
YS = np.random.default_rng(1).normal(size=(13, 1))


def test_training_step_with_fused_dropout_matches_interpreter(mlp) -> None:
    """The dropout and its VJP may be fused into GEMM epilogues or elementwise loops; compiled
    steps must equal the float64 interpreter's (same masks: a different mask would change the
    updates by O(lr), not by float32 rounding)."""
    mlp.initialize(0)
    mlp.state["step"][...] = 0
    g = mlp.program.training
    assert any(n.op == "dropout" and n.section == "backward" for n in g.nodes)
    for step in range(3):
        before = mlp.get_weights()
        loss = mlp.train_step(XS, YS)
        env = interpret(
            g, {"x": XS, "y": YS, "lr": np.array(0.05), "step": np.array(float(step)), **before}
        )
        assert np.isclose(loss, env[g.outputs[0]], rtol=1e-5)
        for k in before:
            np.testing.assert_allclose(mlp.params[k], env[k + "'"], rtol=1e-5, atol=1e-6)


def test_evaluation_and_prediction_are_the_identity(mlp) -> None:
    prog = mlp.program
    assert not any(n.op == "dropout" for n in prog.inference.nodes + prog.forward.nodes)
    w = mlp.get_weights()
    want = np.maximum(XS @ w["a.w"] + w["a.b"], 0) @ w["b.w"] + w["b.b"]  # no mask, no scaling
    np.testing.assert_allclose(mlp.predict(XS), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(mlp.predict(XS), mlp.predict(XS))  # deterministic
    assert np.isclose(mlp.evaluate(XS, YS)["loss"], np.mean((want - YS) ** 2), rtol=1e-4)


def test_dropout_rejects_bad_rates() -> None:
    x = gc.input("x", ("N", 4))
    with pytest.raises(GraphcError, match="p must be"):
        gc.dropout(x, 1.0)
    with pytest.raises(GraphcError, match="p must be"):
        gc.dropout(x, -0.1)
    assert gc.dropout(x, 0.0) is x
    with pytest.raises(ShapeError, match="scalar"):
        OPS["dropout"].infer([x.type, x.type], {"p": 0.5})


def test_vjp_matches_finite_differences_of_the_reference() -> None:
    """For a fixed step the op is linear in x: d/dx sum(u * dropout(x)) = u * keep / (1 - p)."""
    from conftest import numeric_grad

    from graphc.dsl import collect_graph
    from graphc.ir.autodiff import gradients

    x = gc.input("x", (3, 5), dtype="f64")
    u = gc.input("u", (3, 5), dtype="f64")
    loss = gc.sum(gc.dropout(x, 0.4, seed=9) * u)
    g = collect_graph("vjp", [loss])
    g2, grads = gradients(g, loss.name, ["x"])
    attrs = dict(next(n for n in g.nodes if n.op == "dropout").attrs)
    rng = np.random.default_rng(0)
    xs, us = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    for step in (0.0, 4.0):
        got = interpret(g2, {"x": xs, "u": us, "step": np.array(step)})[grads["x"]]

        def f(a: np.ndarray, step: float = step) -> float:
            return float(np.sum(us * OPS["dropout"].reference(a, np.array(step), **attrs)))

        np.testing.assert_allclose(got, numeric_grad(f, [xs], 0), rtol=1e-6, atol=1e-8)
        assert 0 < np.count_nonzero(got) < got.size  # some elements dropped, some kept


def test_exported_training_library_draws_the_same_masks(mlp, tmp_path) -> None:
    """The .so's train_step and the JIT's give bit-identical losses and parameters."""
    import shutil

    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        pytest.skip("no C compiler: the library cannot be linked")
    path = str(tmp_path / "libdx.so")
    mlp.export(path)
    lib = gc.load(path)
    np.testing.assert_array_equal(lib.predict(XS), mlp.predict(XS))
    lib.state["step"][...] = mlp.state["step"]
    for _ in range(3):
        assert mlp.train_step(XS, YS) == lib.train_step(XS, YS, lr=0.05)
    for k, v in mlp.params.items():
        np.testing.assert_array_equal(lib.params[k], v)


def test_dropout_layer_in_sequential_builds_one_stream_per_layer() -> None:
    from graphc.compiler import build_graphs

    x = gc.input("x", ("N", 6))
    y = gc.input("y", ("N", 1))
    net = gc.Sequential(
        [gc.Dense(8, "relu"), gc.Dropout(0.3), gc.Dense(8, "relu"), gc.Dropout(0.3), gc.Dense(1)],
        name="sq",
    )
    out = net(x)
    prog = build_graphs("sq", [out], gc.mean_squared_error(out, y), gc.SGD())
    fwd = [n for n in prog.training.nodes if n.op == "dropout" and n.section == "forward"]
    assert len(fwd) == 2 and fwd[0].attr("stream") != fwd[1].attr("stream")
    assert {n.attr("p") for n in fwd} == {0.3}
    assert [n.name for n in prog.training.states] == [
        "step"
    ]  # one counter, shared with the optimizer


def _seq_dropout_model() -> gc.Model:
    net = gc.Sequential(
        [gc.Dense(8, "relu"), gc.Dropout(0.4), gc.Dense(8, "tanh"), gc.Dropout(0.2), gc.Dense(1)],
        name="twice",
    )
    return gc.compile_sequential(net, (6,), "mean_squared_error", gc.SGD(lr=0.05), seed=1)


def test_same_sequential_built_twice_draws_the_same_masks_and_shares_checkpoints(
    tmp_path,
) -> None:
    # #13 item 3: streams come from the graph's structure, not from a process-wide counter
    # (building something else in between moves that counter).
    m1 = _seq_dropout_model()
    gc.dense(gc.input("other", ("N", 3)), 2)  # consumes automatic names
    m2 = _seq_dropout_model()
    s1 = [n.attr("stream") for n in m1.program.training.nodes if n.op == "dropout"]
    s2 = [n.attr("stream") for n in m2.program.training.nodes if n.op == "dropout"]
    assert s1 == s2 and len(set(s1[:2])) == 2
    path = tmp_path / "m1.npz"
    m1.save(str(path))
    m2.load(str(path))  # the same network: the checkpoint fits
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    for _ in range(3):
        assert m1.train_step(x, y) == m2.train_step(x, y)
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k])


def test_two_dropouts_of_one_value_get_different_streams() -> None:
    import zlib

    from graphc.dsl import collect_graph

    x = gc.input("x", ("N", 4))
    out = gc.dropout(x, 0.5) + gc.dropout(x, 0.5) + gc.dropout(x, 0.5, name="mine")
    g = collect_graph("two", [out])
    streams = [n.attr("stream") for n in g.nodes if n.op == "dropout"]
    assert len(set(streams)) == 3 and zlib.crc32(b"mine") in streams


def test_step_counter_is_an_integer_past_2_24(mlp) -> None:
    """The step counter is i64: at 2^24 + 1 (where a float32 counter stalls, 2^24 + 1 rounding
    to 2^24) the step draws that step's own mask, checked against the interpreter, whose mask
    at 2^24 differs; the counter then reads 2^24 + 2 exactly."""
    assert mlp.state["step"].dtype == np.int64
    mlp.initialize(0)
    g = mlp.program.training
    big = 2**24 + 1
    mlp.state["step"][...] = big
    before = mlp.get_weights()
    mlp.train_step(XS, YS)
    assert int(mlp.state["step"]) == big + 1
    feeds = {"x": XS, "y": YS, "lr": np.array(0.05), **before}
    env = interpret(g, {**feeds, "step": np.array(big, np.int64)})
    stalled = interpret(g, {**feeds, "step": np.array(big - 1, np.int64)})
    for k in before:
        np.testing.assert_allclose(mlp.params[k], env[k + "'"], rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(env[k + "'"], stalled[k + "'"]) for k in before)
