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
    with pytest.raises(gc.GraphcError, match="lr must be a positive number"):
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


def test_compile_works_without_llvmlites_private_api(monkeypatch) -> None:
    from graphc.codegen import llvm_private

    monkeypatch.setattr(llvm_private, "private_api_usable", lambda: False)
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    x = gc.input("x", ("N", 4))
    m = gc.compile(gc.sigmoid(x), name="public_api_only")
    xs = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(m.predict(xs), 1 / (1 + np.exp(-xs.astype(np.float64))), rtol=1e-6)
