"""Loading exported libraries from files that change (#13 item 2) and weights files that are not
regular files (#13 item 17, the C loader)."""

from __future__ import annotations

import gc as pygc
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from c_build import CC, build_program

import graphc as gc

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) on PATH")


def _mapped(tag: str) -> int:
    with open("/proc/self/maps") as f:
        return sum(tag in line for line in f)


def test_reexported_library_at_the_same_path_serves_the_new_file(tmp_path) -> None:
    x = gc.input("x", ("N", 3))
    m = gc.compile(gc.dense(x, 2, name="d"), name="reload")
    path = str(tmp_path / "libreload.so")
    xs = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)

    def reference() -> np.ndarray:  # float64 numpy of the model's current weights
        w = {k: v.astype(np.float64) for k, v in m.params.items()}
        return xs @ w["d.w"] + w["d.b"]

    m.export(path)
    first = gc.load(path)
    old = reference()
    np.testing.assert_allclose(first.predict(xs), old, rtol=1e-5, atol=1e-6)
    m.params["d.w"][...] *= -2.0
    m.params["d.b"][...] = 3.0
    m.export(path)  # same path, new weights
    second = gc.load(path)
    np.testing.assert_allclose(second.predict(xs), reference(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.predict(xs), old, rtol=1e-5, atol=1e-6)  # its own copy
    if os.path.isdir("/proc/self"):
        assert _mapped("graphc-libreload") > 0
        del first, second
        pygc.collect()
        assert _mapped("graphc-libreload") == 0  # dropped libraries are unloaded


VALGRIND = shutil.which("valgrind")
C_LOADER = r"""
#include <stdio.h>
#include "wf.h"
static unsigned char params[WF_PARAM_BYTES + 64] __attribute__((aligned(64)));
int main(int argc, char **argv) {
    wf_ctx ctx = {0};
    int i;
    ctx.params = params;
    ctx.params_bytes = WF_PARAM_BYTES;
    if (wf_init(&ctx) != WF_OK) return 90;
    for (i = 1; i < argc; i++) printf("%d\n", wf_load_weights(&ctx, argv[i]));
    return 0;
}
"""


def test_c_loader_refuses_fifo_and_directory_weights_paths(tmp_path) -> None:
    """#13 item 17: a FIFO weights path hung NAME_load_weights (fopen blocks until a writer
    comes); a directory gave ERR_WEIGHTS. Both are ERR_IO now; under valgrind when present."""
    import subprocess

    from graphc.codegen.target import host_cpu

    x = gc.input("x", ("N", 3))
    m = gc.compile(gc.dense(x, 2, name="d"), name="wf")
    cpu = "x86-64-v3" if "+avx512f" in host_cpu()[1].split(",") else "native"  # valgrind
    res = m.export(str(tmp_path / "libwf.so"), weights="file", target_cpu=cpu)
    src = tmp_path / "loader.c"
    src.write_text(C_LOADER)
    prog = build_program(src, tmp_path, "wf", tmp_path / "loader", ["-std=c99", "-Wall", "-Werror"])
    fifo = tmp_path / "fifo.weights"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.weights"
    folder.mkdir()
    argv = [str(prog), res.weights, str(fifo), str(folder), str(tmp_path / "missing")]
    if VALGRIND:
        argv = [VALGRIND, "-q", "--leak-check=full", "--error-exitcode=99", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    io = 6  # WF_ERR_IO, as the header says
    assert f"#define WF_ERR_IO {io}" in Path(res.header).read_text()
    assert r.stdout.split() == ["0", str(io), str(io), str(io)]
    lib = gc.load(res.library)
    with pytest.raises(gc.CheckpointError, match="code 6"):
        lib.load_weights(str(folder))
    lib.load_weights(res.weights)
    np.testing.assert_array_equal(lib.params["d.w"], m.params["d.w"])


def test_export_is_all_or_nothing(tmp_path) -> None:
    """#13 item 17: a header that cannot be written used to leave a new .so behind."""
    x = gc.input("x", ("N", 3))
    m = gc.compile(gc.dense(x, 2, name="d"), name="aon")
    lib = tmp_path / "libaon.so"
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the header's folder should be")
    with pytest.raises(gc.ArgumentError, match="nothing was written"):
        m.export(str(lib), header=str(blocker / "aon.h"))
    assert not lib.exists() and sorted(p.name for p in tmp_path.iterdir()) == [blocker.name]
    res = m.export(str(lib))  # a good export, then a failing one leaves it as it was
    before = lib.read_bytes(), Path(res.header).read_bytes()
    m.params["d.b"][...] = 7.0
    with pytest.raises(gc.ArgumentError):
        m.export(str(lib), header=str(blocker / "aon.h"), weights="file")
    assert (lib.read_bytes(), Path(res.header).read_bytes()) == before
    assert not (tmp_path / "aon.weights").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    xs = np.ones((2, 3), np.float32)
    w = {k: v.astype(np.float64) for k, v in m.params.items()}
    np.testing.assert_allclose(
        gc.load(str(lib)).predict(xs), xs @ w["d.w"], rtol=1e-5, atol=1e-6
    )  # the old library: bias 0


def test_damaged_library_files_are_refused_before_dlopen(tmp_path) -> None:
    """A truncated or changed copy of an exported library (an interrupted copy or download, a
    bad disk) raises ArgumentError naming the file; the dynamic loader would map what its
    headers name and end the process (SIGBUS), or run changed code or weights."""
    x = gc.input("x", ("N", 3))
    m = gc.compile(gc.dense(gc.relu(gc.dense(x, 8, name="h")), 2, name="d"), name="dmg")
    path = tmp_path / "libdmg.so"
    m.export(str(path))
    good = path.read_bytes()
    xs = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(gc.load(str(path)).predict(xs), m.predict(xs))
    w = good.find(m.params["h.w"].tobytes())  # the embedded weights
    assert w > 0
    text_at = good.find(b"\x7fELF") + 0x1000 + 64  # inside the first executable page
    cases = {
        "empty": b"",
        "header only": good[:64],
        "third": good[: len(good) // 3],
        "no section table": good[: len(good) - 2000],
        "flipped code": good[:text_at] + bytes([good[text_at] ^ 0x40]) + good[text_at + 1 :],
        "flipped weight": good[:w] + bytes([good[w] ^ 1]) + good[w + 1 :],
        "bad phoff": good[:32] + (10**9).to_bytes(8, "little") + good[40:],
    }
    for what, data in cases.items():
        bad = tmp_path / f"libdmg_{len(data)}_{abs(hash(what)) % 997}.so"
        bad.write_bytes(data)
        with pytest.raises(gc.ArgumentError, match=str(bad.name)):
            gc.load(str(bad), name="dmg")
    # without graphc's trailer (stripped), the embedded weights' own CRC-32 still catches it
    from graphc.codegen.elf import CHECKSUM_BYTES

    stripped = good[:-CHECKSUM_BYTES]
    (tmp_path / "libst.so").write_bytes(stripped)
    np.testing.assert_array_equal(
        gc.load(str(tmp_path / "libst.so"), name="dmg").predict(xs), m.predict(xs)
    )
    (tmp_path / "libstw.so").write_bytes(
        stripped[:w] + bytes([stripped[w] ^ 1]) + stripped[w + 1 :]
    )
    with pytest.raises(gc.ArgumentError, match="CRC-32"):
        gc.load(str(tmp_path / "libstw.so"), name="dmg")


def test_file_weights_library_refuses_to_run_on_zero_params(tmp_path) -> None:
    """A library exported with weights="file" and loaded without its weights predicted zeros
    (its params start at zero) without a word: predict and train_step now raise
    CheckpointError, nothing written, until weights are loaded or written into params; then
    the outputs equal the model's (numpy float64 reference)."""
    x = gc.input("x", ("N", 3))
    y = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(x, 2, name="d")
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y), gc.SGD(lr=0.1), name="zw")
    m.initialize(seed=1)
    res = m.export(str(tmp_path / "libzw.so"), weights="file")
    xs = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    labels = np.array([0, 1, 1, 0], np.int32)
    w, b = m.params["d.w"].astype(np.float64), m.params["d.b"].astype(np.float64)
    want = xs.astype(np.float64) @ w + b

    lib = gc.load(res.library)
    for call in (lambda: lib.predict(xs), lambda: lib.train_step(xs, labels)):
        with pytest.raises(gc.CheckpointError, match=r"weights='file'.*no weights were loaded"):
            call()
    assert not np.any(lib.params["d.w"])  # nothing written by the refused calls
    lib.load_weights(res.weights)
    np.testing.assert_allclose(lib.predict(xs), want, rtol=1e-5, atol=1e-6)

    other = gc.load(res.library)  # weights written into params by hand count as given
    other.params["d.w"][...] = m.params["d.w"]
    other.params["d.b"][...] = m.params["d.b"]
    np.testing.assert_allclose(other.predict(xs), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        gc.load(res.library, weights=res.weights).predict(xs), want, rtol=1e-5, atol=1e-6
    )


def test_a_library_of_abi_1_still_loads_and_a_later_one_is_refused(tmp_path, monkeypatch) -> None:
    """graphc before 446dcc8 exported C ABI 1: NAME_infer etc. without the version in their
    names. Its prototypes equal version 2's for float outputs (the meta gives any other output's
    dtype), so gc.load calls a version-1 library by the plain names (review rvG 1); only a
    version this graphc cannot read (a later one) is refused, naming both. The ABI-1 library is
    made by this graphc exporting at version 1 (symbols and meta as graphc@a883aa2 wrote)."""
    import ctypes

    x, t = gc.input("x", ("N", 4)), gc.input("t", ("N", 2))
    o = gc.dense(x, 2, name="fc")
    m = gc.compile(o, gc.mean_squared_error(o, t), gc.SGD(lr=0.1), name="old")
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((5, 4)).astype(np.float32)
    ts = rng.standard_normal((5, 2)).astype(np.float32)
    w = {k: v.astype(np.float64) for k, v in m.params.items()}
    path = str(tmp_path / "libold.so")
    with monkeypatch.context() as patch:
        patch.setattr("graphc.codegen.aot.ABI_VERSION", 1)
        m.export(path)
    lib = ctypes.CDLL(path)  # what an ABI-1 library exports
    assert hasattr(lib, "old_infer") and hasattr(lib, "old_train_step")
    assert not hasattr(lib, "old_infer_abi2")
    old = gc.load(path)
    assert old.meta["graphc_abi"] == 1
    y = xs @ w["fc.w"] + w["fc.b"]  # numpy float64: predict, then one SGD step's loss
    np.testing.assert_allclose(old.predict(xs), y, rtol=1e-5, atol=1e-6)
    loss = old.train_step(xs, ts)
    np.testing.assert_allclose(loss, np.mean((y - ts) ** 2), rtol=1e-5)
    grad_w = xs.T.astype(np.float64) @ (2 * (y - ts) / y.size)
    np.testing.assert_allclose(old.params["fc.w"], w["fc.w"] - 0.1 * grad_w, rtol=1e-5, atol=1e-6)
    old.threads = 2
    assert old.threads == 2
    later = str(tmp_path / "liblater.so")
    with monkeypatch.context() as patch:  # a library of a later graphc: names it and this one's
        patch.setattr("graphc.codegen.aot.ABI_VERSION", 3)
        m.export(later)
    with pytest.raises(
        gc.ArgumentError, match="C ABI version 3 and this graphc reads versions 1 to 2"
    ):
        gc.load(later)


def test_split_entries_of_a_loss_that_is_no_row_mean_export_for_one_process(tmp_path) -> None:
    """A sum over rows (or RMSE) cannot train data-parallel, but in one process the library's
    train_grads (loss_scale 1) then apply_update is train_step, as at e68b2fc: the export is
    kept, with a SplitEntriesWarning naming the loss's node (review rvG 2; 169f0d4 refused
    it). Checked against numpy float64: the sum loss and one SGD step; batch_norm's split
    entries stay refused (wrong in one process too: tests/test_runtime_hardening.py)."""
    import ctypes

    from graphc.codegen.aot import abi_symbol
    from graphc.export import SplitEntriesWarning

    x, t = gc.input("x", ("N", 4)), gc.input("t", ("N", 2))
    o = gc.dense(x, 2, name="fc")
    m = gc.compile(o, gc.sum(gc.square(o - t)), gc.SGD(lr=0.05), name="sumloss")
    path = str(tmp_path / "libsumloss.so")
    with pytest.warns(SplitEntriesWarning, match=r"train_grads and apply_update.*\(sum '"):
        m.export(path, entries="infer,train_grads,apply_update")
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((6, 4)).astype(np.float32)
    ts = rng.standard_normal((6, 2)).astype(np.float32)
    w = {k: v.astype(np.float64) for k, v in m.params.items()}
    lib = gc.load(path)
    lib._workspace(len(xs))
    fp, i64 = ctypes.POINTER(ctypes.c_float), ctypes.c_int64
    grads = lib._lib[abi_symbol("sumloss", "train_grads")]
    grads.argtypes = [ctypes.c_void_p, i64, fp, i64, fp, i64, ctypes.c_float, i64, fp]
    update = lib._lib[abi_symbol("sumloss", "apply_update")]
    update.argtypes = [ctypes.c_void_p, ctypes.c_float]
    loss = ctypes.c_float()
    rc = grads(lib._ctxp, 6, xs.ctypes.data_as(fp), xs.size, ts.ctypes.data_as(fp), ts.size,
               1.0, 0, ctypes.byref(loss))  # fmt: skip
    assert rc == 0 and update(lib._ctxp, 0.05) == 0
    y = xs @ w["fc.w"] + w["fc.b"]
    np.testing.assert_allclose(loss.value, np.sum((y - ts) ** 2), rtol=1e-5)
    want = w["fc.w"] - 0.05 * xs.T.astype(np.float64) @ (2 * (y - ts))
    np.testing.assert_allclose(lib.params["fc.w"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lib.params["fc.b"], w["fc.b"] - 0.05 * 2 * (y - ts).sum(0),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
