"""The compile cache (graphc/cache.py): hits skip LLVM and give the same model; bad files rebuild."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import cache, compiler
from graphc.runtime.model import Model


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
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [cache.SECRET, f"{key}.o"]


def test_cache_holds_only_checked_object_files_no_pickle(llvm_calls, cache_dir) -> None:
    _compile()
    files = [p for p in cache_dir.iterdir() if p.name != cache.SECRET]
    assert files and all(p.suffix == ".o" for p in files)
    assert all(p.read_bytes().startswith(cache.MAGIC) for p in files)
    m = _compile()  # passes run again; the machine code is a hit
    assert m.program.timings["cache"] == "hit"
    assert "passes+schedule:train_step" in m.program.timings


# ---------------------------------------------------------------- #13 items 14 and 22

SUBPROCESS_NET = """
import sys, warnings, numpy as np, graphc as gc
x = gc.input("x", ("N", 3)); y = gc.input("y", ("N", 1))
out = gc.dense(gc.dense(x, 4, "tanh", name="fc1"), 1, name="fc2")
m = gc.compile(out, gc.binary_cross_entropy(out, y), gc.SGD(lr=0.1), name="cachenet", seed=5)
w = m.params
xs = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
ref = np.tanh(xs @ w["fc1.w"] + w["fc1.b"]) @ w["fc2.w"] + w["fc2.b"]
np.testing.assert_allclose(m.predict(xs), ref, rtol=1e-4, atol=1e-5)
print(m.program.timings["cache"])
"""


def _run_compile(cache_dir, timeout: float = 120) -> str:
    """gc.compile of the test network in a child process (a crash or hang fails, not kills)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache_dir))
    env.pop("GRAPHC_NO_CACHE", None)
    r = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_NET],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1] + r.stderr


def test_same_model_without_names_compiled_twice_hits(llvm_calls) -> None:
    # #13 item 22: automatic names (dense4.w, %17) come from a process-wide counter
    def build():
        x = gc.input("x", ("N", 3))
        y = gc.input("y", ("N",), dtype="i32")
        out = gc.dense(gc.Dropout(0.2)(gc.dense(x, 5, "relu")), 3)
        return gc.compile(out, gc.softmax_cross_entropy(out, y), name="anon")

    m1 = build()
    n0 = len(llvm_calls)
    m2 = build()
    assert m2.program.timings["cache"] == "hit" and len(llvm_calls) == n0
    xs = np.random.default_rng(1).standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_array_equal(m1.predict(xs), m2.predict(xs))


def test_cache_folder_is_private_and_foreign_folders_are_refused(tmp_path, monkeypatch) -> None:
    import os
    import stat as st

    d = tmp_path / "fresh"
    assert "miss" in _run_compile(d)
    assert st.S_IMODE(os.stat(d).st_mode) == 0o700
    assert all(st.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in d.iterdir())
    assert _run_compile(d).startswith("hit")
    os.chmod(d, 0o777)  # group/other-writable: anyone could plant machine code
    out = _run_compile(d)
    assert out.startswith("miss") and out.count("CacheWarning") == 1, out
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(d))
    key_files = [p for p in d.iterdir() if p.suffix == ".o"]
    with pytest.warns(cache.CacheWarning, match="not writable by group or others"):
        assert cache.load(key_files[0].stem) is None  # refused, not read
    os.chmod(d, 0o700)
    p = key_files[0]
    os.chmod(p, 0o666)  # an entry writable by others is refused too
    out = _run_compile(d)
    assert out.startswith("miss") and "CacheWarning" in out


def test_fifo_or_symlink_at_an_entry_does_not_hang_or_follow(tmp_path) -> None:
    import os

    d = tmp_path / "c"
    _run_compile(d)
    (entry,) = [p for p in d.iterdir() if p.suffix == ".o"]
    entry.unlink()
    os.mkfifo(entry)
    out = _run_compile(d, timeout=60)  # used to block forever in open()
    assert out.startswith("miss") and "CacheWarning" in out
    entry.unlink()
    target = tmp_path / "elsewhere.o"
    target.write_bytes(b"x")
    entry.symlink_to(target)
    assert _run_compile(d, timeout=60).startswith("miss")
    assert target.read_bytes() == b"x"


def test_damaged_object_with_a_valid_digest_is_rebuilt_not_run(tmp_path) -> None:
    """Entries rewritten with a recomputed SHA-256 (the v2 format) and entries whose objects
    are damaged (section table, section offsets, relocations) but carry a valid MAC are
    refused before LLVM's loader sees them: the compile is a miss, the model is right."""
    import hashlib
    import os
    import struct

    d = tmp_path / "c"
    _run_compile(d)
    (entry,) = [p for p in d.iterdir() if p.suffix == ".o"]
    good = entry.read_bytes()
    head = len(cache.MAGIC) + cache.DIGEST
    payload = good[head:]
    # 1. a damaged payload with a plain SHA-256 where the MAC goes
    bad = payload[:200] + bytes(64) + payload[264:]
    entry.write_bytes(cache.MAGIC + hashlib.sha256(bad).digest() + bad)
    assert _run_compile(d).startswith("miss")
    # 2. damaged objects carrying a valid MAC (as if written by a buggy graphc)
    key = entry.stem
    old = os.environ.get("GRAPHC_CACHE_DIR")
    os.environ["GRAPHC_CACHE_DIR"] = str(d)
    try:
        objects = cache.load_objects(key)
        assert objects and all(cache.elf_problem(o) is None for o in objects)
        o = bytearray(objects[0])
        shoff = struct.unpack_from("<Q", o, 0x28)[0]
        shnum = struct.unpack_from("<H", o, 0x3C)[0]
        damages = {
            "section table offset": lambda b: struct.pack_into("<Q", b, 0x28, 1 << 40),
            "section count": lambda b: struct.pack_into("<H", b, 0x3C, 60000),
            "section offsets": lambda b: [
                struct.pack_into("<Q", b, shoff + 64 * i + 0x18, 1 << 40) for i in range(shnum)
            ],
            "truncated": None,
        }
        for what, damage in damages.items():
            b = bytearray(o)
            if damage is None:
                b = b[: len(b) // 2]
            else:
                damage(b)
            assert cache.elf_problem(bytes(b)) is not None, what
        # each of these crashed gc.compile (SIGSEGV); one end-to-end run for the last
        cache.store_objects(key, [bytes(b)] + objects[1:])
        assert _run_compile(d).startswith("miss"), what
    finally:
        if old is None:
            del os.environ["GRAPHC_CACHE_DIR"]
        else:
            os.environ["GRAPHC_CACHE_DIR"] = old
