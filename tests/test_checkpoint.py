"""Checkpoints (graphc.runtime.checkpoint, Model.save/load), resumed runs and interrupted training."""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc.runtime import checkpoint


def _net(hidden: int = 8, optimizer=None, name: str = "ckpt"):
    """A small classifier with stable names. Its dropout mask depends on the step counter (which
    the checkpoint carries) and on the dropout node's name (named here: an automatic name would
    differ between two builds in one process, and so would the masks)."""
    x = gc.input("x", ("N", 4))
    h = gc.dropout(gc.dense(x, hidden, "tanh", name=f"{name}.l0"), 0.25, name=f"{name}.drop")
    out = gc.dense(h, 3, name=f"{name}.l2")
    loss = gc.softmax_cross_entropy(out, gc.input("y", ("N",), dtype="i32"))
    return gc.compile(out, loss=loss, optimizer=optimizer or gc.Adam(1e-2), name=name, seed=0)


def _data(n: int = 37):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)
    return x, y


@pytest.fixture(scope="module")
def trained():
    """A model trained 4 epochs uninterrupted; a checkpoint saved after epoch 2 (index 1)."""
    import tempfile

    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "epoch2.npz")
    model = _net()

    class SaveAfterSecond:
        def on_epoch_end(self, m, epoch, figures):
            if epoch == 1:
                m.save(path, extra={"note": "after epoch 2"})
            return False

    x, y = _data()
    hist = model.fit(x, y, epochs=4, batch_size=8, seed=5, verbose=0, callbacks=[SaveAfterSecond()])
    return model, hist, path


@pytest.fixture(scope="module")
def fresh():
    """A second, freshly compiled instance of the same network (other initial weights)."""
    model = _net()
    model.initialize(seed=123)
    return model


def _snapshot(model):
    return (
        {k: v.copy() for k, v in model.params.items()},
        {k: v.copy() for k, v in model.state.items()},
        model.lr,
    )


def _assert_same(model, snap) -> None:
    params, state, lr = snap
    for k, v in params.items():
        assert np.array_equal(model.params[k], v), k
    for k, v in state.items():
        assert np.array_equal(model.state[k], v), k
    assert model.lr == lr


def test_resumed_run_follows_the_uninterrupted_trajectory_bit_for_bit(trained, fresh) -> None:
    model, hist, path = trained
    header = fresh.load(path)
    assert header["epochs_done"] == 2 and header["extra"] == {"note": "after epoch 2"}
    assert float(fresh.state["step"]) == 2 * 5  # 37 rows in batches of 8: 5 steps per epoch
    x, y = _data()
    resumed = fresh.fit(x, y, epochs=4, batch_size=8, seed=5, verbose=0, initial_epoch=2)
    assert resumed.epochs == [2, 3]
    assert resumed["loss"] == hist["loss"][2:]
    for k in model.params:
        assert np.array_equal(fresh.params[k], model.params[k]), f"{k} left the trajectory"
    for k in model.state:
        assert np.array_equal(fresh.state[k], model.state[k]), k


def test_save_then_load_round_trips_params_state_and_lr(trained, fresh, tmp_path) -> None:
    model, _, _ = trained
    model.lr = 0.0123
    path = str(tmp_path / "m.npz")
    assert model.save(path) == path
    fresh.initialize(seed=7)
    fresh.lr = 1.0
    fresh.load(path)
    _assert_same(fresh, _snapshot(model))
    with np.load(path, allow_pickle=False) as z:  # a plain .npz, readable without graphc
        assert (
            "param/ckpt.l0.w" in z.files
            and "param/ckpt.l2.w" in z.files
            and "state/step" in z.files
        )
    assert [f for f in os.listdir(tmp_path) if f != "m.npz"] == []  # no temporary left behind


def test_crash_while_writing_leaves_the_previous_file_intact(
    trained, tmp_path, monkeypatch
) -> None:
    model, _, _ = trained
    path = str(tmp_path / "m.npz")
    model.save(path)
    before = open(path, "rb").read()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(gc.CheckpointError, match="disk full"):
        model.save(path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_writes_a_temporary_file_then_renames_it(trained, tmp_path, monkeypatch) -> None:
    model, _, _ = trained
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        os, "replace", lambda a, b: calls.append(("replace", a, b)) or real_replace(a, b)
    )
    path = str(tmp_path / "m.npz")
    model.save(path)
    rename = [c for c in calls if c != "fsync"]
    assert len(rename) == 1 and rename[0][2] == path
    assert os.path.dirname(rename[0][1]) == str(tmp_path)  # same directory: rename is atomic
    assert calls.index("fsync") < calls.index(rename[0])  # data on disk before the rename


def _damaged_files(good: bytes, tmp_path):
    half = tmp_path / "truncated.npz"
    half.write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    i = len(good) // 2
    flipped[i : i + 8] = bytes(255 - b for b in flipped[i : i + 8])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    text = tmp_path / "text.npz"
    text.write_text("not a checkpoint\n")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __header__=np.array([{"format": "graphc-checkpoint"}], dtype=object))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    return {
        "truncated": (half, "corrupted or truncated"),
        "bit flips": (corrupt, "corrupted"),
        "text": (text, "not an .npz"),
        "pickle": (pickled, "corrupted|pickle"),
        "foreign npz": (foreign, "without a graphc header"),
        "missing": (tmp_path / "nope.npz", "does not exist"),
    }


def test_damaged_files_raise_checkpoint_error_and_leave_the_model_unchanged(
    trained, fresh, tmp_path
) -> None:
    _model, _, path = trained
    good = open(path, "rb").read()
    snap = _snapshot(fresh)
    for what, (p, msg) in _damaged_files(good, tmp_path).items():
        with pytest.raises(gc.CheckpointError, match=msg):
            fresh.load(str(p))
        _assert_same(fresh, snap)
        del what


def test_checkpoint_of_another_network_is_rejected_with_the_differences(fresh, tmp_path) -> None:
    other = _net(hidden=5)
    path = str(tmp_path / "other.npz")
    other.save(path)
    snap = _snapshot(fresh)
    with pytest.raises(
        gc.CheckpointError, match=r"ckpt.l0.w: model float32\[4, 8\], file float32\[4, 5\]"
    ):
        fresh.load(path, weights_only=True)
    with pytest.raises(gc.CheckpointError, match="different network or optimizer"):
        fresh.load(path)
    _assert_same(fresh, snap)


def test_weights_only_loads_across_optimizers(trained, tmp_path) -> None:
    model, _, _ = trained
    sgd = _net(optimizer=gc.SGD(0.1))
    path = str(tmp_path / "adam.npz")
    model.save(path)
    with pytest.raises(gc.CheckpointError, match="different network or optimizer"):
        sgd.load(path)
    sgd.load(path, weights_only=True)
    for k, v in model.params.items():
        assert np.array_equal(sgd.params[k], v)
    assert float(sgd.state["step"]) == 0.0


def test_header_hash_ignores_automatic_names() -> None:
    """Two builds of one network in one process get different auto names but the same hash."""

    def build():
        x = gc.input("x", ("N", 3))
        out = gc.dense(gc.dense(x, 4, "relu"), 2)
        return out, gc.mean_squared_error(out, gc.input("t", ("N", 2)))

    from graphc.compiler import build_graphs

    o1, l1 = build()
    o2, l2 = build()
    a = build_graphs("m", [o1], l1, gc.Adam())
    b = build_graphs("m", [o2], l2, gc.Adam())
    assert [p.name for p in a.training.params] != [p.name for p in b.training.params]
    assert checkpoint.structure_hash(a.training) == checkpoint.structure_hash(b.training)
    c = build_graphs("m", [o2], l2, gc.SGD(0.1))
    assert checkpoint.structure_hash(c.training) != checkpoint.structure_hash(b.training)


def test_keyboard_interrupt_keeps_last_step_and_history(fresh) -> None:
    x, y = _data()
    seen = {}

    class Interrupt:
        def on_epoch_end(self, m, epoch, figures):
            seen["params"] = {k: v.copy() for k, v in m.params.items()}
            return False

        def on_epoch_begin(self, m, epoch):
            if epoch == 2:
                raise KeyboardInterrupt

    hist = fresh.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[Interrupt()])
    assert hist.interrupted and hist.epochs == [0, 1] and fresh.history is hist
    for k, v in seen["params"].items():
        assert np.array_equal(fresh.params[k], v)


def test_exception_in_a_callback_propagates_with_history_so_far(fresh) -> None:
    x, y = _data()

    class Boom:
        def on_epoch_end(self, m, epoch, figures):
            if epoch == 1:
                raise RuntimeError("callback failed")
            return False

    with pytest.raises(RuntimeError, match="callback failed"):
        fresh.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[Boom()])
    assert fresh.history.epochs == [0, 1] and len(fresh.history["loss"]) == 2


def test_initial_epoch_out_of_range_is_rejected(fresh) -> None:
    x, y = _data()
    with pytest.raises(gc.ArgumentError, match="initial_epoch"):
        fresh.fit(x, y, epochs=2, initial_epoch=3, verbose=0)
