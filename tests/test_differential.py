"""Differential tests of the optimization levels: -O0 (no fusion, no buffer reuse) and -O2
(simplify, dense and elementwise fusion, in-place reuse) compiled with graphc.compile must give
the same losses, predictions and parameter updates, and both must match the float64 reference
interpreter run over the training graph (forward + backward + optimizer update).

Networks: those of examples/models.py, and random graphs over the elementwise, matmul and
reduction ops. Tolerances are float32's: the interpreter computes in float64.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

import graphc as gc
from graphc.ir.interpret import interpret

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples" / "models.py"
STEPS = 2
RTOL, ATOL = 2e-4, 2e-5


def load_examples():
    spec = importlib.util.spec_from_file_location("graphc_example_models", EXAMPLES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def example_data(name: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        return (
            rng.uniform(0, 1, (n, 64)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32),
        )
    if name == "breast_cancer":
        return (
            rng.standard_normal((n, 30)).astype(np.float32),
            rng.integers(0, 2, (n, 1)).astype(np.float32),
        )
    return (
        rng.standard_normal((n, 10)).astype(np.float32),
        rng.standard_normal((n, 1)).astype(np.float32),
    )


def reference_step(model, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """One training step of the interpreter from the model's current params and state."""
    prog = model.program
    feeds = {prog.feature_inputs[0]: x, prog.label_inputs[0]: y, "lr": np.float64(model.lr)}
    feeds.update(model.params)
    feeds.update(model.state)
    env = interpret(prog.training, feeds)
    new = {t: env[t + "'"] for t, _ in prog.training.updates if t in model.params}
    return float(env[prog.loss]), new


def train_and_check(model, batches) -> list[tuple[float, dict[str, np.ndarray], np.ndarray]]:
    """Train on ``batches``; check every step against the interpreter; return what was seen."""
    seen = []
    for x, y in batches:
        ref_loss, ref_params = reference_step(model, x, y)
        loss = model.train_step(x, y)
        np.testing.assert_allclose(loss, ref_loss, rtol=RTOL, atol=ATOL, err_msg="loss")
        for p, ref in ref_params.items():
            np.testing.assert_allclose(model.params[p], ref, rtol=RTOL, atol=ATOL, err_msg=p)
        pred = np.asarray(model.predict(x))
        ref_pred = interpret(
            model.program.inference, {model.program.feature_inputs[0]: x, **model.params}
        )
        np.testing.assert_allclose(
            pred, ref_pred[model.program.outputs[0]], rtol=RTOL, atol=ATOL * 10, err_msg="predict"
        )
        seen.append((loss, model.get_weights(), pred))
    return seen


def assert_same_runs(a, b) -> None:
    for step, ((la, wa, pa), (lb, wb, pb)) in enumerate(zip(a, b)):
        np.testing.assert_allclose(lb, la, rtol=1e-5, atol=1e-6, err_msg=f"step {step} loss")
        for p in wa:
            np.testing.assert_allclose(
                wb[p], wa[p], rtol=1e-5, atol=1e-6, err_msg=f"step {step} {p}"
            )
        np.testing.assert_allclose(pb, pa, rtol=1e-5, atol=1e-5, err_msg=f"step {step} predict")


# -O0 compiles are the slow part (one kernel per node); diabetes (relu + Adam, like digits) is
# checked at -O2 against the interpreter only, which -O0 is also checked against.
@pytest.mark.parametrize(
    "example,levels",
    [
        pytest.param("digits", (0, 2), id="digits"),
        pytest.param("breast_cancer", (0, 2), id="breast_cancer"),
        pytest.param("diabetes", (2,), id="diabetes-O2"),
    ],
)
def test_example_networks_agree_at_O0_and_O2(example: str, levels: tuple[int, ...]) -> None:
    spec = getattr(load_examples(), example)()
    rng = np.random.default_rng(11)
    batches = [example_data(example, rng, n) for n in (32, 7)][:STEPS]
    runs = {}
    for level in levels:
        model = gc.compile(
            spec["outputs"],
            spec["loss"],
            spec["optimizer"],
            name=spec["name"],
            opt_level=level,
            seed=5,
        )
        runs[level] = train_and_check(model, batches)
        if level == 2:
            kernels = model.program.schedules["train_step"].kernels
            assert any(k.kind == "matmul" and len(k.nodes) > 1 for k in kernels)
    if 0 in runs:
        assert_same_runs(runs[0], runs[2])


# ---------------------------------------------------------------------------- random graphs

UNARY = ("tanh", "sigmoid", "relu", "neg", "softplus", "square", "exp_bounded")


def random_network(seed: int):
    """A random net over elementwise ops, dense layers, matmul, reductions and dropout, MSE loss.

    Values stay bounded (exp only of tanh), so float32 and float64 agree to ~1e-6.
    """
    rng = np.random.default_rng(seed)
    d = int(rng.integers(3, 7))
    x = gc.input("x", ("N", d))
    vals = [x]
    for i in range(8):
        v = vals[int(rng.integers(len(vals)))]
        w = v.shape[1]
        kind = rng.choice(["dense", "unary", "param_op", "pair", "center", "matmul_t", "dropout"])
        if kind == "dense":
            act = [None, "relu", "sigmoid", "tanh"][int(rng.integers(4))]
            out = gc.dense(v, int(rng.integers(2, 6)), act, name=f"d{i}")
        elif kind == "unary":
            op = UNARY[int(rng.integers(len(UNARY)))]
            out = gc.exp(gc.tanh(v)) if op == "exp_bounded" else getattr(gc, op)(v)
        elif kind == "param_op":
            p = gc.param(f"p{i}", (w,), init="uniform")
            op = rng.choice(["add", "mul", "sub"])
            out = getattr(gc, str(op))(v, p)
        elif kind == "pair":
            same = [u for u in vals if u.shape == v.shape]
            u = same[int(rng.integers(len(same)))]
            out = [gc.add, gc.mul, gc.sub, gc.maximum][int(rng.integers(4))](v, u)
        elif kind == "center":
            out = v - gc.mean(v, axes=1, keepdims=True) * gc.sum(
                gc.sigmoid(v), axes=0, keepdims=True
            )
        elif kind == "dropout":
            out = gc.dropout(v, 0.25, seed=seed)
        else:
            out = gc.matmul(v, gc.param(f"m{i}", (3, w), init="glorot_uniform"), transpose_b=True)
        vals.append(out)
    out = gc.dense(vals[-1], 2, name="head")  # some param always reaches the loss
    y = gc.input("y", out.shape)
    return out, gc.mean_squared_error(out, y), d


@pytest.mark.parametrize("seed", [11])  # has dropout (index-dependent masks) and tanh
def test_random_graphs_agree_at_O0_and_O2(seed: int) -> None:
    runs = {}
    out, loss, d = random_network(seed)
    for level in (0, 2):
        model = gc.compile(
            out, loss, gc.Adam(lr=1e-2), name=f"rand{seed}", opt_level=level, seed=seed
        )
        k = out.shape[1]
        data = np.random.default_rng(100 + seed)
        batches = [
            (
                data.standard_normal((n, d)).astype(np.float32),
                data.standard_normal((n, k)).astype(np.float32),
            )
            for n in (9, 4)
        ][:STEPS]
        runs[level] = train_and_check(model, batches)
    assert_same_runs(runs[0], runs[2])
