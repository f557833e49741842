"""A new user's first day (issue 18): CLI conveniences, the cache's place and size, Keras names,
packaging facts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc import cache
from graphc.cli import main
from graphc.ir.errors import ArgumentError

ROOT = Path(__file__).resolve().parents[1]


def tiny_model_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "m.py"
    p.write_text("import graphc as gc\n" + body)
    return p


def test_version_flag_prints_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"graphc {gc.__version__}"


def test_learning_rate_is_kerass_name_for_lr() -> None:
    for opt, want in (
        (gc.SGD(learning_rate=0.5), 0.5),
        (gc.Adam(learning_rate=0.02), 0.02),
        (gc.Adagrad(learning_rate=0.3), 0.3),
        (gc.RMSprop(learning_rate=0.004), 0.004),
    ):
        assert opt.lr == want
    assert gc.SGD(0.1, 0.9).momentum == 0.9  # positional order unchanged
    with pytest.raises(gc.GraphcError, match="lr must be a finite number >= 0"):
        gc.Adam(learning_rate=-1.0)


def test_one_sgd_step_with_learning_rate_follows_the_formula() -> None:
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ("N", 1))
    w = gc.param("w", (3, 1))
    y = gc.matmul(x, w)
    loss = gc.mean_squared_error(y, t)
    m = gc.compile(y, loss, gc.SGD(learning_rate=0.25), name="lr_alias")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 3)).astype(np.float32)
    ts = rng.standard_normal((4, 1)).astype(np.float32)
    w0 = m.params["w"].astype(np.float64).copy()
    m.train_step(xs, ts)
    # d/dw mean((xw - t)^2) = 2/N x^T (xw - t)
    grad = 2.0 / 4 * xs.T.astype(np.float64) @ (xs.astype(np.float64) @ w0 - ts)
    np.testing.assert_allclose(m.params["w"], w0 - 0.25 * grad, rtol=1e-5, atol=1e-6)


def test_fit_history_has_kerass_history_dict() -> None:
    x = gc.input("x", ("N", 2))
    t = gc.input("t", ("N", 1))
    y = gc.dense(x, 1)
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.1), name="hist")
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((16, 2)).astype(np.float32)
    h = m.fit(xs, xs[:, :1].copy(), epochs=3, batch_size=8, verbose=0)
    assert set(h.history) >= {"loss"} and len(h.history["loss"]) == 3
    assert h.history["loss"] == h["loss"]


def test_cache_folder_follows_xdg_cache_home(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GRAPHC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "graphc"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the spec: only absolute paths
    assert cache.cache_dir() == Path.home() / ".cache" / "graphc"
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "own"))
    assert cache.cache_dir() == tmp_path / "own"


def test_cache_evicts_least_recently_used_entries_to_its_bound(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    now = time.time()
    for i in range(5):  # entry i last used i minutes ago: 4 is the oldest
        p = tmp_path / f"{i:064x}.o"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - 60 * i, now - 60 * i))
    assert cache.evict(limit=2500) == 3
    assert sorted(p.name[-3:] for p in tmp_path.iterdir()) == ["0.o", "1.o"]
    cache.touch(tmp_path / f"{1:064x}.o")  # 1 is now the most recent: 0 goes first
    os.utime(tmp_path / f"{0:064x}.o", (now - 600, now - 600))
    assert cache.evict(limit=1000) == 1
    assert [p.name[-3:] for p in tmp_path.iterdir()] == ["1.o"]


def test_cache_info_and_clear_commands(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", "1")
    (tmp_path / ("a" * 64 + ".o")).write_bytes(b"y" * 2000)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "entries: 1" in out and "at most 1 MB" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 files" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_compile_takes_dash_O_and_names_the_header_after_the_library(tmp_path, capsys) -> None:
    spec = tiny_model_file(
        tmp_path, "x = gc.input('x', ('N', 3))\ny = gc.dense(x, 2, activation='relu')\n"
    )
    out = tmp_path / "lib" / "mynet.so"
    out.parent.mkdir()
    assert main(["compile", f"{spec}:y", "-O", "1", "-o", str(out)]) == 0
    assert out.is_file() and (tmp_path / "lib" / "mynet.h").is_file()
    assert not (tmp_path / "lib" / "y.h").exists()
    assert f"header: {tmp_path / 'lib' / 'mynet.h'}" in capsys.readouterr().out


def test_header_default_strips_lib_and_suffix() -> None:
    from graphc.export import header_path_for

    assert header_path_for("/a/libdigits.so").endswith("/a/digits.h")
    assert header_path_for("/a/x.so").endswith("/a/x.h")
    assert header_path_for("/a/lib.so").endswith("/a/lib.h")


def test_dump_output_creates_its_folder_and_says_what_it_wrote(tmp_path, capsys) -> None:
    spec = tiny_model_file(tmp_path, "x = gc.input('x', ('N', 3))\ny = gc.tanh(x)\n")
    dest = tmp_path / "new" / "deeper" / "fwd.txt"
    assert main(["dump", f"{spec}:y", "--stage", "forward", "-o", str(dest)]) == 0
    assert "tanh" in dest.read_text()
    assert f"wrote {dest}" in capsys.readouterr().err


def test_dump_does_not_call_a_model_function_with_required_arguments(tmp_path) -> None:
    marker = tmp_path / "ran"
    spec = tiny_model_file(
        tmp_path, f"def main(argv):\n    open({str(marker)!r}, 'w').write('ran')\n"
    )
    with pytest.raises(ArgumentError, match=r"main\(argv\) takes required arguments"):
        from graphc.modelspec import resolve

        resolve(f"{spec}:main")
    assert not marker.exists()
    assert main(["dump", f"{spec}:main"]) == 2


def test_dump_refuses_a_model_function_returning_something_else(tmp_path, capsys) -> None:
    spec = tiny_model_file(tmp_path, "def build():\n    return 42\n")
    assert main(["dump", f"{spec}:build"]) == 2
    assert "build gave a int" in capsys.readouterr().err


def test_dump_refuses_a_class(tmp_path, capsys) -> None:
    spec = tiny_model_file(tmp_path, "class Trainer:\n    pass\n")
    assert main(["dump", f"{spec}:Trainer"]) == 2
    assert "not a MODEL function" in capsys.readouterr().err


def test_import_graphc_defers_networkx() -> None:
    code = "import sys, graphc; print('networkx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_package_ships_license_and_py_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("graphc").joinpath("py.typed").is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_package_license_is_an_spdx_expression() -> None:
    """pyproject.toml declares its license the PEP 639 way (an SPDX string and license-files):
    setuptools deprecated the ``{ text = ... }`` table and stops building it after 2027-02-18."""
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert meta["project"]["license-files"] == ["LICENSE"]
    assert "setuptools>=77" in meta["build-system"]["requires"]


def test_every_shipped_folder_is_a_listed_package() -> None:
    """Each folder under a mapped package folder (code or data, such as codegen/templates) is in
    pyproject's ``packages``: setuptools warns "Package would be ignored" for one that is not."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    for pkg, folder in tool["package-dir"].items():
        for sub in sorted((ROOT / folder).iterdir()):
            if sub.is_dir() and sub.name != "__pycache__" and any(sub.iterdir()):
                name = f"{pkg}.{sub.name}"
                assert name in listed or any(
                    f == str(sub.relative_to(ROOT)) for f in tool["package-dir"].values()
                ), name


def test_compile_works_without_llvmlites_private_api(monkeypatch) -> None:
    from graphc.codegen import llvm_private

    monkeypatch.setattr(llvm_private, "private_api_usable", lambda: False)
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    x = gc.input("x", ("N", 4))
    m = gc.compile(gc.sigmoid(x), name="public_api_only")
    xs = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(m.predict(xs), 1 / (1 + np.exp(-xs.astype(np.float64))), rtol=1e-6)


def small_fit_model(name: str):
    x = gc.input("x", ("N", 2))
    t = gc.input("t", ("N", 1))
    y = gc.dense(x, 1)
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.1), name=name)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((32, 2)).astype(np.float32)
    return m, xs, (xs[:, :1] - 2 * xs[:, 1:]).copy()


def test_csv_logger_writes_one_row_per_epoch_with_the_history(tmp_path) -> None:
    import csv

    m, xs, ts = small_fit_model("csvlog")
    path = tmp_path / "log.csv"
    h = m.fit(xs, ts, epochs=4, batch_size=8, verbose=0, callbacks=[gc.CSVLogger(str(path))])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["loss"]) for r in rows] == h.history["loss"]  # repr round-trips exactly
    m.fit(
        xs, ts, epochs=2, batch_size=8, verbose=0, callbacks=[gc.CSVLogger(str(path), append=True)]
    )
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 4 + 2 and lines[0].startswith("epoch,")


def read_tfrecords(path: Path) -> list[bytes]:
    """The records of a TFRecord file (length, crc, data, crc), read independently of the
    writer; CRCs are not checked here."""
    import struct

    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        out.append(data[pos + 12 : pos + 12 + n])
        pos += 12 + n + 4
    return out


def test_tensorboard_callback_writes_the_epoch_scalars(tmp_path) -> None:
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    m, xs, ts = small_fit_model("tblog")
    h = m.fit(xs, ts, epochs=3, batch_size=8, verbose=0, callbacks=[gc.TensorBoard(tmp_path)])
    files = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 1
    got: dict[str, list[tuple[int, float]]] = {}
    for rec in read_tfrecords(files[0]):
        ev = Event.FromString(rec)
        for v in ev.summary.value:
            got.setdefault(v.tag, []).append((ev.step, v.simple_value))
    assert [s for s, _ in got["epoch_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in got["epoch_loss"]], h.history["loss"], rtol=1e-6)


def digits_like(name: str = "sumnet"):
    x = gc.input("x", ("N", 64))
    labels = gc.input("labels", ("N",), dtype="i32")
    h = gc.dense(x, 32, activation="relu")
    logits = gc.dense(h, 10)
    return gc.compile(logits, gc.softmax_cross_entropy(logits, labels), gc.Adam(3e-3), name=name)


def test_summary_counts_parameters_and_flops_by_hand() -> None:
    m = digits_like()
    text = m.summary(print_fn=None)
    # 64*32 + 32 and 32*10 + 10 parameter values; matmul FLOPs 2*K*M per row plus one per
    # element for the bias add (and relu in the first kernel)
    assert "2,080" in text and "330" in text and "Parameters: 2,410" in text
    assert f"FLOPs per row (inference): {2 * 64 * 32 + 32 + 32 + 2 * 32 * 10 + 10:,}" in text
    assert "f32[N,32]" in text and "f32[N,10]" in text and "Arena of train_step" in text
    assert "Optimizer: Adam, state 4,821 values" in text  # m and v per param value + step


def test_repr_names_inputs_outputs_parameters_and_optimizer() -> None:
    r = repr(digits_like("reprnet"))
    assert r.startswith("<graphc.Model 'reprnet' (x: f32[N,64]) -> f32[N,10]; 2,410 parameters")
    assert "Adam(lr=0.003" in r


def test_repr_svg_of_models_and_graphs_is_svg_that_parses() -> None:
    import shutil
    import xml.etree.ElementTree as ET

    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed (.ci/run installs it)")
    m = digits_like("svgnet")
    for svg in (m._repr_svg_(), m.program.forward._repr_svg_()):
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
    assert "matmul" in m._repr_svg_()


def test_repr_svg_without_graphviz_falls_back_to_text(monkeypatch) -> None:
    import shutil
    import sys

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "graphviz", None)  # the package "not installed"
    m = digits_like("nosvg")
    assert m._repr_svg_() is None and repr(m).startswith("<graphc.Model")


def test_normalization_standardizes_inside_the_graph_like_numpy() -> None:
    rng = np.random.default_rng(3)
    raw = rng.normal(5.0, 3.0, (200, 4))
    raw[:, 2] = 7.0  # a constant feature: centred, not scaled (StandardScaler's rule)
    x = gc.input("x", ("N", 4))
    norm = gc.Normalization(name="feat").adapt(raw)
    m = gc.compile(norm(x), name="normonly")
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    want = (raw - mean) / np.where(std > 0, std, 1.0)
    got = m.predict(raw.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert set(m.params) == {"feat.mean", "feat.inv_std"}


def test_constants_are_not_trained_and_travel_with_the_library(tmp_path) -> None:
    rng = np.random.default_rng(4)
    raw = rng.normal(100.0, 20.0, (64, 3)).astype(np.float32)
    t = (raw @ np.array([[0.5], [-0.2], [0.1]], np.float32) / 20.0).astype(np.float32)
    x = gc.input("x", ("N", 3))
    target = gc.input("t", ("N", 1))
    norm = gc.Normalization(name="pre").adapt(raw)
    y = gc.dense(norm(x), 1, name="out")
    m = gc.compile(y, gc.mean_squared_error(y, target), gc.SGD(0.1), name="withconst")
    before = {k: m.params[k].copy() for k in ("pre.mean", "pre.inv_std")}
    m.fit(raw, t, epochs=3, batch_size=16, verbose=0)
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)  # never updated
    np.testing.assert_allclose(m.params["pre.mean"], raw.astype(np.float64).mean(0), rtol=1e-6)
    m.export(str(tmp_path / "libwithconst.so"))
    header = (tmp_path / "withconst.h").read_text()
    assert "pre.mean : f32[3]" in header and "pre.inv_std : f32[3]" in header
    lib = gc.load(str(tmp_path / "libwithconst.so"))
    np.testing.assert_allclose(lib.predict(raw), m.predict(raw), rtol=1e-6, atol=1e-6)


def test_constant_names_are_the_same_in_every_build_and_param_can_be_frozen() -> None:
    a = gc.constant([[1.0, 2.0]])
    b = gc.constant(np.array([[1.0, 2.0]]))
    assert a.name == b.name and a.name.startswith("constant_")
    assert gc.constant([1.0, 2.0]).name != a.name  # the shape is part of the digest
    w = gc.param("frozen", (2, 2), trainable=False)
    x = gc.input("x", ("N", 2))
    t = gc.input("t", ("N", 2))
    y = gc.matmul(x, w) + gc.param("bias", (2,), init="zeros")
    m = gc.compile(y, gc.mean_squared_error(y, t), gc.SGD(0.5), name="frozen")
    w0 = m.params["frozen"].copy()
    m.train_step(np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(m.params["frozen"], w0)
    assert np.any(m.params["bias"] != 0)
    with pytest.raises(gc.GraphcError, match="NaN or infinity"):
        gc.constant([1.0, np.inf])
    with pytest.raises(gc.GraphcError, match="adapt"):
        gc.Normalization()(x)
    with pytest.raises(gc.ShapeError, match="has 2 features"):
        gc.Normalization(mean=[0, 0, 0], variance=[1, 1, 1])(x)


def test_save_model_and_load_model_need_no_python_source(tmp_path) -> None:
    rng = np.random.default_rng(5)
    xs = (rng.random((60, 4)) * 10).astype(np.float32)
    ys = rng.integers(0, 3, 60).astype(np.int32)
    x = gc.input("x", ("N", 4))
    labels = gc.input("labels", ("N",), dtype="i32")
    norm = gc.Normalization(name="n").adapt(xs)
    h = gc.dropout(gc.dense(norm(x), 8, "relu", name="h"), 0.2)
    logits = gc.dense(h, 3, name="o")
    opt = gc.Adam(learning_rate=0.01, betas=(0.8, 0.99))
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, labels), opt, name="saved")
    m.fit(xs, ys, epochs=2, batch_size=16, verbose=0)
    path = m.save_model(str(tmp_path / "net.gcm"))
    # a fresh process: no Python declares the network there
    code = (
        "import sys, numpy as np, graphc as gc\n"
        "m = gc.load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2]); y = np.load(sys.argv[3])\n"
        "np.save(sys.argv[4], m.predict(x))\n"
        "m.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=7)\n"
        "np.save(sys.argv[5], m.predict(x))\n"
        "print(m.optimizer)\n"
    )
    np.save(tmp_path / "x.npy", xs)
    np.save(tmp_path / "y.npy", ys)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            path,
            *(str(tmp_path / f) for f in ("x.npy", "y.npy", "p0.npy", "p1.npy")),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "betas=(0.8, 0.99)" in out.stdout and "lr=0.01" in out.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "p0.npy"), m.predict(xs))
    m.fit(xs, ys, epochs=1, batch_size=16, verbose=0, seed=7)  # the same trajectory, dropout too
    np.testing.assert_array_equal(np.load(tmp_path / "p1.npy"), m.predict(xs))


def test_model_files_go_through_the_cli_and_refuse_plain_checkpoints(tmp_path, capsys) -> None:
    m = digits_like("filenet")
    gcm = m.save_model(str(tmp_path / "filenet.gcm"))
    assert main(["compile", gcm, "-o", str(tmp_path / "libfilenet.so")]) == 0
    lib = gc.load(str(tmp_path / "libfilenet.so"))
    xs = np.random.default_rng(6).standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_allclose(lib.predict(xs), m.predict(xs), rtol=1e-6, atol=1e-6)
    assert main(["dump", gcm, "--stage", "forward"]) == 0
    assert "softmax_cross_entropy" in capsys.readouterr().out
    ckpt = m.save(str(tmp_path / "plain.npz"))
    with pytest.raises(gc.CheckpointError, match="without a model description"):
        gc.load_model(ckpt)
    (tmp_path / "junk.gcm").write_bytes(b"not a zip")
    with pytest.raises(gc.CheckpointError, match=r"^model file .*junk.gcm.* corrupted"):
        gc.load_model(str(tmp_path / "junk.gcm"))
    with pytest.raises(gc.CheckpointError, match=r"^model file .*absent.gcm.* does not exist"):
        gc.load_model(str(tmp_path / "absent.gcm"))


def test_c_predict_reads_one_row_per_line_and_names_a_bad_line(tmp_path) -> None:
    from c_build import CC, build_program

    if CC is None:
        pytest.skip("no C compiler")
    m = digits_like("digits")
    m.export(str(tmp_path / "libdigits.so"))
    flags = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", '-DMODEL_HEADER="digits.h"']
    src = ROOT / "examples" / "c" / "predict.c"
    exe = build_program(src, tmp_path, "digits", tmp_path / "predict", flags)
    rng = np.random.default_rng(8)
    xs = rng.standard_normal((3, 64)).astype(np.float32)
    good = "# a comment\n" + "\n".join(",".join(f"{v:.9g}" for v in r) for r in xs) + "\n\n"
    r = subprocess.run([exe], input=good, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in line.split()] for line in r.stdout.splitlines()])
    np.testing.assert_allclose(got, m.predict(xs), rtol=1e-5, atol=1e-5)
    lines = good.splitlines()
    lines[2] = " ".join(lines[2].split(",")[:63])  # row 2 (file line 3) loses a number
    r = subprocess.run([exe], input="\n".join(lines), capture_output=True, text=True)
    assert r.returncode == 1 and "line 3: 63 numbers, expected 64" in r.stderr
    lines[2] = lines[3] + " 1.5"  # one too many: never carried over into the next row
    r = subprocess.run([exe], input="\n".join(lines), capture_output=True, text=True)
    assert r.returncode == 1 and "line 3: more than 64 numbers" in r.stderr
    r = subprocess.run([exe], input="1 2 x 4\n", capture_output=True, text=True)
    assert r.returncode == 1 and "line 1: not a number at column 5" in r.stderr
    # train.c: a label that is not a class id 0..9 is refused by row before any step (the
    # library's ERR_LABEL catches 12 and -1 too, but sees 3.5 only as the int 3)
    train = build_program(src.with_name("train.c"), tmp_path, "digits", tmp_path / "train", flags)
    feats = " ".join(f"{v:.9g}" for v in xs[0])
    for label, ok in (("3", True), ("12", False), ("3.5", False), ("-1", False)):
        rows = f"{feats} 1\n{feats} {label}\n"
        r = subprocess.run(
            [train, "1", "2"], input=rows, capture_output=True, text=True, check=False
        )
        if ok:
            assert r.returncode == 0 and r.stdout.startswith("step 0 loss "), r.stderr
        else:
            assert r.returncode == 1 and r.stdout == "", r.stdout
            assert f"row 2: label {label} is not a class id 0..9" in r.stderr


def test_make_rows_writes_raw_digits_rows(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "c" / "make_rows.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "digits_rows.txt" in out.stdout
    rows = np.loadtxt(tmp_path / "digits_rows.txt")
    train = np.loadtxt(tmp_path / "digits_train.txt")
    assert rows.shape[1] == 64 and train.shape[1] == 65
    assert rows.min() >= 0 and rows.max() <= 16 and len(rows) + len(train) == 1797
    assert set(np.unique(train[:, 64])) <= set(range(10))


def test_one_hot_labels_to_a_sparse_loss_get_a_hint(tmp_path) -> None:
    m = digits_like("hint")
    xs = np.zeros((4, 64), np.float32)
    onehot = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    for call in (lambda: m.fit(xs, onehot, epochs=1, verbose=0), lambda: m.evaluate(xs, onehot)):
        with pytest.raises(gc.ArgumentError, match=r"one-hot labels, 10 columns.*argmax"):
            call()
    with pytest.raises(gc.ArgumentError, match="one-hot"):
        m.train_step(xs, onehot.astype(np.int32))
    m.export(str(tmp_path / "libhint.so"))
    with pytest.raises(gc.ArgumentError, match="one-hot"):
        gc.load(str(tmp_path / "libhint.so")).train_step(xs, onehot.astype(np.int32))


def test_fit_interruption_is_logged_not_printed(caplog, capsys) -> None:
    m, xs, ts = small_fit_model("interrupted")

    class Stop(gc.callbacks.Callback):
        def on_epoch_end(self, model, epoch, figures):
            raise KeyboardInterrupt

    with caplog.at_level("WARNING", logger="graphc"):
        h = m.fit(xs, ts, epochs=3, batch_size=8, verbose=0, callbacks=[Stop()])
    assert h.interrupted
    assert any("interrupted" in r.getMessage() for r in caplog.records)
    assert "interrupted" not in capsys.readouterr().err


def test_the_default_optimizer_is_adam_with_torchs_defaults() -> None:
    x = gc.input("x", ("N", 2))
    t = gc.input("t", ("N", 1))
    y = gc.dense(x, 1, name="d")
    m = gc.compile(y, gc.mean_squared_error(y, t), name="default_opt")
    assert isinstance(m.optimizer, gc.Adam) and m.lr == 1e-3
    assert (m.optimizer.betas, m.optimizer.eps) == ((0.9, 0.999), 1e-8)
    # one step against the documented first Adam step: p - lr * g / (|g| + eps) = p - lr*sign(g)
    xs = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
    ts = np.array([[0.5], [-0.5]], np.float32)
    w0, b0 = m.params["d.w"].astype(np.float64), m.params["d.b"].astype(np.float64)
    r = xs @ w0 + b0 - ts
    gw, gb = 2 / 2 * xs.T @ r, 2 / 2 * r.sum(0)
    m.train_step(xs, ts)
    np.testing.assert_allclose(m.params["d.w"], w0 - 1e-3 * gw / (np.abs(gw) + 1e-8), atol=1e-6)
    np.testing.assert_allclose(m.params["d.b"], b0 - 1e-3 * gb / (np.abs(gb) + 1e-8), atol=1e-6)
    assert "Adam(lr=0.001" in repr(m) and "Adam()" in gc.compile.__doc__


def test_readme_commands_write_nothing_into_the_repository_root() -> None:
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    outputs = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0]
            if not line.strip().startswith(("graphc", "python")) or "examples/" not in line:
                continue  # only commands a reader can run as written, on the repository's files
            words = shlex.split(line)
            for flag in ("-o", "--output", "--dump-dir", "--out", "--header"):
                outputs += [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]
    assert outputs, "the README names no output paths any more: update this test"
    for path in outputs:
        assert path.startswith(("examples/out", "/tmp", "$")), f"README writes {path} in the root"


def test_readme_kernel_and_arena_figures_are_what_graphc_dump_prints(capsys) -> None:
    """The README's -O0/-O2 figures for the digits training step (kernels, arena bytes at batch
    32) against `graphc dump --stage scheduled`: a pass that changes them must update the text."""
    import re

    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(
        r"(\d+) kernels and a ([\d,]+)-byte arena at batch 32 with `-O0`; (\d+) kernels and "
        r"([\d,]+) bytes with `-O2`",
        text,
    )
    assert m, "the README's optimization-level figures moved: update this test"
    for level, kernels, arena in (("0", m[1], m[2]), ("2", m[3], m[4])):
        spec = str(ROOT / "examples" / "models.py") + ":digits"
        assert main(["dump", spec, "-O", level, "--stage", "scheduled", "--batch", "32"]) in (
            0,
            None,
        )
        out = capsys.readouterr().out
        got_k = re.search(r"# scheduled graph digits: (\d+) kernels", out)[1]
        got_a = re.search(r"# arena: peak .*? = (\d+) B at N=32", out)[1]
        assert (got_k, got_a) == (kernels, arena.replace(",", "")), f"-O{level}"


def test_readme_and_dump_help_name_every_pass_stage() -> None:
    """`graphc dump --stage` takes one stage per pass of -O2; the README's and docs/ir.md's lists
    of stages and `graphc dump --help`'s text must name each (fuse_update_epilogue was missing)."""
    import graphc.dump
    from graphc.ir.passes.pipeline import PASS_NAMES

    readme = " ".join((ROOT / "README.md").read_text().split())
    stages = readme[readme.index("Stages: `forward`") :].split("Formats:")[0]
    helptext = " ".join(graphc.dump.__doc__.split())
    ir_md = " ".join((ROOT / "docs" / "ir.md").read_text().split())
    ir_stages = ir_md[ir_md.index("Stages, in pipeline order") :].split("`scheduled`")[0]
    for name in PASS_NAMES:
        assert f"`{name}`" in stages, f"README's stage list lacks {name}"
        assert f"`{name}`" in ir_stages, f"docs/ir.md's stage list lacks {name}"
        assert f"``{name}``" in helptext, f"graphc dump --help lacks {name}"


def test_user_guide_python_blocks_run_in_order_as_one_script(tmp_path) -> None:
    """docs/guide.md's Python blocks, pasted one after the other into a script, run from the
    repository's root (its data, names and calls exist; section 2 used to leave its arrays
    undefined); its files go to a temporary folder instead of examples/out."""
    import re

    pytest.importorskip("tensorboardX")  # the guide's callbacks section logs to TensorBoard
    text = (ROOT / "docs" / "guide.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4, "the guide's Python blocks moved: update this test"
    code = "\n".join(blocks).replace("examples/out", str(tmp_path))
    code = code.replace('"examples"', repr(str(ROOT / "examples")))
    code = code.replace("epochs=30", "epochs=3")  # the calls, not the training, are tested
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "libdigits.so").is_file() and (tmp_path / "digits.gcm").is_file()
    assert "val_loss" in (tmp_path / "train.csv").read_text().splitlines()[0]


def test_readme_model_file_and_checkpoint_sizes_are_what_graphc_writes(tmp_path) -> None:
    """The README's sizes of the digits network's model file and checkpoint (64-32-10 with
    Adam, examples/models.py:digits) against the files written (they were 36.5/34.6 KB in the
    text, 34.8/33.4 KB on disk)."""
    import re

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from models import digits
    finally:
        sys.path.pop(0)
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"64-32-10 with Adam\) is ([\d.]+) KB beside its ([\d.]+) KB checkpoint", text)
    assert m, "the README's model-file figures moved: update this test"
    d = digits()
    model = gc.compile(d["outputs"], d["loss"], d["optimizer"], name=d["name"])
    model.save_model(tmp_path / "d.gcm")
    model.save(tmp_path / "d.npz")
    # the model file records each node's source line, whose path depends on where the
    # repository lies: within 2%
    for f, stated in (("d.gcm", m[1]), ("d.npz", m[2])):
        got = os.path.getsize(tmp_path / f) / 1000
        assert abs(got - float(stated)) <= 0.02 * got, (f, got, stated)


def test_cli_output_piped_into_head_ends_quietly() -> None:
    """`graphc targets --cpus aarch64-linux-gnu | head -3`: the closed pipe is not a traceback."""
    r = subprocess.run(
        f"{sys.executable} -m graphc targets --cpus aarch64-linux-gnu | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.stdout.strip() and "Traceback" not in r.stderr and "Error" not in r.stderr, r.stderr


def test_load_finds_the_model_name_inside_a_library_named_otherwise(tmp_path) -> None:
    from graphc.runtime.library import graphc_model_names

    m = digits_like("digits")
    lib_path = tmp_path / "libnet.so"
    m.export(str(lib_path))
    assert (tmp_path / "net.h").is_file() and graphc_model_names(str(lib_path)) == ["digits"]
    xs = np.random.default_rng(10).standard_normal((3, 64)).astype(np.float32)
    lib = gc.load(str(lib_path))
    assert lib.name == "digits"
    np.testing.assert_allclose(lib.predict(xs), m.predict(xs), rtol=1e-6, atol=1e-6)
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"\x7fELF\x02\x01" + b"\xff" * 200)  # a damaged ELF: no names, no crash
    assert graphc_model_names(str(junk)) == []


def test_gradients_match_finite_differences_and_change_nothing() -> None:
    rng = np.random.default_rng(9)
    x = gc.input("x", ("N", 3))
    labels = gc.input("labels", ("N",), dtype="i32")
    h = gc.dense(x, 4, "tanh", name="h")
    logits = gc.dense(h, 3, name="o")
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, labels), gc.Adam(0.1), name="grads")
    xs = rng.standard_normal((5, 3)).astype(np.float32)
    ys = rng.integers(0, 3, 5).astype(np.int32)
    m.train_step(xs, ys)  # a step taken: state and counter are not zero
    params = {k: v.copy() for k, v in m.params.items()}
    state = {k: v.copy() for k, v in m.state.items()}
    g = m.gradients(xs, ys)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, params[k])
    for k, v in m.state.items():
        np.testing.assert_array_equal(v, state[k])
    assert set(g) == {"h.w", "h.b", "o.w", "o.b"}

    def loss(p: dict[str, np.ndarray]) -> float:  # float64, the documented formula
        z = np.tanh(xs @ p["h.w"] + p["h.b"]) @ p["o.w"] + p["o.b"]
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(5), ys].mean())

    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    for name, grad in g.items():
        num = np.zeros_like(p64[name])
        for idx in np.ndindex(num.shape):
            hi, lo = dict(p64), dict(p64)
            hi[name] = p64[name].copy()
            lo[name] = p64[name].copy()
            hi[name][idx] += 1e-6
            lo[name][idx] -= 1e-6
            num[idx] = (loss(hi) - loss(lo)) / 2e-6
        assert grad.shape == params[name].shape and grad.dtype == np.float32
        np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6, err_msg=name)
    with pytest.raises(gc.ArgumentError):
        m.gradients(xs, np.full(5, 7, np.int32))  # labels out of range: refused, nothing run


def test_labels_with_a_size_1_axis_get_a_reshape_hint() -> None:
    """Labels as one row get a reshape hint; as one column (Keras's sparse labels [N, 1]) they
    are read as [N] (tests/test_trust6.py checks their values)."""
    x = gc.input("x", ("N", 4))
    y = gc.input("y", ("N",), dtype="i32")
    h = gc.dense(x, 3)
    m = gc.compile([h], gc.softmax_cross_entropy(h, y), gc.SGD(0.1))
    xs = np.zeros((5, 4), np.float32)
    labels = np.arange(5) % 3
    assert m.evaluate(xs, labels.reshape(5, 1)) == m.evaluate(xs, labels)
    with pytest.raises(gc.ArgumentError, match=r"one row or one column: pass a.reshape\(-1\)"):
        m.train_step(xs, labels.reshape(1, 5))  # a row: not one-hot, whatever its width
    with pytest.raises(gc.ArgumentError, match=r"size-1 axes added: pass a.reshape\(5, 4\)"):
        m.predict(xs[:, None])
    with pytest.raises(gc.ArgumentError) as e:  # not the same values: no reshape hint
        m.predict(np.zeros((5, 3), np.float32))
    assert "reshape" not in str(e.value)
    # labels of a one-hot shape whose values are not one-hot get no argmax hint
    with pytest.raises(gc.ArgumentError) as e:
        m.train_step(xs[:2], (np.arange(10) % 3).reshape(2, 5))
    assert "one-hot" not in str(e.value) and "argmax" not in str(e.value)


def test_loaded_library_refuses_non_numeric_arrays_like_the_model(tmp_path) -> None:
    m = digits_like("kinds")
    lib = gc.load(m.export(str(tmp_path / "libkinds.so")).library)
    xs = np.zeros((2, 64))
    for bad in (xs.astype(str), xs.astype(bool), xs.astype(complex), xs.astype(object)):
        for call in (lambda: lib.predict(bad), lambda: m.predict(bad)):
            with pytest.raises(gc.ArgumentError, match=f"expects numbers.*{bad.dtype}"):
                call()
    with pytest.raises(gc.ArgumentError, match=r"got an array of shape \(3,\)"):
        lib.train_step(xs, np.zeros(3, np.int32))  # the shape passed, not a reshaped one
    # labels that are no class ids say what to do, in the model and the library alike
    for labels, hint in (
        (np.array(["cat", "dog"]), r"class names: number them 0..C-1 first.*np.unique"),
        (np.array([True, False]), r"booleans: pass y.astype\(np.int32\)"),
        (np.array([0.2, 0.8]), "no class ids: for probabilities or soft targets"),
    ):
        for call in (lambda: lib.train_step(xs, labels), lambda: m.train_step(xs, labels)):
            with pytest.raises(gc.ArgumentError, match=hint):
                call()
    # whole numbers stored as floats (labels read from a CSV): both take them as class ids
    assert np.isfinite(lib.train_step(xs, np.array([1.0, 0.0])))
    # one row given as a vector (x_test[0]) is named as such, by the model and the library
    for call in (lambda: lib.predict(xs[0]), lambda: m.predict(xs[0])):
        with pytest.raises(
            gc.ArgumentError, match=r"one row of 64 values: pass a.reshape\(1, -1\)"
        ):
            call()
