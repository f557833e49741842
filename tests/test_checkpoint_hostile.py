"""Hostile and damaged checkpoint files raise CheckpointError before anything large is read, and
saving cleans up after itself (#13 item 17)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc.runtime import checkpoint


@pytest.fixture(scope="module")
def model() -> gc.Model:
    x, y = gc.input("x", ("N", 3)), gc.input("y", ("N", 1))
    out = gc.dense(x, 2, "tanh", name="h")
    out = gc.dense(out, 1, name="o")
    return gc.compile(out, gc.mean_squared_error(out, y), gc.Adam(), name="hostile")


def _snapshot(m: gc.Model):
    saved = {k: v.copy() for k, v in m.params.items()}, {k: v.copy() for k, v in m.state.items()}

    def unchanged() -> None:
        for k, v in saved[0].items():
            np.testing.assert_array_equal(m.params[k], v)
        for k, v in saved[1].items():
            np.testing.assert_array_equal(m.state[k], v)

    return unchanged


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def _good_members(m: gc.Model, tmp_path) -> dict[str, bytes]:
    path = tmp_path / "good.npz"
    m.save(str(path))
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return str(path)


def test_hostile_npz_files_raise_checkpoint_error(model, tmp_path) -> None:
    unchanged = _snapshot(model)
    good = _good_members(model, tmp_path)
    w = "param/h.w.npy"
    cases = {}
    # an array whose .npy header declares 10^12 elements (nothing that large is allocated)
    huge = _npy(np.zeros((3, 2), np.float32)).replace(b"(3, 2)", b"(1000000000000, 2)")
    cases["huge shape"] = {**good, w: huge}
    cases["object array"] = {**good, w: _npy(np.array([{"a": 1}], dtype=object))}
    cases["string array"] = {**good, w: _npy(np.array(["abc", "de"]))}
    cases["complex array"] = {**good, w: _npy(np.zeros((3, 2), np.complex64))}
    cases["float64 for float32"] = {**good, w: _npy(np.zeros((3, 2), np.float64))}
    cases["truncated member"] = {**good, w: good[w][:-5]}
    # .npy headers numpy's parser cannot finish (tokenize.TokenError escaped: a byte flip found
    # it) or refuses (SyntaxError)
    cases["npy header unclosed"] = {**good, w: good[w].replace(b"(3, 2)", b"(3, 2 ")}
    cases["npy header not a literal"] = {**good, w: good[w].replace(b"(3, 2)", b"(3; 2)")}
    bad_header = json.loads(np.load(io.BytesIO(good["__header__.npy"])).tobytes())
    bad_header["params"] = [[1, 2]]
    cases["malformed header"] = {
        **good,
        "__header__.npy": _npy(np.frombuffer(json.dumps(bad_header).encode(), np.uint8)),
    }
    cases["not a zip"] = None
    for what, members in cases.items():
        path = tmp_path / f"{what.replace(' ', '_')}.npz"
        if members is None:
            path.write_bytes(b"PK\x03\x04" + os.urandom(200))
        else:
            _write(path, members)
        with pytest.raises(gc.CheckpointError):
            model.load(str(path))
        unchanged()


def test_zip_bomb_is_refused_from_the_directory(model, tmp_path) -> None:
    """64 MB of zeros deflated to ~64 KB: refused from the sizes in the zip directory."""
    unchanged = _snapshot(model)
    good = _good_members(model, tmp_path)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in good.items():
            zf.writestr(k, v)
        with zf.open("param/extra.npy", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(64):
                f.write(chunk)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(gc.CheckpointError, match=r"declares|zip bomb"):
        model.load(str(path))
    unchanged()


def test_paths_that_are_not_regular_files(model, tmp_path) -> None:
    unchanged = _snapshot(model)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(gc.CheckpointError, match="not a regular file"):
        model.load(str(fifo))  # must not block
    with pytest.raises(gc.CheckpointError):
        model.load(str(tmp_path))
    unchanged()


def test_save_into_missing_or_unwritable_folder_raises_checkpoint_error(
    model, tmp_path, monkeypatch
) -> None:
    with pytest.raises(gc.CheckpointError, match="does not exist"):
        model.save(str(tmp_path / "no" / "such" / "ck.npz"))
    with pytest.raises(gc.CheckpointError):
        model.save(str(tmp_path))  # a folder at the target's name

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", denied)
    with pytest.raises(gc.CheckpointError, match="Permission denied"):
        model.save(str(tmp_path / "ck.npz"))
    if os.geteuid() != 0:  # root writes into read-only folders
        monkeypatch.undo()
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(gc.CheckpointError):
                model.save(str(ro / "ck.npz"))
        finally:
            ro.chmod(0o700)


def test_save_removes_stale_temporary_files_of_dead_savers(model, tmp_path) -> None:
    target = tmp_path / "ck.npz"
    dead = tmp_path / ".ck.npz.999999999.abc123.tmp"  # no such process
    live = tmp_path / f".ck.npz.{os.getppid()}.def456.tmp"  # a running process's
    other = tmp_path / ".other.npz.999999999.abc.tmp"  # another target's
    for p in (dead, live, other):
        p.write_bytes(b"x" * 100)
    model.save(str(target))
    assert not dead.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, other.name]
    )
    header, params, _ = checkpoint.read(str(target))
    assert header["model"] == "hostile"
    for k, v in model.params.items():
        np.testing.assert_array_equal(params[k], v)
