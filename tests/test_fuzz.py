"""Differential tests: random graphs compiled at -O0 and -O2 against the float64 interpreter.

The generator and the checks live in graphc.fuzz (``python -m graphc.fuzz --count N --seed S``
runs the long version outside CI). Here hypothesis draws a few seeds per run; the bugs the
fuzzer found are pinned down below as ordinary tests.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc import fuzz
from graphc.ir.interpret import interpret

FUZZ_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=2, **FUZZ_SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), opt_level=st.sampled_from([0, 2]))
def test_random_graph_compiled_matches_interpreter(seed: int, opt_level: int) -> None:
    """Through gc.compile, the user's path (the cache, the train_epoch entry, O3)."""
    case = fuzz.random_case(seed)
    failures = fuzz.check_compiled(case, opt_level)
    assert not failures, case.describe() + "\n" + "\n".join(failures)


@settings(max_examples=2, **FUZZ_SETTINGS)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_graphs_in_one_module_match_interpreter(seed: int) -> None:
    """The fuzzer's fast path: three graphs at -O0, -O1 and -O2 in one LLVM module."""
    res = fuzz.run_batch([seed, seed + 1, seed + 2], (0, 1, 2), grads=False)
    failures = [f for fs in res.values() for f in fs]
    assert not failures, "\n".join(failures)


def test_generator_makes_the_classes_that_found_bugs() -> None:
    """Over 200 seeds: outputs reducing over the batch, N as a column dimension, size-1 axes,
    signed-zero constants, graphs whose only param is a bias, L2 penalties, more rows than
    one predict block (issue 13 items 1, 9-12), and constant outputs."""
    seen: set[str] = set()
    large = 0
    for seed in range(200):
        case = fuzz.random_case(seed)
        seen.update(op.split("(")[0].split(".")[0] for op in case.ops)
        seen.update(op for op in case.ops if op.startswith("const("))
        large += case.n > 1024
    want = {"output-over-batch", "columns", "size1", "signed-zeros", "bias-only", "l2"}
    want.add("constant-output")  # a scalar constant as an output: CodegenError before e14e141
    assert want <= seen, f"never generated: {sorted(want - seen)}"
    assert {"const(0.0)", "const(-0.0)"} <= seen
    assert large >= 2


@settings(max_examples=15, **FUZZ_SETTINGS)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_graph_gradients_match_finite_differences(seed: int) -> None:
    case = fuzz.random_case(seed)
    failures = fuzz.check_gradients(case)
    assert not failures, case.describe() + "\n" + "\n".join(failures)


def test_generator_covers_every_dsl_op() -> None:
    """Over 150 seeds the generator uses every op the DSL exposes (and every loss)."""
    seen: set[str] = set()
    for seed in range(150):
        case = fuzz.random_case(seed)
        for t in case.outputs + [case.loss]:
            stack = [t]
            while stack:
                x = stack.pop()
                seen.add(x.node.op)
                if x.node.op == "matmul":
                    seen.add("matmul" + "".join(k for k, v in x.node.attrs if v))
                stack.extend(x.parents)
    want = set(fuzz.UNARY_OPS) | {  # every unary pointwise op of the registry, and:
        "add",
        "sub",
        "mul",
        "div",
        "maximum",
        "matmul",
        "matmultranspose_a",
        "matmultranspose_b",
        "sum",
        "mean",
        "reshape",
        "transpose",
        "softmax",
        "softmax_cross_entropy",
        "const",
        "dropout",
        "sigmoid_cross_entropy",
        # issue #14
        "minimum",
        "where",
        "max",
        "min",
        "log_softmax",
        "slice",
        "pad",
        "concat",
        "clip",
        "pow",
    }
    assert want <= seen, f"never generated: {sorted(want - seen)}"


def test_fuzz_command_reports_seed_count_and_failures(capsys) -> None:
    rc = fuzz.main(["--count", "1", "--seed", "3", "--opt-levels", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "seeds 3..3: 1 random graph at -O0, 0 failed" in out


# ---------------------------------------------------------------- regressions found by fuzzing


def _sgd_step_matches_interpreter(model, feeds: dict[str, np.ndarray]) -> None:
    before = {k: v.astype(np.float64) for k, v in model.params.items()}
    ref = interpret(
        model.program.training, {**feeds, **before, "step": np.array(0.0), "lr": np.array(1.0)}
    )
    model.lr = 1.0
    model.train_step(
        {k: feeds[k] for k in model.program.feature_inputs},
        {k: feeds[k] for k in model.program.label_inputs},
    )
    for p, v in model.params.items():
        np.testing.assert_allclose(v, ref[p + "'"], rtol=1e-4, atol=1e-5, err_msg=p)


def test_gemm_epilogue_update_is_not_written_in_place() -> None:
    """Seed 1 of graphc.fuzz: fuse_dense put the SGD update p - lr * (x^T dz) into the GEMM's
    epilogue, and the scheduler wrote it in place over p, but the GEMM accumulates into its
    output before the epilogue reads p: every weight became 0 (with lr = 1) at -O2."""
    x = gc.input("x", ("N", 17))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(x, 9, name="d")
    model = gc.compile(
        logits, loss=gc.softmax_cross_entropy(logits, labels), optimizer=gc.SGD(lr=1.0), opt_level=2
    )
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((13, 17)).astype(np.float32),
        "labels": rng.integers(0, 9, 13).astype(np.int32),
    }
    _sgd_step_matches_interpreter(model, feeds)


def test_mean_loss_reshapes_a_constant_seed(opt_level: int = 0) -> None:
    """The VJP of mean() reshapes the constant seed dy = 1 (an inline value, no buffer): at -O0
    codegen raised "kernel has no buffer for value %4" for every MSE/BCE loss."""
    x = gc.input("x", ("N", 5))
    w = gc.param("w", (5, 3))
    out = gc.tanh(x @ w)
    model = gc.compile(
        out, loss=gc.mean(gc.square(out)), optimizer=gc.SGD(lr=1.0), opt_level=opt_level
    )
    feeds = {"x": np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)}
    _sgd_step_matches_interpreter(model, feeds)
