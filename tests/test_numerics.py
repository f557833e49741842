"""Numerics: stable activations and losses at extreme logits, long float32 sums, no fast-math.

References: float64 numpy (graphc.ir.interpret, whose sigmoid/softplus/log-softmax use the
stable forms exp(-|x|), max(x,0) + log1p(exp(-|x|)), x - max - log(sum(exp(x - max)))).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.ir.interpret import interpret

# logits with +-1e4, ties at 1e4, the float32 exp overflow edge (88.7), and ordinary values
Z = np.array(
    [
        [1e4, -1e4, 0.0, 20.0],
        [-1e4, 1e4, -88.0, 88.0],
        [100.0, -100.0, 1e4, 1e4],
        [-1e4, -1e4, -1e4, -1e4],
        [0.5, -0.5, 30.0, -30.0],
        [1e4, 1e4, -1e4, 89.0],
    ],
    dtype=np.float32,
)
T = np.array(
    [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]],
    dtype=np.float32,
)  # exact 0/1 targets, including the worst cases (t=1 at z=-1e4)
LABELS = np.array([1, 0, 2, 3, 3, 2], dtype=np.int32)  # label at -1e4: loss 2e4, finite


@pytest.fixture(scope="module")
def model():
    z = gc.input("z", ("N", 4))
    t = gc.input("t", ("N", 4))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = z + gc.param("b", (4,), init="zeros")
    loss = gc.binary_cross_entropy(logits, t) + gc.softmax_cross_entropy(logits, labels)
    m = gc.compile(
        [gc.sigmoid(logits), gc.softplus(logits), gc.softmax(logits)],
        loss=loss,
        optimizer=gc.SGD(lr=1.0),
        name="numerics",
    )
    m.lr = 1.0
    return m


def _reference(m) -> dict[str, np.ndarray]:
    feeds = {
        "z": Z,
        "t": T,
        "labels": LABELS,
        "b": np.zeros(4),
        "step": np.array(0.0),
        "lr": np.array(1.0),
    }
    return interpret(m.program.training, feeds)


def test_activations_are_finite_and_correct_at_extreme_logits(model) -> None:
    ref = _reference(model)
    outs = model.predict({"z": Z})
    for name, got in zip(model.program.outputs, outs.values()):
        assert np.all(np.isfinite(got)), f"{model.program.forward[name].op}: non-finite values"
        np.testing.assert_allclose(
            got, ref[name], rtol=1e-5, atol=1e-6, err_msg=model.program.forward[name].op
        )
    sig, sp, sm = outs.values()
    assert sig[0, 0] == 1.0 and sig[0, 1] == 0.0 and sp[0, 0] == 1e4 and sp[0, 1] == 0.0
    np.testing.assert_allclose(sm.sum(axis=1), 1.0, rtol=1e-6)


def test_losses_and_gradients_are_finite_at_extreme_logits(model) -> None:
    ref = _reference(model)
    before = model.params["b"].copy()
    before[...] = 0.0
    model.params["b"][...] = 0.0
    figures = model.evaluate({"z": Z}, {"t": T, "labels": LABELS})
    assert np.isfinite(figures["loss"])
    np.testing.assert_allclose(figures["loss"], ref[model.program.loss], rtol=1e-5)
    loss = model.train_step({"z": Z}, {"t": T, "labels": LABELS})  # b' = b - grad (lr = 1)
    np.testing.assert_allclose(loss, ref[model.program.loss], rtol=1e-5)
    grad = before - model.params["b"]
    assert np.all(np.isfinite(grad))
    # the documented closed form: d/dz BCE = (sigmoid(z) - t) / (N*C); d/dz SCE = (p - onehot) / N
    z = Z.astype(np.float64)
    sig = np.where(
        z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z)))
    )
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(4)[LABELS]
    want = ((sig - T) / T.size + (p - onehot) / len(Z)).sum(axis=0)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.params["b"], ref["b'"], rtol=1e-5, atol=1e-7)


def test_float32_mean_over_100k_rows_is_within_one_rounding_of_float64() -> None:
    """Stated bound: |mean32 - mean64| <= 2^-23 |mean64| (two float32 roundings), where plain
    sequential float32 accumulation errs by ~1e-5 relative on this data (n * 2^-24 worst case).
    Cases: a mean over everything, over the batch axis, and over batch + inner axis."""
    n = 100_000
    cases = {"a": ((1,), None), "b": ((64,), 0), "c": ((2, 3), (0, 2))}
    xs = {k: gc.input(k, ("N", *shape)) for k, (shape, _) in cases.items()}
    outs = [f(xs[k], axes=axes) for k, (_, axes) in cases.items() for f in (gc.mean, gc.sum)]
    m = gc.compile(outs, name="longsum")
    rng = np.random.default_rng(0)
    data = {
        k: ((1.0 + 0.1 * rng.standard_normal((n, *shape))) * 3.3).astype(np.float32)
        for k, (shape, _) in cases.items()
    }
    got = m._run("infer", data, n)
    for j, (k, (_, axes)) in enumerate(cases.items()):
        for g, how in zip(got[2 * j : 2 * j + 2], ("mean", "sum")):
            ref = getattr(data[k].astype(np.float64), how)(axis=axes)
            err = np.abs(np.asarray(g, np.float64) - ref)
            assert np.all(err <= 2.0**-23 * np.abs(ref)), (k, how, float(np.max(err / np.abs(ref))))


@pytest.mark.parametrize("rows", [1, 3, 513])
def test_column_sums_are_sequential_float64_sums_rounded_once(rows: int) -> None:
    """Sums and means over the batch axis of [N, C] (bias gradients; C = 1 to 261: only
    columns left over from the register blocks of 32 (in groups of 8), whole blocks, both)
    equal the float64 sum taken row after row, rounded once to float32, to the bit (the mean:
    times 1/N in float64, then rounded)."""
    widths = (1, 10, 17, 32, 45, 70, 261)
    xs = [gc.input(f"x{c}", ("N", c)) for c in widths]
    outs = [f(x, axes=0, keepdims=k) for x in xs for f, k in ((gc.sum, False), (gc.mean, True))]
    m = gc.compile(outs, name=f"colsum{rows}")
    rng = np.random.default_rng(rows)
    data = {f"x{c}": (rng.standard_normal((rows, c)) * 10.0).astype(np.float32) for c in widths}
    got = m._run("infer", data, rows)
    for j, c in enumerate(widths):
        seq = np.cumsum(data[f"x{c}"].astype(np.float64), axis=0)[-1]  # row after row
        np.testing.assert_array_equal(np.asarray(got[2 * j]), seq.astype(np.float32))
        mean = (seq * (1.0 / rows)).astype(np.float32)[None, :]
        np.testing.assert_array_equal(np.asarray(got[2 * j + 1]), mean)


def _llvm_ir(program, optimized: bool = False) -> str:
    """The LLVM IR of a compiled model's program, rebuilt (a compile-cache hit keeps none)."""
    from graphc.codegen.target import optimize, target_machine
    from graphc.compiler import build_module

    mb = build_module(program)
    return str(optimize(mb.module, target_machine(), program.name)) if optimized else str(mb.module)


def test_no_fast_math_flags_that_assume_finite_values(model) -> None:
    ir_text = _llvm_ir(model.program) + _llvm_ir(model.program, optimized=True)
    assert "fadd" in ir_text
    for flag in (
        " nnan ",
        " ninf ",
        " fast ",
        '"no-nans-fp-math"="true"',
        '"no-infs-fp-math"="true"',
        '"unsafe-fp-math"="true"',
    ):
        assert flag not in ir_text, f"LLVM IR uses {flag.strip()}"


def test_nan_propagates_through_compiled_code(model) -> None:
    """Without fast-math a NaN input stays NaN (so NaN checks mean something)."""
    z = Z.copy()
    z[1, 2] = np.nan
    outs = model.predict({"z": z})
    for got in outs.values():
        assert np.isnan(got[1]).any()
        assert np.all(np.isfinite(np.delete(got, 1, axis=0)))


# ---------------------------------------------------------------- check_numerics


def _checked_model(opt=None, check: bool = True):
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ("N", 1))
    root = gc.sqrt(x * gc.param("s", (3,), init="ones"))  # NaN at x < 0; d/ds NaN at 0
    out = gc.dense(root, 1, name="o")
    return gc.compile(
        out,
        loss=gc.mean_squared_error(out, t),
        optimizer=opt or gc.SGD(0.1),
        check_numerics=check,
        name="checked",
    )


@pytest.fixture(scope="module")
def checked():
    return _checked_model()


def test_check_numerics_names_forward_node_op_line_and_step(checked) -> None:
    x = np.ones((4, 3), np.float32)
    t = np.ones((4, 1), np.float32)
    checked.initialize(0)
    checked.fit(x, t, epochs=2, batch_size=4, verbose=0)  # steps 1 and 2 are fine
    x[2, 1] = -1.0  # sqrt(-1) = NaN in step 3
    before = {k: v.copy() for k, v in checked.params.items()}
    with pytest.raises(gc.NumericsError) as info:
        checked.train_step(x, t)
    msg = str(info.value)
    assert "sqrt node" in msg and "forward part of training step 3" in msg
    assert "test_numerics.py:" in msg  # the DSL line of gc.sqrt
    line = next(
        i + 1
        for i, s in enumerate(open(__file__).read().splitlines())
        if "root = gc.sqrt(x * " in s
    )
    assert f"test_numerics.py:{line}" in msg
    for k, v in before.items():  # stopped before the update
        assert np.array_equal(checked.params[k], v)
    with pytest.raises(gc.NumericsError, match="forward part of training step 3"):
        checked.fit(x, t, epochs=1, batch_size=2, verbose=0, allow_nonfinite=True)
    with pytest.raises(gc.NumericsError, match=r"sqrt node .* infer \(after 2 training steps\)"):
        checked.predict(x)


def test_check_numerics_catches_the_backward_part(checked) -> None:
    """sqrt(x s) = 0 at x = 0 is finite, but its derivative x / (2 sqrt(x s)) = 0/0 is not."""
    checked.initialize(0)
    x = np.ones((4, 3), np.float32)
    x[0, 0] = 0.0
    with pytest.raises(gc.NumericsError, match="in the backward part of training step 1") as info:
        checked.train_step(x, np.ones((4, 1), np.float32))
    assert "test_numerics.py:" in str(info.value)


def test_check_numerics_catches_the_update_part(checked) -> None:
    checked.initialize(0)
    checked.lr = 3e38  # p - lr * g overflows
    try:
        with pytest.raises(gc.NumericsError, match="update part of training step 1"):
            checked.train_step(np.full((4, 3), 4.0, np.float32), np.full((4, 1), -1e3, np.float32))
    finally:
        checked.lr = 0.1


def test_exported_library_gets_the_checks_too(checked, tmp_path) -> None:
    pytest.importorskip("graphc.export")
    res = checked.export(str(tmp_path / "checked.ll"), emit="llvm")
    text = open(res.llvm).read()
    assert "fcmp uno" in text and re.search(r"\b1000\b", text)  # the scan; the code of site 0


def test_check_numerics_is_off_by_default_and_emits_no_code(checked) -> None:
    assert "first_nonfinite" in _llvm_ir(checked.program)
    plain = _checked_model(check=False)
    assert "first_nonfinite" not in _llvm_ir(plain.program)
    x = np.ones((4, 3), np.float32)
    x[0, 0] = -1.0
    assert np.isnan(plain.predict(x)[0, 0])  # no check: NaN comes out


# ---------------------------------------------------------------- softmax cross-entropy at large logits

# rows where (m + log s) - z_label rounds the small log s against a large max m
XENT_Z = np.array(
    [[1e8, 1e8, -1e8], [1000.0, 999.5, 0.0], [-3e7, 3e7, 0.0], [1e4 + 1, 1e4, 1e4 - 3]],
    dtype=np.float32,
)
XENT_L = np.array([0, 1, 0, 1], dtype=np.int32)


def _xent64(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row -log softmax(z)_label in float64 (the float32 logits taken as exact)."""
    z = z.astype(np.float64)
    m = z.max(axis=1)
    return (m - z[np.arange(len(z)), labels]) + np.log(np.exp(z - m[:, None]).sum(axis=1))


@pytest.mark.parametrize("opt_level", [0, 2])
def test_softmax_cross_entropy_keeps_log_s_at_large_logits(opt_level) -> None:
    """Every emitter of the loss (the eval entry's own kernel, the train step's kernel fused
    with dz at -O2, unfused at -O0) gives (m - z_label) + log s: ln 2 for logits [1e8, 1e8]."""
    z = gc.input("z", ("N", 3))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = z + gc.param("b", (3,), init="zeros")
    m = gc.compile(
        logits,
        loss=gc.softmax_cross_entropy(logits, labels),
        optimizer=gc.SGD(lr=1e-30),  # b stays 0 to float32 precision
        opt_level=opt_level,
        name=f"xent_big{opt_level}",
    )
    want = _xent64(XENT_Z, XENT_L)
    for i in range(len(XENT_Z)):
        row, lab = XENT_Z[i : i + 1], XENT_L[i : i + 1]
        ev = m.evaluate({"z": row}, lab)["loss"]
        tr = m.train_step({"z": row}, lab)
        for got in (ev, tr):
            np.testing.assert_allclose(got, want[i], rtol=2e-7, err_msg=f"row {i}")
    assert abs(m.evaluate({"z": XENT_Z[:1]}, XENT_L[:1])["loss"] - np.log(2.0)) < 1e-7


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_softmax_cross_entropy_whose_only_param_is_a_bias(opt_level) -> None:
    """logits = tanh(x) + b: dz feeds only the bias gradient sum(dz, axis 0), so the fused
    kernel has no buffer for dz (was CodegenError at -O2). Checked against (p - onehot) / N."""
    x = gc.input("x", ("N", 4))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.tanh(x) + gc.param("b", (4,), init="zeros")
    m = gc.compile(
        logits,
        loss=gc.softmax_cross_entropy(logits, labels),
        optimizer=gc.SGD(lr=1.0),
        opt_level=opt_level,
        name=f"xent_bias{opt_level}",
    )
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((7, 4)).astype(np.float32)
    ys = rng.integers(0, 4, 7).astype(np.int32)
    loss = m.train_step({"x": xs}, ys)  # b' = -grad
    t = np.tanh(xs.astype(np.float64))
    p = np.exp(t - t.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss, _xent64(np.tanh(xs), ys).mean(), rtol=1e-5)
    want = ((p - np.eye(4)[ys]) / len(xs)).sum(axis=0)
    np.testing.assert_allclose(-m.params["b"], want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- binary cross-entropy at +-inf


@pytest.mark.parametrize("opt_level", [0, 2])
def test_binary_cross_entropy_takes_its_limits_at_infinite_logits(opt_level) -> None:
    """The stable formula's limits: l(-inf, 0) = l(+inf, 1) = 0, l(-inf, 1) = l(+inf, 0) = +inf,
    l(+inf, 0.5) = +inf; finite logits against float64 softplus(z) - z y (exact math)."""
    z = gc.input("z", ("N", 4))
    t = gc.input("t", ("N", 4))
    logits = z + gc.param("b", (4,), init="zeros")
    m = gc.compile(
        logits,
        loss=gc.binary_cross_entropy(logits, t),
        optimizer=gc.SGD(lr=1.0),
        opt_level=opt_level,
        name=f"bce_inf{opt_level}",
    )
    inf = np.inf  # the infinities come in through b (inputs are checked for NaN/Inf)
    cases = [  # (z row, b, targets row, the row's mean loss)
        ([0, 0, 0, 0], [-inf, inf, -inf, inf], [0, 1, 0, 1], 0.0),
        ([0, 0, 3, -2], [-inf, inf, 0, 0], [0, 1, 0.25, 1], None),
        ([0, 0, 0, 0], [-inf, 0, 0, 0], [1, 0, 0, 0], inf),
        ([0, 0, 0, 0], [inf, 0, 0, 0], [0.5, 0, 0, 0], inf),
    ]
    for zs, bs, ts, want in cases:
        zr, tr = np.array([zs], np.float32), np.array([ts], np.float32)
        m.params["b"][...] = bs
        if want is None:  # the infinite columns give 0; the finite ones softplus(z) - z y
            zf, tf = zr[0, 2:].astype(np.float64), tr[0, 2:].astype(np.float64)
            want = float(np.sum(np.logaddexp(0.0, zf) - zf * tf) / 4)
        got = m.evaluate({"z": zr}, {"t": tr})["loss"]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(bs))
    m.params["b"][...] = [-inf, inf, -inf, inf]
    loss = m.train_step({"z": np.zeros((1, 4), np.float32)}, {"t": np.array([[0, 1, 0, 1]], "f4")})
    assert loss == 0.0  # and the gradient sigmoid(z) - y is 0 there, so b stays as it was:
    np.testing.assert_array_equal(m.params["b"], [-inf, inf, -inf, inf])


def test_exported_library_names_the_numerics_site(checked, tmp_path) -> None:
    """The library returns ERR_NUMERICS + site (not ERR_INTERNAL = 7), NAME_strerror and the
    header name the node, and gc.load raises NumericsError naming node, op and source line; a C
    program sees the same code (under valgrind when it is installed)."""
    import os
    import shutil
    import subprocess

    from c_build import CC, build_program

    if CC is None:
        pytest.skip("no C compiler")
    checked.initialize(0)
    res = checked.export(str(tmp_path / "libchecked.so"))
    header = open(res.header).read()
    assert "#define CHECKED_ERR_NUMERICS 1000" in header
    line = next(
        i + 1
        for i, s in enumerate(open(__file__).read().splitlines())
        if "root = gc.sqrt(x * " in s
    )
    assert "sqrt node" in header and f"test_numerics.py:{line}" in header
    lib = gc.load(res.library)
    x = np.ones((4, 3), np.float32)
    x[1, 2] = -1.0
    with pytest.raises(gc.NumericsError, match=rf"(?s)sqrt node .*test_numerics.py:{line}"):
        lib.predict(x)
    np.testing.assert_allclose(
        lib.predict(np.ones((4, 3), np.float32)),
        checked.predict(np.ones((4, 3), np.float32)),
        rtol=1e-6,
    )
    prog = tmp_path / "nan.c"  # a NaN at the first site of NAME_infer, seen from C
    prog.write_text(
        f'#include <stdio.h>\n#include <stdlib.h>\n#include "{os.path.basename(res.header)}"\n'
        "int main(void) {\n"
        "    checked_ctx ctx = {0};\n"
        "    ctx.params = aligned_alloc(64, 4096); ctx.params_bytes = 4096;\n"
        "    ctx.workspace = aligned_alloc(64, 65536); ctx.workspace_bytes = 65536;\n"
        "    if (checked_init(&ctx)) return 2;\n"
        "    float x[3] = {1.0f, -1.0f, 1.0f}, y[1];\n"
        "    int rc = checked_infer(&ctx, 1, x, 3, y, 1);\n"
        '    printf("%d %s\\n", rc, checked_strerror(rc));\n'
        "    free(ctx.params); free(ctx.workspace);\n"
        "    return rc >= CHECKED_ERR_NUMERICS ? 0 : 1;\n"
        "}\n"
    )
    from graphc.codegen.target import host_cpu

    vg = shutil.which("valgrind")
    d = str(tmp_path)
    if vg and "+avx512f" in host_cpu()[1].split(","):  # valgrind cannot run AVX-512 code
        d = str(tmp_path / "avx2")
        os.mkdir(d)
        checked.export(os.path.join(d, "libchecked.so"), target_cpu="x86-64-v3")
    exe = build_program(prog, d, "checked", tmp_path / "nan", ["-std=c11"])
    run = [exe] if vg is None else [vg, "-q", "--error-exitcode=99", "--leak-check=full", exe]
    r = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    code, msg = r.stdout.split(" ", 1)
    assert int(code) >= 1000 and "sqrt node" in msg and f"test_numerics.py:{line}" in msg
