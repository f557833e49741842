"""Targets and cross-compilation: names validated before LLVM sees them, the command line's
options taken whole, target decisions from the target (not the host), and libraries built here
for aarch64 run under qemu-user with the host's results; x86-64 libraries for a baseline CPU
run on a CPU without AVX, and ones for AVX-512 refuse to (ERR_CPU from the init, no SIGILL).

The qemu tests need ``gcc-aarch64-linux-gnu`` and ``qemu-user`` (.ci/run installs them) and
are skipped without them. They cost about 40 s on two cores (qemu runs the programs at a few
percent of native speed: the steps are few and small)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from c_build import build_program
from test_aot import BAD_CALLS_C, EXAMPLES, digits_model, write_damaged_weights

import graphc as gc
from graphc.cli import main as cli_main
from graphc.codegen.module import ModuleBuilder
from graphc.codegen.target import resolve_target, vector_unit
from graphc.codegen.toolchain import find_toolchain

AARCH64_CC = shutil.which("aarch64-linux-gnu-gcc")
QEMU_AARCH64 = shutil.which("qemu-aarch64")
QEMU_X86 = shutil.which("qemu-x86_64")
CFLAGS = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", '-DMODEL_HEADER="digits.h"']
needs_aarch64 = pytest.mark.skipif(
    AARCH64_CC is None or QEMU_AARCH64 is None,
    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt-get install "
    "gcc-aarch64-linux-gnu qemu-user)",
)


def graphc_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m graphc ARGS` in a child process (so that an LLVM abort cannot take pytest)."""
    return subprocess.run(
        [sys.executable, "-m", "graphc", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "cpu, near",
    [("x86_64", "x86-64"), ("haswel", "haswell"), ("x86-64-v5", "x86-64-v4")],
)
def test_unknown_cpu_is_an_error_listing_close_matches_not_an_llvm_abort(tmp_path, cpu, near):
    r = graphc_cli(
        "compile",
        str(EXAMPLES / "models.py") + ":digits",
        "-o",
        str(tmp_path / "d.s"),
        "--target-cpu",
        cpu,
    )
    assert r.returncode == 2, r.stderr
    assert "LLVM ERROR" not in r.stderr
    assert f"unknown CPU {cpu!r}" in r.stderr and near in r.stderr.split("close matches")[1]
    with pytest.raises(gc.TargetError, match="close matches"):
        resolve_target(None, cpu)


def test_unknown_features_targets_and_foreign_native_cpu_are_clear_errors():
    with pytest.raises(gc.TargetError, match=r"feature '\+avx512g'.*avx512f"):
        resolve_target("x86_64-linux-gnu", "x86-64-v3", "+avx512g")
    with pytest.raises(gc.TargetError, match="close matches: cortex-a7"):
        resolve_target("aarch64-linux-gnu", "cortex-a27")
    with pytest.raises(gc.TargetError, match=r"native names this machine.*cortex-a72"):
        resolve_target("aarch64-linux-gnu", "native")
    with pytest.raises(gc.TargetError, match=r"unknown target 'mips64'.*aarch64-linux-gnu"):
        resolve_target("mips64")
    with pytest.raises(gc.TargetError, match=r"not supported: .*32-bit.*Supported targets: x86_64"):
        resolve_target("armv7-linux-gnueabihf")
    assert resolve_target("arm64").triple == "aarch64-linux-gnu"  # an alias
    assert resolve_target("aarch64-linux-gnu", "neoverse-n1", "+sve").cpu == "neoverse-n1"


def test_jit_target_cpu_is_validated_too():
    x = gc.input("x", ("N", 4))
    with pytest.raises(gc.TargetError, match="haswell"):
        gc.compile(gc.dense(x, 2, name="fc"), None, name="t", target_cpu="haswel")


def test_command_line_takes_no_abbreviations(tmp_path, capsys):
    """`--target` once matched `--target-cpu` by prefix; now a prefix is an unknown option."""
    model = str(EXAMPLES / "models.py") + ":digits"
    with pytest.raises(SystemExit) as e:
        cli_main(["compile", model, "-o", str(tmp_path / "x.s"), "--target-c", "x86-64"])
    assert e.value.code == 2
    assert "unrecognized arguments: --target-c" in capsys.readouterr().err


def test_targets_command_lists_triples_toolchains_and_the_unsupported(capsys):
    assert cli_main(["targets"]) == 0
    out = capsys.readouterr().out
    supported, _, unsupported = out.partition("not supported:")
    assert "x86_64-linux-gnu" in supported and "aarch64-linux-gnu" in supported
    assert "armv7-linux-gnueabihf" in unsupported
    assert cli_main(["targets", "--cpus", "aarch64-linux-gnu"]) == 0
    cpus = capsys.readouterr().out.split()
    assert {"cortex-a72", "neoverse-n1", "generic"} <= set(cpus)


def test_missing_cross_toolchain_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler of any kind
    monkeypatch.delenv("GRAPHC_CC", raising=False)
    monkeypatch.setitem(sys.modules, "ziglang", None)  # find_spec: not installed
    with pytest.raises(gc.TargetError, match="apt-get install gcc-aarch64-linux-gnu"):
        find_toolchain(resolve_target("aarch64-linux-gnu"))
    monkeypatch.setenv("GRAPHC_CC", "no-such-cc --flag")
    with pytest.raises(gc.TargetError, match=r"GRAPHC_CC='no-such-cc --flag' is not on PATH"):
        find_toolchain(resolve_target("aarch64-linux-gnu"))
    tc = find_toolchain(resolve_target("aarch64-linux-gnu"), cc=sys.executable + " -c pass")
    assert tc.cc[0] == sys.executable and tc.how == "--cc"


# ---------------------------------------------------------------------------- codegen decisions


def test_codegen_decisions_follow_the_target_not_the_host():
    """The thread pool's spin hint (x86 `pause`) and the GEMM's register tile come from the
    target: 6 x 2 vectors on 16 registers (SSE, AVX2), 8 x 3 on NEON's 32."""
    for triple, cpu, lanes, regs, pause in (
        ("x86_64-linux-gnu", "x86-64", 4, 16, True),
        ("x86_64-linux-gnu", "x86-64-v3", 8, 16, True),
        ("x86_64-linux-gnu", "x86-64-v4", 16, 32, True),
        ("aarch64-linux-gnu", "generic", 4, 32, False),
        ("aarch64-linux-gnu", "cortex-a72", 4, 32, False),
    ):
        t = resolve_target(triple, cpu)
        unit = vector_unit(t)
        assert (unit.lanes, unit.registers) == (lanes, regs), (triple, cpu)
        mb = ModuleBuilder("m", target_cpu=t)
        from graphc.codegen.threads import thread_pool

        thread_pool(mb.module, "m")
        assert ("llvm.x86.sse2.pause" in str(mb.module)) == pause, (triple, cpu)
        assert mb.module.triple == t.llvm_triple
    from graphc.codegen.gemm import Blocking

    neon = Blocking.for_dtype("f32", 4, 32)
    assert (neon.mr, neon.nr) == (8, 12) and neon.nc % neon.nr == 0 and neon.mc % neon.mr == 0
    assert (Blocking.for_dtype("f32", 8, 16).mr, Blocking.for_dtype("f32", 8, 16).nr) == (6, 16)
    assert vector_unit("x86-64-v4").isa[-1] == "avx512f" and vector_unit("x86-64").isa == ()


def test_host_vector_unit_from_features_is_the_probes() -> None:
    """vector_unit("native") reads the host's feature list instead of compiling the probe
    (a cold compile's 10-20 ms): it must say what the probe says, here and for feature lists
    of other x86 CPUs."""
    from graphc.codegen import target as T

    if T.host_arch().name != "x86_64":
        pytest.skip("x86 only")
    t = resolve_target(None, "native")
    assert vector_unit(t) == T._x86_unit(*t.llvm_cpu_features())
    avx512 = "+sse4.1,+avx,+avx2,+fma,+avx512f,+evex512"
    for feats in (
        "+sse4.1",
        "+sse4.1,+avx",
        "+sse4.1,+avx,+avx2",
        "+sse4.1,+avx,+avx2,+fma",
        avx512,
    ):
        assert T._x86_unit_of_features(feats) == T._x86_unit("x86-64", feats), feats
    assert T._x86_unit_of_features("+avx2,+avx512f,-evex512") is None  # left to the probe


# ---------------------------------------------------------------------------- aarch64 on qemu


CROSS = {  # triple: (cross gcc, qemu-user program)
    "aarch64-linux-gnu": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "riscv64-linux-gnu": ("riscv64-linux-gnu-gcc", "qemu-riscv64"),
}


def qemu(triple: str, argv: list[str], stdin: Path | None = None, env: dict | None = None):
    """Run a program built for ``triple`` under qemu-user, with the cross C library."""
    with open(stdin) if stdin else open(os.devnull) as f:
        return subprocess.run(
            [shutil.which(CROSS[triple][1]) or CROSS[triple][1], "-L", f"/usr/{triple}", *argv],
            stdin=f,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **(env or {})},
        )


@pytest.fixture(scope="module")
def data():
    import gzip

    with gzip.open(EXAMPLES / "data" / "digits.csv.gz", "rt") as f:
        raw = np.loadtxt(f, delimiter=",", skiprows=1)
    x, y = raw[:, :64], raw[:, 64].astype(np.int32)
    mu, sd = x[:1400].mean(0), x[:1400].std(0) + 1e-6
    return ((x - mu) / sd).astype(np.float32), y


@pytest.fixture(scope="module")
def trained(data):
    x, y = data
    model = digits_model()
    model.fit(x[:640], y[:640], epochs=1, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module", params=list(CROSS))
def cross(request, tmp_path_factory, data, trained):
    """The digits model trained a little on the host, exported for the triple, with the C
    examples and the bad-call program cross-compiled against it."""
    triple = request.param
    gcc, emulator = CROSS[triple]
    if shutil.which(gcc) is None or shutil.which(emulator) is None:
        pytest.skip(f"needs {gcc} and {emulator}")
    x, y = data
    model = trained
    out = tmp_path_factory.mktemp(triple.split("-")[0])
    res = model.export(str(out / "libdigits.so"), target=triple)
    assert res.plan.meta["target"] == triple
    (out / "bad_calls.c").write_text(BAD_CALLS_C)
    progs = {}
    for prog, src in (
        ("predict", EXAMPLES / "c" / "predict.c"),
        ("train", EXAMPLES / "c" / "train.c"),
        ("bad_calls", out / "bad_calls.c"),
    ):
        progs[prog] = build_program(src, out, "digits", out / prog, CFLAGS, cc=gcc, rpath="$ORIGIN")
    rows = out / "rows.txt"
    np.savetxt(rows, x[1400:1500], fmt="%.9g")
    train_rows = out / "train_rows.txt"
    np.savetxt(train_rows, np.hstack([x[:320], y[:320, None]]), fmt="%.9g")
    good = write_damaged_weights(model, out)
    return {"triple": triple, "model": model, "dir": out, "lib": res.library, "progs": progs,
            "rows": rows, "train_rows": train_rows, "weights": str(good)}  # fmt: skip


def test_cross_library_predicts_as_the_host_under_qemu(cross, data):
    x, _ = data
    t = cross["triple"]
    r = qemu(t, [cross["progs"]["predict"]], cross["rows"])
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
    want = cross["model"].predict(x[1400:1500])
    assert got.shape == want.shape == (100, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # threads split the first GEMM's columns; the bits do not change
    r2 = qemu(t, [cross["progs"]["predict"]], cross["rows"], env={"MODEL_THREADS": "3"})
    assert r2.returncode == 0 and r2.stdout == r.stdout
    # 100 rows leave 100 % 8 = 4 of the 8-row tile to the edge tile of 5 rows
    # (codegen.gemm.edge_heights); 98 rows leave 2, the edge tile of 2 rows
    rows98 = cross["dir"] / "rows98.txt"
    np.savetxt(rows98, x[1400:1498], fmt="%.9g")
    r3 = qemu(t, [cross["progs"]["predict"]], rows98)
    assert r3.returncode == 0, r3.stderr
    got = np.array([[float(v) for v in line.split()] for line in r3.stdout.splitlines()])
    np.testing.assert_allclose(got, want[:98], rtol=1e-5, atol=1e-5)


def test_cross_training_steps_match_the_host_losses_under_qemu(cross, data):
    x, y = data
    out = cross["dir"] / "trained.weights"
    r = qemu(
        cross["triple"],
        [cross["progs"]["train"], "100", "32", "0.01", str(out)],
        cross["train_rows"],
    )
    assert r.returncode == 0, r.stderr
    losses = np.array([float(line.split()[3]) for line in r.stdout.splitlines()])
    assert losses.shape == (100,)
    ref = digits_model()
    ref.set_weights(cross["model"].get_weights())
    ref.lr = 0.01
    want = [
        ref.train_step(x[(s * 32 + np.arange(32)) % 320], y[(s * 32 + np.arange(32)) % 320])
        for s in range(100)
    ]
    np.testing.assert_allclose(losses, want, rtol=1e-4, atol=1e-6)
    assert losses[-10:].mean() < 0.7 * losses[:10].mean()


def test_cross_bad_calls_return_their_codes_under_qemu(cross):
    d = cross["dir"]
    r = qemu(
        cross["triple"],
        [
            cross["progs"]["bad_calls"],
            cross["weights"],
            str(d / "truncated.weights"),
            str(d / "corrupt.weights"),
            str(d / "header.weights"),
            str(d / "missing.weights"),
        ],
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checks passed" in r.stdout


@pytest.fixture
def arm(cross):
    if cross["triple"] != "aarch64-linux-gnu":
        pytest.skip("aarch64 only")
    return cross


def neon_fmas(path: str) -> dict[str, int]:
    """Vector FMAs (``fmla vD.4s``) per function of an aarch64 binary's disassembly."""
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump is not installed")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", path], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    counts: dict[str, int] = {}
    fn = ""
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            fn = m.group(1)
        elif re.search(r"\tfmla\s+v\d+\.4s", line):
            counts[fn] = counts.get(fn, 0) + 1
    return counts


@needs_aarch64
def test_aarch64_gemm_is_built_from_neon_vector_fmas(arm):
    counts = neon_fmas(arm["lib"])
    packed = {f: n for f, n in counts.items() if f.startswith("graphc.gemm.ukernel.")}
    assert packed, f"no packed GEMM microkernel with NEON FMAs: {counts}"
    # the 8 x 3-vector register tile: 24 fmla per step of k in every microkernel, plus one
    # step of each edge tile (heights 2 and 5: 3 fmla a row)
    from graphc.codegen.gemm import edge_heights

    edges = 3 * sum(edge_heights(8))
    assert all(n >= 24 + edges and (n - edges) % 24 == 0 for n in packed.values()), packed


@needs_aarch64
def test_aarch64_static_archive_and_object_link_into_a_program(arm, data, tmp_path):
    x, _ = data
    model = arm["model"]
    for kind, name in (("a", "libdigits.a"), ("obj", "digits.o")):
        d = tmp_path / kind
        res = model.export(str(d / name), target="aarch64-linux-gnu", entries="infer")
        assert res.library.endswith(name)
        exe = d / "predict"
        lib = [str(d / name)]
        cmd = [AARCH64_CC, *CFLAGS, f"-I{d}", str(EXAMPLES / "c" / "predict.c"), *lib,
               "-static", "-pthread", "-lm", "-o", str(exe)]  # fmt: skip
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
        r = qemu("aarch64-linux-gnu", [str(exe)], arm["rows"])
        assert r.returncode == 0, r.stderr
        got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
        np.testing.assert_allclose(got, model.predict(x[1400:1500]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- x86-64 CPU levels

INIT_C = r"""
#define GRAPHC_MODEL_ALIASES
#include MODEL_HEADER
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    model_ctx ctx;
    int rc;
    ctx.params_bytes = MODEL_PARAM_BYTES;
    ctx.params = aligned_alloc(64, ((size_t)MODEL_PARAM_BYTES + 63) / 64 * 64);
    ctx.state = NULL;
    ctx.state_bytes = 0;
    ctx.workspace_bytes = 0;
    ctx.workspace = NULL;
    rc = model_init(&ctx);
    printf("init %d: %s\n", rc, model_strerror(rc));
    printf("threads %d\n", (int)model_set_num_threads(2));
    return 0;
}
"""


@pytest.mark.skipif(QEMU_X86 is None, reason="needs qemu-x86_64 (apt-get install qemu-user)")
def test_x86_64_levels_on_a_cpu_without_avx(tmp_path, data):
    """Under qemu-x86_64's default CPU (SSE only): a baseline library runs and matches the
    host; an x86-64-v4 library's init returns ERR_CPU naming AVX-512 (no SIGILL, also at
    unload, when the destructor would stop the workers)."""
    x, _ = data
    model = digits_model(seed=5)
    cc = find_toolchain(resolve_target(None)).cc
    for level in ("x86-64", "x86-64-v4"):
        d = tmp_path / level
        model.export(str(d / "libdigits.so"), target_cpu=level, entries="infer")
        (d / "init.c").write_text(INIT_C)
        for prog, src in (("predict", EXAMPLES / "c" / "predict.c"), ("init", d / "init.c")):
            build_program(src, d, "digits", d / prog, [*CFLAGS, "-std=c11"], cc=cc)
    rows = tmp_path / "rows.txt"
    np.savetxt(rows, x[:50], fmt="%.9g")
    qemu = [QEMU_X86, "-cpu", "qemu64"]
    with open(rows) as f:
        r = subprocess.run([*qemu, str(tmp_path / "x86-64" / "predict")], stdin=f,
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
    np.testing.assert_allclose(got, model.predict(x[:50]), rtol=1e-5, atol=1e-5)
    r = subprocess.run([*qemu, str(tmp_path / "x86-64-v4" / "init")], capture_output=True,
                       text=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr  # not 132 (SIGILL)
    assert r.stdout.splitlines()[0].startswith("init 8: this CPU lacks"), r.stdout
    assert "avx512f" in r.stdout and "x86-64-v4" in r.stdout
    assert r.stdout.splitlines()[1] == "threads 8"  # ERR_CPU: no worker started
    r = subprocess.run([str(tmp_path / "x86-64" / "init")], capture_output=True, text=True,
                       timeout=60, check=False)  # fmt: skip
    assert r.stdout.startswith("init 0: success"), r.stdout


# ---------------------------------------------------------------------------- aarch64/riscv64 extensions

EXTENSION_CASES = [  # triple, --target-cpu, --features, qemu CPU without, with, a name checked
    ("aarch64-linux-gnu", "neoverse-v2", "", "cortex-a53", "max", "sve2"),
    ("riscv64-linux-gnu", None, "+v", "rv64,v=false", "rv64,v=true,vlen=256", "v"),
]


@pytest.mark.parametrize("case", EXTENSION_CASES, ids=[c[0].split("-")[0] for c in EXTENSION_CASES])
def test_extension_libraries_refuse_cpus_without_them_under_qemu(tmp_path, data, case):
    """A library built for SVE2 (neoverse-v2: a CPU name gcc 12 does not know, so the C
    wrappers must not be given it) or RVV (+v): its init returns ERR_CPU naming the extension
    (Linux's hwcap bits, not SIGILL) on a qemu CPU without it, and on one with it predicts what
    the host's model predicts."""
    triple, cpu, features, without, with_, name = case
    gcc, emulator = CROSS[triple]
    if shutil.which(gcc) is None or shutil.which(emulator) is None:
        pytest.skip(f"needs {gcc} and {emulator}")
    x, _ = data
    model = digits_model(seed=7)
    res = model.export(str(tmp_path / "libdigits.so"), target=triple, target_cpu=cpu,
                       features=features, entries="infer")  # fmt: skip
    assert name in res.plan.cpu_checks
    header = (tmp_path / "digits.h").read_text()
    assert re.search(rf'DIGITS_TARGET_EXTENSIONS "[^"]*\b{name}\b', header), header
    (tmp_path / "init.c").write_text(INIT_C)
    for prog, src in (("predict", EXAMPLES / "c" / "predict.c"), ("init", tmp_path / "init.c")):
        flags = [*CFLAGS, "-std=c11"]
        build_program(src, tmp_path, "digits", tmp_path / prog, flags, cc=gcc, rpath="$ORIGIN")
    rows = tmp_path / "rows.txt"
    np.savetxt(rows, x[:20], fmt="%.9g")
    r = qemu(triple, ["-cpu", without, str(tmp_path / "init")])
    assert r.returncode == 0, r.stderr  # not 132 (SIGILL)
    first = r.stdout.splitlines()[0]
    assert first.startswith("init 8: this CPU lacks") and name in first, r.stdout
    assert r.stdout.splitlines()[1] == "threads 8"
    r = qemu(triple, ["-cpu", with_, str(tmp_path / "init")])
    assert r.stdout.startswith("init 0: success"), r.stdout + r.stderr
    r = qemu(triple, ["-cpu", with_, str(tmp_path / "predict")], rows)
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
    np.testing.assert_allclose(got, model.predict(x[:20]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- same-named libraries

TWO_LIBS = textwrap.dedent(
    """
    import ctypes, os, sys, time, _ctypes
    libs = [ctypes.CDLL(p, mode=ctypes.RTLD_GLOBAL) for p in sys.argv[1:3]]
    for lib in libs:
        assert lib.digits_set_num_threads_abi2(3) == 0
    # each library has its own pool: 1 + 2 workers each
    assert [lib.digits_get_num_threads_abi2() for lib in libs] == [3, 3]
    assert len(os.listdir("/proc/self/task")) == 1 + 2 * 2, os.listdir("/proc/self/task")
    handles = [lib._handle for lib in libs]
    del libs
    for h in reversed(handles):  # the second one first: its destructor stops its own workers
        _ctypes.dlclose(h)
    # joined workers leave /proc/self/task a moment after pthread_join returns (the kernel
    # clears the joined thread's tid before it unlinks the task): wait for that, at most 5 s
    end = time.monotonic() + 5
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < end:
        time.sleep(0.001)
    assert len(os.listdir("/proc/self/task")) == 1, os.listdir("/proc/self/task")
    print("ok")
    """
)


def test_two_libraries_with_the_same_model_name_load_and_unload(tmp_path):
    """#13 item 15: with both libraries in the global scope, each one's internal calls (the
    destructor's stop of the workers) reach its own pool, so unloading both is clean."""
    paths = []
    for seed in (1, 2):
        d = tmp_path / f"lib{seed}"
        digits_model(seed=seed).export(str(d / "libdigits.so"), entries="infer")
        paths.append(str(d / "libdigits.so"))
    r = subprocess.run([sys.executable, "-c", TWO_LIBS, *paths], capture_output=True,
                       text=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
    lib = ctypes.CDLL(paths[0])
    assert lib.digits_get_num_threads_abi2() == 1


@pytest.mark.skipif(
    shutil.which("make") is None or AARCH64_CC is None or QEMU_AARCH64 is None,
    reason="needs make, aarch64-linux-gnu-gcc and qemu-aarch64",
)
def test_examples_c_make_target_aarch64_builds_and_runs(tmp_path):
    """examples/c: `make run TARGET=aarch64-linux-gnu` builds the library and both programs for
    aarch64 and runs them under qemu-user (training, then prediction with the trained weights)."""
    if (
        "rows.h" in (EXAMPLES / "c" / "Makefile").read_text()
        and not (EXAMPLES / "c" / "rows.h").exists()
    ):
        pytest.skip("examples/c/rows.h, which the Makefile needs, is missing from the checkout")
    work = tmp_path / "c"
    shutil.copytree(EXAMPLES / "c", work)
    shutil.copy(EXAMPLES / "data_utils.py", tmp_path / "data_utils.py")
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    r = subprocess.run(
        ["make", "run", "TARGET=aarch64-linux-gnu", f"MODEL={EXAMPLES / 'models.py'}:digits",
         f"GRAPHC={sys.executable} -m graphc", f"PYTHON={sys.executable}"],
        cwd=work, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (work / "predict").read_bytes()[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    lines = r.stdout.strip().splitlines()
    assert len(lines[-1].split()) == 10  # a row of the 10 classes' scores


def test_weights_file_states_byte_order_and_field_width(tmp_path):
    """Byte 32 of a weights file is its values' byte order (1: little-endian), byte 33 the bits
    of its size fields (64); a library rejects a file that says otherwise (ERR_WEIGHTS, as
    CheckpointError from gc.load) and accepts the file as written."""
    model = digits_model(seed=4)
    res = model.export(str(tmp_path / "libdigits.so"), entries="infer", weights="file")
    blob = open(res.weights, "rb").read()
    assert blob[:8] == b"GCWEIGHT" and blob[32:34] == bytes([1, 64])
    x = np.linspace(-1, 1, 64 * 3, dtype=np.float32).reshape(3, 64)
    lib = gc.load(res.library, weights=res.weights)
    np.testing.assert_allclose(lib.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)
    for at, value in ((32, 2), (33, 32)):
        bad = bytearray(blob)
        bad[at] = value
        (tmp_path / "bad.weights").write_bytes(bytes(bad))
        with pytest.raises(gc.CheckpointError, match="rejected"):
            gc.load(res.library, weights=str(tmp_path / "bad.weights"))


def test_header_is_the_same_c_for_every_target(tmp_path):
    """The header of an aarch64 library differs from the host's only in the lines that name the
    target (TARGET, TARGET_CPU, TARGET_EXTENSIONS: the host's has AVX or SSE, generic aarch64
    none), and its declarations use fixed-width types only (no long, size_t, intptr_t)."""
    model = digits_model(seed=6)
    texts = []
    for triple in (None, "aarch64-linux-gnu"):
        d = tmp_path / (triple or "host")
        res = model.export(str(d / "libdigits.so"), target=triple, entries="infer")
        texts.append(open(res.header).read())
    a, b = (t.splitlines() for t in texts)
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(a) == len(b) and 2 <= len(diff) <= 3, diff
    assert all(re.search(r"_TARGET(_CPU|_EXTENSIONS)? ", x) for x, _ in diff), diff
    code = re.sub(r"/\*.*?\*/", "", texts[0], flags=re.DOTALL)
    assert not re.search(r"\b(long|size_t|intptr_t|uintptr_t)\b", code)


def test_named_aarch64_core_builds_with_neon_fmas(tmp_path):
    model = digits_model(seed=6)
    res = model.export(str(tmp_path / "d.s"), target="aarch64-linux-gnu",
                       target_cpu="neoverse-n1", entries="infer")  # fmt: skip
    asm = open(res.asm).read()
    assert len(re.findall(r"\tfmla\tv\d+\.4s", asm)) >= 24 and "pause" not in asm


def test_load_of_a_library_for_another_architecture_is_a_clear_error(arm):
    with pytest.raises(gc.ArgumentError, match=r"built for aarch64 .*this machine is x86_64"):
        gc.load(arm["lib"])
