"""The compile cache (graphc/cache.py): hits skip LLVM and give the same model; bad files rebuild."""

from __future__ import annotations

import numpy as np
import pytest
from graphc.runtime.model import Model

import graphc as gc
from graphc import cache, compiler


def _net(hidden: int = 4):
    x = gc.input("x", ("N", 3))
    y = gc.input("y", ("N", 1))
    out = gc.dense(gc.dense(x, hidden, "tanh", name="fc1"), 1, name="fc2")
    return out, gc.binary_cross_entropy(out, y)


def _compile(hidden: int = 4) -> Model:
    out, loss = _net(hidden)
    return gc.compile(out, loss, gc.SGD(lr=0.1), name="cachenet", seed=5)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache folder for this file's tests, so the base network compiles cold only once."""
    return tmp_path_factory.mktemp("graphc_cache")


@pytest.fixture
def llvm_calls(monkeypatch, cache_dir):
    """Counts the LLVM compilations (optimizer and code generator) of this test."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("GRAPHC_NO_CACHE", raising=False)
    calls = []
    real = compiler.compile_parts

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(compiler, "compile_parts", counting)
    return calls


def _train(m) -> tuple[list[float], np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    h = m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return h["loss"], m.predict(x)


def test_second_compile_hits_cache_and_gives_identical_results(llvm_calls, cache_dir) -> None:
    for p in cache_dir.glob("*.o"):
        p.unlink()
    m1 = _compile()
    assert m1.program.timings["cache"] == "miss" and len(llvm_calls) == 1
    assert len(list(cache_dir.glob("*.o"))) == 1
    m2 = _compile()  # declared afresh: new %N names, same graph
    assert m2.program.timings["cache"] == "hit" and len(llvm_calls) == 1
    l1, p1 = _train(m1)
    l2, p2 = _train(m2)
    assert l1 == l2
    np.testing.assert_array_equal(p1, p2)
    # independent check of the cached code: the forward pass against numpy
    x = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    w = m2.params
    ref = np.tanh(x @ w["fc1.w"] + w["fc1.b"]) @ w["fc2.w"] + w["fc2.b"]
    np.testing.assert_allclose(m2.predict(x), ref, rtol=1e-4, atol=1e-5)


def test_different_graph_misses(llvm_calls) -> None:
    before = len(llvm_calls)
    m = _compile(5)
    assert m.program.timings["cache"] == "miss" and len(llvm_calls) == before + 1


def test_corrupted_cache_file_is_ignored_and_rebuilt(llvm_calls, cache_dir) -> None:
    m1 = _compile()
    key = cache.cache_key(m1.program, _target())
    path = cache.path_for(key)
    good = path.read_bytes()
    n0 = len(llvm_calls)
    path.write_bytes(good[: len(cache.MAGIC) + 40] + b"\x00garbage" * 10)
    m2 = _compile()
    assert m2.program.timings["cache"] == "miss" and len(llvm_calls) == n0 + 1
    assert cache.load(key) is not None  # rebuilt and stored again
    assert _train(m1)[0] == _train(m2)[0]
    path.write_bytes(good[:-100])  # truncated: the digest no longer matches
    assert cache.load(key) is None and not path.exists()


def test_no_cache_env_writes_nothing(llvm_calls, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_NO_CACHE", "1")
    m = _compile()
    assert m.program.timings["cache"] == "off" and len(llvm_calls) == 1
    assert not list(tmp_path.iterdir())


def _target() -> tuple[str, str, str]:
    from graphc.codegen.target import host_cpu, target_machine

    return (target_machine().triple, *host_cpu())


def test_store_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "sub"))
    key = "ab" * 32
    assert cache.store(key, b"payload") == tmp_path / "sub" / f"{key}.o"
    assert cache.load(key) == b"payload"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"{key}.o"]


def test_cache_holds_only_checked_object_files_no_pickle(llvm_calls, cache_dir) -> None:
    _compile()
    files = list(cache_dir.iterdir())
    assert files and all(p.suffix == ".o" for p in files)
    assert all(p.read_bytes().startswith(cache.MAGIC) for p in files)
    m = _compile()  # passes run again; the machine code is a hit
    assert m.program.timings["cache"] == "hit"
    assert "passes+schedule:train_step" in m.program.timings
