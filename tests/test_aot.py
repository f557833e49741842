"""Ahead-of-time libraries: C programs built against the generated header and .so (issue 7).

References: Python's in-process (JIT) model for predictions and training losses, zlib's CRC-32
for the weights file, objdump's disassembly for the instruction set, valgrind's memcheck.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from c_build import CC, build_program

import graphc as gc
from graphc.cli import main as cli_main
from graphc.codegen.aot import ABI_VERSION
from graphc.codegen.target import host_cpu
from graphc.export import find_c_compiler, write_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")
CFLAGS = ["-std=c99", "-O0", "-Wall", "-Wextra", "-Werror"]
VALGRIND = shutil.which("valgrind")
OBJDUMP = shutil.which("objdump")


def digits_model(seed: int = 0) -> gc.Model:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import models
    finally:
        sys.path.pop(0)
    d = models.digits()
    return gc.compile(d["outputs"], d["loss"], d["optimizer"], name=d["name"], seed=seed)


def compile_programs(src_dir: Path, lib_dir: Path) -> dict[str, str]:
    """examples/c/{predict,train}.c and bad_calls.c (from src_dir) built against lib_dir."""
    progs = {}
    for prog, src in (
        ("predict", EXAMPLES / "c" / "predict.c"),
        ("train", EXAMPLES / "c" / "train.c"),
        ("bad_calls", src_dir / "bad_calls.c"),
    ):
        flags = [*CFLAGS, '-DMODEL_HEADER="digits.h"']
        progs[prog] = build_program(src, lib_dir, "digits", lib_dir / prog, flags)
    return progs


def write_damaged_weights(model, out: Path) -> Path:
    """good.weights (the model's) and three damaged copies beside it, which the C programs
    must refuse: truncated.weights, corrupt.weights (one bit of one parameter) and
    header.weights (one bit inside the model name / shape table). Returns good.weights."""
    good = out / "good.weights"
    write_weights(model, str(good))
    blob = good.read_bytes()
    (out / "truncated.weights").write_bytes(blob[:-10])
    for name, at in (("corrupt", -100), ("header", 40)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x01
        (out / f"{name}.weights").write_bytes(bytes(damaged))
    return good


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """The digits rows, standardized with the first 1400 rows' statistics."""
    with gzip.open(EXAMPLES / "data" / "digits.csv.gz", "rt") as f:
        raw = np.loadtxt(f, delimiter=",", skiprows=1)
    x, y = raw[:, :64], raw[:, 64].astype(np.int32)
    mu, sd = x[:1400].mean(0), x[:1400].std(0) + 1e-6
    return ((x - mu) / sd).astype(np.float32), y


@pytest.fixture(scope="module")
def build(tmp_path_factory, data):
    """A digits model trained one epoch, exported (embedded weights, native CPU), and the C
    example programs plus the bad-call program compiled against its header."""
    x, y = data
    model = digits_model()
    model.fit(x[:1400], y[:1400], epochs=1, batch_size=64, verbose=0)
    out = tmp_path_factory.mktemp("aot")
    res = model.export(str(out / "libdigits.so"))
    assert res.library and res.header and os.path.isfile(res.library) and os.path.isfile(res.header)
    (out / "bad_calls.c").write_text(BAD_CALLS_C)
    progs = compile_programs(out, out)
    rows = out / "rows.txt"
    np.savetxt(rows, x[1400:1600], fmt="%.9g")
    train_rows = out / "train_rows.txt"
    np.savetxt(train_rows, np.hstack([x[:640], y[:640, None]]), fmt="%.9g")
    good = write_damaged_weights(model, out)
    return {
        "model": model,
        "dir": out,
        "lib": res.library,
        "progs": progs,
        "rows": rows,
        "train_rows": train_rows,
        "weights": str(good),
    }


def run(
    argv: list[str], stdin: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    with open(stdin) if stdin else open(os.devnull) as f:
        return subprocess.run(
            argv,
            stdin=f,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
        )


def test_c_program_inference_matches_python(build, data):
    x, _ = data
    r = run([build["progs"]["predict"]], build["rows"])
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
    want = build["model"].predict(x[1400:1600])
    assert got.shape == want.shape == (200, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # 200 x 64 x 32 multiply-adds: the first layer's GEMM is split over the threads
    for threads in ("2", "3"):
        r2 = run([build["progs"]["predict"]], build["rows"], env={"MODEL_THREADS": threads})
        assert r2.returncode == 0, r2.stderr
        assert r2.stdout == r.stdout  # the same bits


def test_c_program_training_matches_python_and_loss_falls(build, data):
    x, y = data
    out = build["dir"] / "trained.weights"
    r = run([build["progs"]["train"], "100", "64", "0.01", str(out)], build["train_rows"])
    assert r.returncode == 0, r.stderr
    losses = np.array([float(line.split()[3]) for line in r.stdout.splitlines()])
    assert losses.shape == (100,)
    # The same 100 steps in process: same start weights, fresh Adam state, rows in order.
    ref = digits_model()
    ref.set_weights(build["model"].get_weights())
    ref.lr = 0.01
    want = []
    for step in range(100):
        idx = (step * 64 + np.arange(64)) % 640
        want.append(ref.train_step(x[idx], y[idx]))
    np.testing.assert_allclose(losses, want, rtol=1e-4, atol=1e-6)
    assert losses[-10:].mean() < 0.7 * losses[:10].mean()
    # The weights the C program wrote load back and equal the in-process ones.
    lib = gc.load(build["lib"])
    lib.load_weights(str(out))
    for k, v in ref.params.items():
        np.testing.assert_allclose(lib.params[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_c_programs_serve_a_float64_model(tmp_path):
    """examples/c/predict.c and train.c for a float64 model (they were float: its header gave
    them no generic names, then float arrays for double parameters): rows read as double,
    outputs and losses printed with 17 digits equal the Model's predict (1e-14) and its
    train_step's losses over 6 steps of 4 rows, wrapping around 10 rows (1e-12)."""
    x = gc.input("x", ("N", 6), dtype="f64")
    y = gc.input("y", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 5, "tanh"), 3)
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y), gc.Adam(lr=0.01), name="m64")
    ref = gc.compile(logits, gc.softmax_cross_entropy(logits, y), gc.Adam(lr=0.01), name="r64")
    ref.set_weights(m.get_weights())
    m.export(str(tmp_path / "libm64.so"))
    flags = [*CFLAGS, '-DMODEL_HEADER="m64.h"']
    progs = {
        p: build_program(EXAMPLES / "c" / f"{p}.c", tmp_path, "m64", tmp_path / p, flags)
        for p in ("predict", "train")
    }
    rng = np.random.default_rng(3)
    xs, ys = rng.standard_normal((10, 6)) / 3, rng.integers(0, 3, 10).astype(np.int32)
    np.savetxt(tmp_path / "x.txt", xs, fmt="%.17g")
    np.savetxt(tmp_path / "xy.txt", np.hstack([xs, ys[:, None]]), fmt="%.17g")
    r = run([progs["predict"]], tmp_path / "x.txt")
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
    np.testing.assert_allclose(got, m.predict(xs), rtol=1e-14, atol=1e-15)
    r = run([progs["train"], "6", "4", "0.01"], tmp_path / "xy.txt")
    assert r.returncode == 0, r.stderr
    losses = [float(line.split()[3]) for line in r.stdout.splitlines()]
    want = [ref.train_step(xs[i], ys[i]) for i in ((s * 4 + np.arange(4)) % 10 for s in range(6))]
    np.testing.assert_allclose(losses, want, rtol=1e-12)


def test_bad_calls_return_their_error_codes(build):
    d = build["dir"]
    r = run(
        [
            build["progs"]["bad_calls"],
            build["weights"],
            str(d / "truncated.weights"),
            str(d / "corrupt.weights"),
            str(d / "header.weights"),
            str(d / "missing.weights"),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checks passed" in r.stdout


@pytest.mark.skipif(VALGRIND is None, reason="valgrind is not installed")
def test_programs_run_clean_under_valgrind(build):
    d = build["dir"]
    vg = [VALGRIND, "-q", "--leak-check=full", "--error-exitcode=99"]
    progs = build["progs"]
    if "+avx512f" in host_cpu()[1].split(","):
        # valgrind cannot execute AVX-512: check the same programs on an AVX2 build.
        v3 = d / "avx2"
        v3.mkdir(exist_ok=True)
        build["model"].export(str(v3 / "libdigits.so"), target_cpu="x86-64-v3")
        progs = compile_programs(d, v3)
    few = d / "few_rows.txt"
    few.write_text("".join(build["rows"].read_text().splitlines(True)[:20]))
    cases = [
        ([progs["predict"]], few),
        ([progs["train"], "5", "32", "0.01", str(d / "vg.weights")], build["train_rows"]),
        (
            [
                progs["bad_calls"],
                build["weights"],
                str(d / "truncated.weights"),
                str(d / "corrupt.weights"),
                str(d / "header.weights"),
                str(d / "missing.weights"),
            ],
            None,
        ),
    ]
    for argv, stdin in cases:
        r = run(vg + argv, stdin)
        assert r.returncode == 0, (
            f"{os.path.basename(argv[0])}: rc {r.returncode}\n{r.stderr[-3000:]}"
        )


def test_header_compiles_as_c99_and_as_cpp(build):
    d = build["dir"]
    src = d / "header_only.c"
    src.write_text(
        '#include "digits.h"\nint main(void) { return DIGITS_OK + (int)(DIGITS_PARAM_BYTES > 0) - 1; }\n'
    )
    r = subprocess.run(
        [
            CC,
            "-std=c99",
            "-pedantic",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{d}",
            "-fsyntax-only",
            str(src),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    cxx = shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (c++) on PATH")
    r = subprocess.run(
        [cxx, "-x", "c++", "-Wall", "-Wextra", "-Werror", f"-I{d}", "-fsyntax-only", str(src)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_library_exports_only_the_documented_functions(build):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", build["lib"]], check=False,
                         capture_output=True, text=True).stdout  # fmt: skip
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    api = {f"digits_{f}" for f in ("strerror", "last_error", "workspace_size", "init",
                                   "load_weights", "read_weights", "write_weights", "infer",
                                   "train_step", "graphc_meta", "set_num_threads",
                                   "get_num_threads")}  # fmt: skip
    # every function but graphc_meta is exported under its ABI-versioned name
    exported = {f if f == "digits_graphc_meta" else f"{f}_abi{ABI_VERSION}" for f in api}
    ours = {n for n in names if n.startswith("digits")}
    assert ours == exported, f"unexpected exports {ours ^ exported}"
    header = Path(build["dir"] / "digits.h").read_text()
    for f in api:
        assert re.search(rf"\b{f}\(", header), f"{f} is exported but not declared in the header"
        if f != "digits_graphc_meta":
            assert f"#define {f} {f}_abi{ABI_VERSION}\n" in header


def test_load_round_trip_predict_train_and_shape_checks(build, data):
    x, y = data
    model = build["model"]
    lib = gc.load(build["lib"])
    assert lib.name == "digits" and set(lib.meta["entries"]) == {"infer", "train_step"}
    lib._workspace(300)
    lib._ws[:] = 0xFF  # the kernels must not rely on a zeroed workspace
    one = lib.predict(x[:300], batch_size=128)
    np.testing.assert_allclose(one, model.predict(x[:300]), rtol=1e-5, atol=1e-5)
    assert lib.threads == 1
    lib.threads = 2
    assert lib.threads == 2
    assert np.array_equal(lib.predict(x[:300], batch_size=128), one)
    lib.threads = 1
    assert np.array_equal(lib.predict(x[:300], batch_size=128, verbose=0), one)  # Keras's form
    ref = digits_model()
    ref.set_weights(model.get_weights())
    ref.lr = lib.lr
    for _ in range(3):
        np.testing.assert_allclose(
            lib.train_step(x[:50], y[:50]), ref.train_step(x[:50], y[:50]), rtol=1e-5
        )
    with pytest.raises(gc.ArgumentError, match="input 'x' expects f32"):
        lib.predict(x[:5, :63])
    with pytest.raises(gc.ArgumentError, match="labels"):
        lib.train_step(x[:5], y[:4])
    # The weights file Python writes is byte for byte the one the library writes (zlib CRC-32).
    fresh = gc.load(build["lib"])
    blob = fresh.weights_file_bytes()
    assert blob == Path(build["weights"]).read_bytes()
    header = len(blob) - fresh.meta["param_bytes"]
    assert zlib.crc32(blob[header:]) == int.from_bytes(blob[28:32], "little")


def test_two_instances_in_two_threads(build, data):
    x, _ = data
    want = build["model"].predict(x[:400])
    libs = [gc.load(build["lib"]) for _ in range(2)]
    got: list = [None, None]

    def work(i: int) -> None:
        for _ in range(20):
            got[i] = libs[i].predict(x[:400], batch_size=37)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def test_cli_baseline_x86_64_library_has_no_avx_and_same_results(tmp_path, data, build):
    x, _ = data
    lib_path = tmp_path / "libdigits.so"
    rc = cli_main(
        [
            "compile",
            str(EXAMPLES / "models.py") + ":digits",
            "-o",
            str(lib_path),
            "--target-cpu",
            "x86-64",
            "--weights",
            "file",
            "--entry",
            "infer",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    wfile = tmp_path / "digits.weights"
    assert wfile.is_file() and (tmp_path / "digits.h").is_file()
    lib = gc.load(str(lib_path))
    assert set(lib.meta["entries"]) == {"infer"}
    with pytest.raises(gc.CheckpointError, match="no weights were loaded"):
        lib.predict(x[:4])  # file mode: params are zero until loaded: refused
    lib = gc.load(str(lib_path), weights=str(wfile))
    with pytest.raises(gc.CheckpointError, match="rejected"):
        gc.load(str(lib_path), weights=str(build["dir"] / "corrupt.weights"))
    want = digits_model(seed=3).predict(x[:300])
    np.testing.assert_allclose(lib.predict(x[:300]), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(gc.GraphcError, match="without train_step"):
        lib.train_step(x[:4], np.zeros(4, np.int32))
    if OBJDUMP is None:
        pytest.skip("objdump is not installed: instruction check skipped")
    # Any VEX/EVEX-encoded instruction (AVX and later: vaddps, vmovss, vfmadd...) or a ymm/zmm
    # register; baseline x86-64 code has SSE2 only.
    avx = re.compile(r"^\s*[0-9a-f]+:\s+(v[a-z0-9]+)\s|%[yz]mm\d+", re.MULTILINE)

    def disassemble(path: str) -> str:
        return subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", path], check=False,
                              capture_output=True, text=True).stdout  # fmt: skip

    asm = disassemble(str(lib_path))
    assert "digits__graphc_infer" in asm
    hits = [m.group(0).split()[-1] for m in avx.finditer(asm)]
    assert not hits, f"AVX instructions in an x86-64 library: {sorted(set(hits))[:10]}"
    native = disassemble(build["lib"])
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and " avx2" in cpuinfo.read_text():  # the check can fail: native has AVX
        assert avx.search(native), "the check finds no AVX even in the native library"


def test_avx512_target_uses_512_bit_fmas(tmp_path):
    """--target-cpu x86-64-v4 (AVX-512): the GEMM's microkernel is built from zmm FMAs (the
    assembly only: this machine need not run it)."""
    out = tmp_path / "digits.s"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphc",
            "compile",
            str(EXAMPLES / "models.py") + ":digits",
            "-o",
            str(out),
            "--emit",
            "asm",
            "--target-cpu",
            "x86-64-v4",
            "--entry",
            "infer",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    asm = out.read_text()
    assert len(re.findall(r"vfmadd\w*ps\s+.*%zmm", asm)) >= 12  # one 6 x 2-vector tile at least
    v3 = tmp_path / "v3.s"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphc",
            "compile",
            str(EXAMPLES / "models.py") + ":digits",
            "-o",
            str(v3),
            "--emit",
            "asm",
            "--target-cpu",
            "x86-64-v3",
            "--entry",
            "infer",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "zmm" not in v3.read_text() and re.search(r"vfmadd\w*ps\s+.*%ymm", v3.read_text())


def test_c_names_never_collide_between_inputs_and_outputs(tmp_path):
    """compile_sequential names its labels "y": the output then gets another C name, and a
    train_step-only header still compiles (no LLVM needed: plan and header only)."""
    from graphc.codegen import aot
    from graphc.compiler import build_graphs, schedule_program

    x = gc.input("x", ("N", 4))
    y = gc.input("y", ("N",), dtype="i32")
    logits = gc.dense(x, 3, name="fc")
    prog = schedule_program(
        build_graphs("seq", [logits], gc.softmax_cross_entropy(logits, y), None)
    )
    for entries in (["infer", "train_step"], ["train_step"]):
        plan = aot.plan_library("seq", prog.schedules, prog.layout, prog.grads, prog.training,
                                prog.param_bytes, prog.state_bytes, entries, embed=True,
                                target_cpu="native", lr=0.1, loss_kind=None, state_init=None)  # fmt: skip
        if "infer" in entries:
            assert [p.cname for p in plan.entries["infer"].outputs] == ["out"]
        header = tmp_path / "seq.h"
        header.write_text(aot.c_header(plan, gc.__version__))
        src = tmp_path / "use.c"
        src.write_text('#include "seq.h"\nint main(void) { return SEQ_Y_ELEMS(2) == 2 ? 0 : 1; }\n')
        r = subprocess.run([CC, *CFLAGS, "-pedantic", f"-I{tmp_path}", "-fsyntax-only", str(src)],
                           check=False, capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stderr


def test_missing_c_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CC", "graphc-no-such-compiler")
    with pytest.raises(gc.GraphcError, match=r"no C compiler found \(CC='graphc-no-such-compiler'"):
        find_c_compiler()


BAD_CALLS_C = r"""
/* Every documented error code, with guard checks that rejected calls write nothing. */
#define GRAPHC_MODEL_ALIASES
#include MODEL_HEADER
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0, checks = 0;
#define CHECK(expr, want) do { int rc_ = (expr); checks++; if (rc_ != (want)) { \
    printf("FAIL line %d: %s returned %d, want %d\n", __LINE__, #expr, rc_, (int)(want)); failures++; } } while (0)
#define TRUE(cond) do { checks++; if (!(cond)) { printf("FAIL line %d: %s\n", __LINE__, #cond); failures++; } } while (0)
#define GUARD 12345.0f
#define YN (4 * MODEL_Y_ROW_ELEMS)

static int untouched(const float *y, int64_t from, int64_t to) {
    int64_t i;
    for (i = from; i < to; i++) if (y[i] != GUARD) return 0;
    return 1;
}

int main(int argc, char **argv) {
    model_ctx ctx, bad;
    float x[4 * MODEL_X_ROW_ELEMS], y[YN + 16], loss = GUARD;
    model_label_t labels[4] = {0, 1, 2, 3};
    unsigned char *saved, *image;
    int64_t i, ws = model_workspace_size(4);
    FILE *f;
    long len;
    if (argc < 6) return 2;
    for (i = 0; i < 4 * MODEL_X_ROW_ELEMS; i++) x[i] = (float)(i % 7) - 3.0f;
    for (i = 0; i < YN + 16; i++) y[i] = GUARD;
    ctx.params_bytes = MODEL_PARAM_BYTES; ctx.params = malloc((size_t)MODEL_PARAM_BYTES + 64);
    ctx.state_bytes = MODEL_STATE_BYTES; ctx.state = malloc((size_t)MODEL_STATE_BYTES);
    ctx.workspace_bytes = ws; ctx.workspace = malloc((size_t)ws);
    saved = (unsigned char *)malloc((size_t)MODEL_PARAM_BYTES);
    image = (unsigned char *)malloc((size_t)MODEL_WEIGHTS_FILE_BYTES + 16);

    TRUE(model_workspace_size(0) == -1);
    TRUE(model_workspace_size(MODEL_MAX_BATCH + 1) == -1);
    TRUE(model_strerror(9999) != NULL && model_strerror(MODEL_ERR_NULL) != NULL);
    CHECK(model_init(NULL), MODEL_ERR_NULL);
    bad = ctx; bad.params = NULL;                 CHECK(model_init(&bad), MODEL_ERR_NULL);
    bad = ctx; bad.params_bytes -= 1;             CHECK(model_init(&bad), MODEL_ERR_BUFFER);
    bad = ctx; bad.params = (char *)ctx.params + 1; CHECK(model_init(&bad), MODEL_ERR_ALIGN);
    bad = ctx; bad.state_bytes = 8;               CHECK(model_init(&bad), MODEL_ERR_BUFFER);
    CHECK(model_init(&ctx), MODEL_OK);

    /* inference */
    CHECK(model_infer(NULL, 4, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_NULL);
    CHECK(model_infer(&ctx, 4, NULL, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_NULL);
    CHECK(model_infer(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, NULL, YN), MODEL_ERR_NULL);
    CHECK(model_infer(&ctx, 0, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_BATCH);
    CHECK(model_infer(&ctx, -3, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_BATCH);
    CHECK(model_infer(&ctx, MODEL_MAX_BATCH + 1, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_BATCH);
    CHECK(model_infer(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS - 1, y, YN), MODEL_ERR_BUFFER);
    CHECK(model_infer(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, y, YN - 1), MODEL_ERR_BUFFER);
    CHECK(model_infer(&ctx, 5, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_BUFFER);
    bad = ctx; bad.workspace_bytes = MODEL_INFER_WORKSPACE_BYTES(4) - 1;      CHECK(model_infer(&bad, 4, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_BUFFER);
    bad = ctx; bad.workspace = NULL;              CHECK(model_infer(&bad, 4, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_NULL);
    bad = ctx; bad.params = NULL;                 CHECK(model_infer(&bad, 4, x, 4 * MODEL_X_ROW_ELEMS, y, YN), MODEL_ERR_NULL);
    TRUE(untouched(y, 0, YN + 16));
    CHECK(model_infer(&ctx, 2, x, 2 * MODEL_X_ROW_ELEMS, y, 2 * MODEL_Y_ROW_ELEMS), MODEL_OK);
    TRUE(!untouched(y, 0, 2 * MODEL_Y_ROW_ELEMS) && untouched(y, 2 * MODEL_Y_ROW_ELEMS, YN + 16));

    /* training */
    bad = ctx; bad.state = NULL;                  CHECK(model_train_step(&bad, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_NULL);
    bad = ctx; bad.state_bytes = 4;               CHECK(model_train_step(&bad, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_BUFFER);
    CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, NULL, 4, 0.01f, &loss), MODEL_ERR_NULL);
    CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, NULL), MODEL_ERR_NULL);
    CHECK(model_train_step(&ctx, 0, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_BATCH);
    CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 3, 0.01f, &loss), MODEL_ERR_BUFFER);
    bad = ctx; bad.workspace_bytes = model_workspace_size(3);
    CHECK(model_train_step(&bad, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_BUFFER);
    TRUE(loss == GUARD);
    CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_OK);
    TRUE(loss != GUARD && loss > 0.0f);

    /* value checks (issue 13 item 4): a rejected step writes nothing, params and state alike */
    {
        unsigned char *p0 = (unsigned char *)malloc((size_t)MODEL_PARAM_BYTES);
        unsigned char *s0 = (unsigned char *)malloc((size_t)MODEL_STATE_BYTES);
        float lrs[3];
        int k;
        memcpy(p0, ctx.params, (size_t)MODEL_PARAM_BYTES);
        memcpy(s0, ctx.state, (size_t)MODEL_STATE_BYTES);
        loss = GUARD;
        labels[3] = MODEL_LABEL_CLASSES;  CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_LABEL);
        labels[3] = -1;                   CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_LABEL);
        labels[3] = 2147483647;           CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_LABEL);
        labels[3] = 3;
        x[2 * MODEL_X_ROW_ELEMS + 5] = NAN;      CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_NONFINITE);
        x[2 * MODEL_X_ROW_ELEMS + 5] = -INFINITY; CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.01f, &loss), MODEL_ERR_NONFINITE);
        x[2 * MODEL_X_ROW_ELEMS + 5] = 1.0f;
        lrs[0] = NAN; lrs[1] = INFINITY; lrs[2] = -0.01f;
        for (k = 0; k < 3; k++) CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, lrs[k], &loss), MODEL_ERR_LR);
        TRUE(loss == GUARD);
        TRUE(memcmp(p0, ctx.params, (size_t)MODEL_PARAM_BYTES) == 0);
        TRUE(memcmp(s0, ctx.state, (size_t)MODEL_STATE_BYTES) == 0);
        TRUE(strstr(model_strerror(MODEL_ERR_LABEL), "label") != NULL);
        CHECK(model_train_step(&ctx, 4, x, 4 * MODEL_X_ROW_ELEMS, labels, 4, 0.0f, &loss), MODEL_OK);
        free(p0);
        free(s0);
    }

    /* weights files: rejected ones leave params as they were */
    memcpy(saved, ctx.params, (size_t)MODEL_PARAM_BYTES);
    CHECK(model_load_weights(&ctx, NULL), MODEL_ERR_NULL);
    CHECK(model_load_weights(NULL, argv[1]), MODEL_ERR_NULL);
    CHECK(model_load_weights(&ctx, argv[2]), MODEL_ERR_WEIGHTS);   /* truncated */
    CHECK(model_load_weights(&ctx, argv[3]), MODEL_ERR_WEIGHTS);   /* one parameter bit flipped */
    CHECK(model_load_weights(&ctx, argv[4]), MODEL_ERR_WEIGHTS);   /* header (shapes) changed */
    CHECK(model_load_weights(&ctx, argv[5]), MODEL_ERR_IO);        /* no such file */
    TRUE(memcmp(saved, ctx.params, (size_t)MODEL_PARAM_BYTES) == 0);
    f = fopen(argv[1], "rb");
    len = f ? (long)fread(image, 1, (size_t)MODEL_WEIGHTS_FILE_BYTES + 16, f) : -1;
    if (f) fclose(f);
    TRUE(len == (long)MODEL_WEIGHTS_FILE_BYTES);
    CHECK(model_read_weights(&ctx, image, len - 1), MODEL_ERR_WEIGHTS);
    CHECK(model_read_weights(&ctx, NULL, len), MODEL_ERR_NULL);
    image[len - 1] ^= 0x80;
    CHECK(model_read_weights(&ctx, image, len), MODEL_ERR_WEIGHTS);
    image[len - 1] ^= 0x80;
    TRUE(memcmp(saved, ctx.params, (size_t)MODEL_PARAM_BYTES) == 0);
    CHECK(model_read_weights(&ctx, image, len), MODEL_OK);
    CHECK(model_load_weights(&ctx, argv[1]), MODEL_OK);
    CHECK(model_write_weights(&ctx, image, MODEL_WEIGHTS_FILE_BYTES - 1), MODEL_ERR_BUFFER);
    CHECK(model_write_weights(&ctx, image, MODEL_WEIGHTS_FILE_BYTES), MODEL_OK);
    CHECK(model_read_weights(&ctx, image, MODEL_WEIGHTS_FILE_BYTES), MODEL_OK);

    free(ctx.params); free(ctx.state); free(ctx.workspace); free(saved); free(image);
    if (failures) { printf("%d of %d checks failed\n", failures, checks); return 1; }
    printf("%d checks passed\n", checks);
    return 0;
}
"""


def test_names_that_differ_only_in_case_are_refused_before_anything_is_written(tmp_path):
    """The header's macros are upper case: params w and W would share NAME_PARAM_W_OFFSET; one
    silently lost its macros, or the macro was defined twice with different values. (Inputs
    and outputs a and A are C arguments: they are escaped instead, see test_c_argument_names.)"""
    case = "params"
    x = gc.input("x", ("N", 3))
    out = gc.matmul(x, gc.param("w", (3, 2))) + gc.matmul(x, gc.param("W", (3, 2)))
    m = gc.compile([out], name=f"case_{case}")
    with pytest.raises(gc.GraphcError, match="differ only in case"):
        m.export(str(tmp_path / f"libcase_{case}.so"))
    assert list(tmp_path.iterdir()) == []


def test_training_entry_of_a_model_without_loss_says_how_to_build_inference(tmp_path):
    """An inference-only model (as an imported ONNX file is) asked for train_step (examples/c's
    Makefile asks by default) is refused before anything is written, and the message names
    --entry infer; entries='infer' then builds the library."""
    x = gc.input("x", ("N", 4))
    model = gc.compile(gc.dense(x, 3), name="noloss")
    out = tmp_path / "libnoloss.so"
    with pytest.raises(gc.ArgumentError, match=r"without a loss.*--entry infer") as e:
        model.export(str(out), entries="infer,train_step")
    assert "entries='infer'" in str(e.value) and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "libd.so", "--opset", "13"], "--opset 13: only ONNX output has an opset"),
        (
            ["-o", "d.ll", "--emit", "llvm", "--opset", "18"],
            "written as --emit llvm; add --emit onnx",
        ),
        (["-o", "d.onnx", "--target", "aarch64-linux-gnu"], "--target: not used when writing"),
        (["--emit", "onnx", "-o", "d.bin", "--entry", "infer", "--weights", "file"], "--entry, "),
    ],
)
def test_compile_refuses_options_its_output_kind_does_not_use(tmp_path, capsys, args, message):
    """graphc compile's --opset applies to ONNX output only and --target, --entry, --weights,
    ... to native output only; either given with the other kind was ignored without a word
    (an --opset 13 library, an ONNX file 'for aarch64'). Refused before anything is compiled
    or written."""
    out = [str(tmp_path / a) if a.startswith("d.") or a.startswith("libd.") else a for a in args]
    rc = cli_main(["compile", str(EXAMPLES / "models.py") + ":digits", *out])
    assert rc == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_compile_of_a_model_named_like_a_unistd_macro_says_the_command_lines_way_out(
    tmp_path, capsys
):
    """graphc compile names an ONNX file's model after the file: x.onnx's model x cannot be
    exported (X_OK is <unistd.h>'s), and export's advice (gc.compile under another name) is
    Python's; the command line says to copy the file under a longer name, which then works.
    Needs onnx (the file is written with it)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "X.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rc = cli_main(["compile", str(path), "-o", str(tmp_path / "libX.so")])
    err = capsys.readouterr().err
    assert rc == 2 and "model name 'X'" in err and f"cp {path} {tmp_path / 'X_net.onnx'}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.onnx"]
    (tmp_path / "X_net.onnx").write_bytes(path.read_bytes())
    assert (
        cli_main(["compile", str(tmp_path / "X_net.onnx"), "-o", str(tmp_path / "libX_net.so")])
        == 0
    )
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(
        gc.load(str(tmp_path / "libX_net.so")).predict(x), np.maximum(x, 0)
    )


def test_library_train_step_leaves_the_gradients_where_its_header_says(tmp_path):
    """NAME_GRAD_*_OFFSET (the header) hold dloss/dparam after the library's train_step, even
    for the weights whose SGD update runs in the epilogue of their gradient's GEMM (which the
    JIT need not store: nothing of its own reads them); float64 numpy is the reference, the
    update p - lr * g follows from it, and the JIT's Model.gradients gives the same."""
    x = gc.input("x", ("N", 20))
    labels = gc.input("labels", ("N",), dtype="i32")
    h = gc.dense(x, 24, activation="relu", name="fc1")
    logits = gc.dense(h, 3, name="fc2")
    lr = 0.1
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, labels), gc.SGD(lr=lr), name="gr")
    sched = m.program.schedules["train_step"]
    fused = [
        k
        for k in sched.kernels
        if k.kind == "matmul" and any(sched.graph[v].section == "update" for v in k.nodes)
    ]
    assert len(fused) == 2, "the weights' updates should run in their GEMMs' epilogues"
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((32, 20)).astype(np.float32)  # K = 32: one K block
    ys = rng.integers(0, 3, 32).astype(np.int32)
    p = {k: v.astype(np.float64) for k, v in m.params.items()}
    z1 = xs.astype(np.float64) @ p["fc1.w"] + p["fc1.b"]
    a1 = np.maximum(z1, 0.0)
    z2 = a1 @ p["fc2.w"] + p["fc2.b"]
    sm = np.exp(z2 - z2.max(axis=1, keepdims=True))
    sm /= sm.sum(axis=1, keepdims=True)
    d2 = (sm - np.eye(3)[ys]) / 32
    d1 = (d2 @ p["fc2.w"].T) * (z1 > 0)
    want = {"fc1.w": xs.T @ d1, "fc1.b": d1.sum(0), "fc2.w": a1.T @ d2, "fc2.b": d2.sum(0)}
    res = m.export(str(tmp_path / "libgr.so"))
    header = open(res.header).read()
    lib = gc.load(res.library)
    lib.train_step(xs, ys)
    for k, g in want.items():
        c = "GR_GRAD_" + k.upper().replace(".", "_")
        off = int(re.search(rf"#define {c}_OFFSET (\d+)", header).group(1))
        nbytes = int(re.search(rf"#define {c}_BYTES (\d+)", header).group(1))
        got = lib._ws[off : off + nbytes].view(np.float32).reshape(g.shape)
        np.testing.assert_allclose(got, g, rtol=1e-4, atol=1e-6, err_msg=f"library {k}")
        np.testing.assert_allclose(lib.get_weights()[k], p[k] - lr * g, rtol=1e-4, atol=1e-6)
    for k, g in m.gradients(xs, ys).items():
        np.testing.assert_allclose(g, want[k], rtol=1e-4, atol=1e-6, err_msg=f"JIT {k}")
    m.train_step(xs, ys)
    for k, g in want.items():
        np.testing.assert_allclose(m.params[k], p[k] - lr * g, rtol=1e-4, atol=1e-6)
