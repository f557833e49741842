"""Data-parallel training over MPI (graphc.runtime.distributed), against one process.

Each test launches ``mpirun --oversubscribe -np K python tests/mpi_worker.py ...`` (CI runs as
root, hence ``--allow-run-as-root``) and compares what rank 0 wrote with the same program run
in one process without MPI: the reference is plain ``fit`` (and ``train_step`` on fit's batches
for the per-step losses), the documented one-process trajectory with the global batch.
Skipped, with the reason, when ``mpirun`` or mpi4py is missing (.ci/run installs both).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc as gc

# under pytest-xdist (--dist loadgroup, the README's command) one worker runs every mpirun test
# in turn: never two jobs of 2-3 ranks at once beside the other worker on CI's 2 cores
pytestmark = pytest.mark.xdist_group("mpirun")

WORKER = Path(__file__).with_name("mpi_worker.py")
MPIRUN = shutil.which("mpirun")


def _have_mpi4py() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("mpi4py") is not None
    except ImportError:
        return False


need_mpi = pytest.mark.skipif(
    MPIRUN is None or not _have_mpi4py(),
    reason="needs Open MPI's mpirun and mpi4py (apt-get install openmpi-bin libopenmpi-dev; "
    'pip install -e ".[mpi]"); .ci/run installs both',
)


def _env(serial: bool = False) -> dict[str, str]:
    # the sharded update (GRAPHC_MPI_SHARD=1, off by default) wherever the window is used:
    # its roll-backs, gathers and errors; test_ranks_match_one_process also runs without
    env = dict(
        os.environ, OMPI_MCA_rmaps_base_oversubscribe="1", GRAPHC_THREADS="1", GRAPHC_MPI_SHARD="1"
    )
    env.pop("GRAPHC_TEST_SERIAL", None)
    if serial:
        env["GRAPHC_TEST_SERIAL"] = "1"
    return env


# The update every rank runs, as fit picks it for ranks sharing memory: "shard" (the other
# tests' default, GRAPHC_MPI_SHARD=1: the call-out at every step) and "summed" (fit's own
# default: every rank sums the slots inside its update, the all-reduce inside the native
# epoch when the ranks spin: GRAPHC_MPI_WAIT=spin)
UPDATES = {"shard": {}, "summed": {"GRAPHC_MPI_SHARD": "0", "GRAPHC_MPI_WAIT": "spin"}}


def mpirun(ranks: int, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    cmd = [MPIRUN, "--oversubscribe", "--allow-run-as-root", "-np", str(ranks)]
    cmd += [sys.executable, str(WORKER), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**_env(), **env}, check=False
    )


def serial(*args: str) -> None:
    cmd = [sys.executable, str(WORKER), *args]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=_env(serial=True), check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("mpi") / "ref.npz"
    serial("train", str(out))
    return dict(np.load(out))


def _compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert set(got) == set(ref)
    for k, want in ref.items():
        if "steps" in k or "loss" in k or "val_" in k or "lr" in k:
            assert got[k].shape == want.shape, k
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=0, err_msg=k)
        else:
            np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5, err_msg=k)


@need_mpi
@pytest.mark.parametrize("reduce", ["auto", "auto:whole", "auto:probe", "allreduce"])
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_match_one_process(ranks, reduce, reference, tmp_path):
    """SGD, momentum and Adam with dropout; 50 rows in global batches of 16 (the last one has
    2 rows: with 3 ranks one rank holds none of them); the gradients summed through the
    shared-memory window (what "auto" picks for ranks of one machine), each rank summing and
    updating a shard of the parameters and optimizer state (gathered at every epoch's end:
    the validation, the callbacks and the final parameters see all of it), and by
    MPI_Allreduce with the whole update on every rank ("auto:whole": the window, every rank
    summing all the slots' gradients inside its update; the all-reduce inside the native
    epoch itself with spinning waits; "auto:probe": GRAPHC_MPI_SHARD=auto, the default, which
    times both updates once per window and runs the faster)."""
    out = tmp_path / "got.npz"
    mode, _, whole = reduce.partition(":")
    env = {"GRAPHC_MPI_WAIT": "spin"} if whole else {}
    shard = {"": "1", "whole": "0", "probe": "auto"}[whole]  # auto: each window times both
    r = mpirun(ranks, "train", str(out), GRAPHC_MPI_REDUCE=mode, GRAPHC_MPI_SHARD=shard, **env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"reduce: {'window' if mode == 'auto' else mode}" in r.stdout
    update = {"auto": "shard", "auto:whole": "summed", "allreduce": "whole"}.get(reduce)
    if update is None:  # the probe's choice, the same on every rank (or the ranks would hang)
        assert "update: shard" in r.stdout or "update: summed" in r.stdout, r.stdout
    else:
        assert f"update: {update}" in r.stdout
    if whole:  # the all-reduce inside the native epoch (spinning waits)
        assert "path: native-reduce" in r.stdout
    got = dict(np.load(out))
    assert len(got["sgd_steps"]) == 2 * 4  # 2 epochs of 4 global batches
    assert len(got["adam_steps"]) == 3 * 3  # 3 epochs of 40 rows
    assert list(got["adam_lr"]) == [0.01, 0.01, 0.005]  # ReduceLROnPlateau acted once
    _compare(got, reference)


@need_mpi
def test_resume_with_another_rank_count(tmp_path):
    """2 ranks train epochs 0-1 and checkpoint (rank 0 writes), 3 ranks resume for epochs 2-3
    from the file loaded on rank 0 only: the same as one process resuming."""
    ckpt, ckpt1 = tmp_path / "two.npz", tmp_path / "one.npz"
    r = mpirun(2, "save", str(tmp_path / "a.npz"), str(ckpt))
    assert r.returncode == 0, r.stderr[-3000:]
    assert ckpt.exists()
    r = mpirun(3, "resume", str(tmp_path / "got.npz"), str(ckpt))
    assert r.returncode == 0, r.stderr[-3000:]
    serial("save", str(tmp_path / "b.npz"), str(ckpt1))
    serial("resume", str(tmp_path / "ref.npz"), str(ckpt1))
    got, ref = dict(np.load(tmp_path / "got.npz")), dict(np.load(tmp_path / "ref.npz"))
    assert len(got["steps"]) == 8
    _compare(got, ref)


@need_mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
@pytest.mark.parametrize("update", ["shard", "summed"])
def test_a_failing_rank_ends_the_job(how, update, tmp_path):
    """A rank that raises (MPI_Abort) or dies (SIGKILL) ends every rank within 60 s, with a
    nonzero exit status and a message naming the failure, the others waiting in an MPI call
    or (summed) spinning on the native barrier's counters."""
    t0 = time.monotonic()
    r = mpirun(2, how, str(tmp_path / "x.npz"), timeout=60, **UPDATES[update])
    assert time.monotonic() - t0 < 60
    assert r.returncode != 0
    text = r.stdout + r.stderr
    if how == "raise":
        assert "rank 1 of 2 failed" in text and "a failure planted on rank 1" in text
    else:
        assert "signal 9" in text or "Killed" in text or "killed" in text, text[-2000:]


@need_mpi
def test_validation_r2_of_an_output_whose_batch_axis_predict_moves(tmp_path):
    """An ONNX import whose output predict returns as [5, N, 4] (N moved, 544d06d) with a loss
    on it: the distributed fit's val_r2 equals one process's evaluate (the ranks' predictions
    were reshaped in the moved layout, mixing rows: r2 -1.87 against -1.51; review rvH)."""
    r = mpirun(2, "moved", str(tmp_path / "got.npz"), timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    got = dict(np.load(tmp_path / "got.npz"))
    np.testing.assert_allclose(got["moved_mse"][1], got["moved_mse"][0], rtol=1e-5)
    np.testing.assert_allclose(got["moved_r2"][1], got["moved_r2"][0], rtol=1e-5)


@need_mpi
@pytest.mark.parametrize(
    ("mode", "said"),
    [
        (
            "uncaught",
            ("a failure planted on rank 1 between two fits",
             "rank 1 of 2 ended with an uncaught RuntimeError"),
        ),
        ("fewer", ("world rank 1 ended its script without entering it",)),
    ],
)  # fmt: skip
def test_a_rank_leaving_between_fits_ends_the_job(mode, said, tmp_path):
    """Rank 1 leaves the script after a first fit while rank 0 enters a second one: with an
    uncaught exception (not under ``python -m mpi4py``: MPI_Abort after the traceback), or
    normally after fewer fits (its exit note: rank 0's next fit raises DistributedError naming
    it). Before, rank 0 waited forever in the second fit's first collective and rank 1 in
    MPI_Finalize."""
    t0 = time.monotonic()
    r = mpirun(2, mode, str(tmp_path / "x.npz"), timeout=60)
    assert time.monotonic() - t0 < 60
    assert r.returncode != 0
    text = r.stdout + r.stderr
    for words in said:
        assert words in text, text[-2000:]


def test_missing_mpi_names_what_to_install(monkeypatch):
    """Without mpi4py, distributed="mpi" raises DistributedError naming the packages."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    x = gc.input("x", ("N", 3))
    y = gc.input("y", ("N", 1))
    out = gc.dense(x, 1, name="fc")
    m = gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=0.1), name="nompi")
    before = m.get_weights()
    with pytest.raises(gc.DistributedError) as e:
        m.fit(np.ones((4, 3)), np.ones((4, 1)), distributed="mpi", verbose=0)
    assert "apt-get install openmpi-bin libopenmpi-dev" in str(e.value)
    assert 'pip install mpi4py (or, in your graphc checkout, pip install -e ".[mpi]")' in str(
        e.value
    )
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)
    with pytest.raises(gc.ArgumentError):
        m.fit(np.ones((4, 3)), np.ones((4, 1)), distributed="tcp", verbose=0)


def test_split_entries_compiled_on_first_use():
    """gc.compile leaves train_grads / apply_update out of the model's module (its cold
    compile pays for them only when used); the first SplitStep compiles them into a module of
    their own whose thread pool follows ``threads``, and the split step then gives train_step's
    bits."""
    from graphc.runtime.distributed import SplitStep

    def build(name):
        x = gc.input("x", ("N", 5))
        y = gc.input("y", ("N",), dtype="i32")
        o = gc.dense(gc.dense(x, 7, "relu", name="fc1"), 3, name="fc2")
        return gc.compile(o, gc.softmax_cross_entropy(o, y), gc.SGD(lr=0.1), name=name)

    a, b = build("lazy_a"), build("lazy_b")
    assert set(b.entries) == {"infer", "eval", "train_step"}
    assert not b.jit.has("lazy_b_train_grads")
    b.threads = 2
    s = SplitStep(b, 8)
    assert {"train_grads", "apply_update"} <= set(b.entries)
    assert b._split_jit.threads() == 2
    b.threads = 1
    assert b._split_jit.threads() == 1
    assert SplitStep(b, 8).grads is s.grads  # compiled once
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    la = a.train_step(x, y)
    s.scale[...] = 1.0
    assert float(s.grads(s.arrays({"x": x, "y": y}), 8)[0]) == la
    s.lr[...] = b.lr
    s.update(s.update_arrays, 1)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def _dropout_mlp(name: str) -> gc.Model:
    """6 -> 8 relu -> dropout 0.5 -> 3, softmax cross-entropy, Adam (the split-step tests)."""
    x = gc.input("x", ("N", 6))
    y = gc.input("y", ("N",), dtype="i32")
    h = gc.dropout(gc.dense(x, 8, "relu", name="fc1"), 0.5, name="d")
    o = gc.dense(h, 3, name="fc2")
    return gc.compile(o, gc.softmax_cross_entropy(o, y), gc.Adam(lr=0.01), name=name)


def test_split_step_equals_train_step():
    """train_grads (loss_scale 1, row0 0) then apply_update gives train_step's bits, dropout
    included; half the batch with loss_scale 1/2 twice, summed, gives the same gradients."""
    from graphc.runtime.distributed import SplitStep

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 6)).astype(np.float32)
    y = rng.integers(0, 3, 10).astype(np.int32)
    a, b = _dropout_mlp("split_a"), _dropout_mlp("split_b")
    s = SplitStep(b, 10)
    for _ in range(3):
        la = a.train_step(x, y)
        s.scale[...], s.row0[...] = 1.0, 0.0
        lb = s.grads(s.arrays({"x": x, "y": y}), 10)[0]
        full = s.grad.copy()
        total = np.zeros_like(full)
        for lo in (0, 5):  # two halves, as two ranks would compute them
            s.scale[...], s.row0[...] = 0.5, lo
            s.grads(s.arrays({"x": x[lo : lo + 5], "y": y[lo : lo + 5]}), 5)
            total += s.grad
        s.grad[...] = full
        s.lr[...] = b.lr
        s.update(s.update_arrays, 1)
        assert float(lb) == la
        np.testing.assert_allclose(total, full, rtol=1e-5, atol=1e-7)
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("ranks", [2, 3, 5])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "clipnorm"])
def test_update_shards_equal_the_whole_update(opt, ranks):
    """NAME_apply_update_shard (no MPI needed): ``ranks`` ranks' gradients summed and the
    update applied shard by shard (ShardPlan.bounds of ``ranks``, each shard's call given the
    step counter of before the step, as each rank has it), and by one call over all elements
    (the summed update), give the parameters and optimizer state of the sum (float32, rank
    order) and one NAME_apply_update, bit for bit: 2 and 3 ranks sum in registers, 5 by
    blocks through NAME_reduce_slots (codegen.epoch.SUMMED_RANKS); a gradient-norm clip
    (every gradient read by one kernel) has no shard entry."""
    from graphc.codegen.epoch import update_shard_plan
    from graphc.runtime.buffers import address
    from graphc.runtime.distributed import SplitStep

    make = {
        "sgd": lambda: gc.SGD(lr=0.1),
        "momentum": lambda: gc.SGD(lr=0.05, momentum=0.9),
        "adam": lambda: gc.Adam(lr=0.01),
        "clipnorm": lambda: gc.SGD(lr=0.1, clipnorm=1.0),
    }[opt]
    x, y = gc.input("x", ("N", 20)), gc.input("y", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 40, "tanh", name="fc1"), 3, name="fc2")
    m = gc.compile(logits, gc.softmax_cross_entropy(logits, y), make(), name=f"sh_{opt}", seed=1)
    m.threads = 1
    s = SplitStep(m, 8)
    name = f"sh_{opt}_apply_update_shard"
    plan = update_shard_plan(m.program.schedules["apply_update"])
    if opt == "clipnorm":
        assert plan is None and not m._split_jit.has(name)
        return
    assert plan is not None and plan.elements > 2 * 16
    fn = ctypes.CFUNCTYPE(
        ctypes.c_int32, *(ctypes.c_void_p,) * 4, *(ctypes.c_int64,) * 2, ctypes.c_void_p,
        ctypes.c_int64,
    )(m._split_jit.address(name))  # fmt: skip
    rng = np.random.default_rng(4)
    u = s.update
    u._set_inputs(s.update_arrays)
    a = u._args
    s.lr[...] = 0.05
    step = 8 // m._state_region.itemsize  # the step counter's words, at the state's start
    for _ in range(3):  # a few steps: momentum and Adam's state nonzero
        grads = [
            rng.standard_normal(plan.elements).astype(np.float32) * 10.0 ** (j % 3)
            for j in range(ranks)
        ]
        g0 = plan.offset("grad") // 4
        total = grads[0]
        for gj in grads[1:]:
            total = total + gj  # rank order, float32
        s.grad[g0 : g0 + plan.elements] = total
        before = m._param_region.copy(), m._state_region.copy()
        u(s.update_arrays, 1, checked=False)
        want = m._param_region.copy(), m._state_region.copy()
        s.grad[g0 : g0 + plan.elements] = grads[0]  # this rank's own gradient, summed in place
        table = (ctypes.c_void_p * ranks)(a[2] + plan.offset("grad"), *map(address, grads[1:]))
        for shards in (ranks, 1):  # by shards, as GRAPHC_MPI_SHARD=1; whole: the summed update
            m._param_region[...], m._state_region[...] = before
            for j in range(shards):
                lo, hi = plan.bounds(shards, j)
                m._state_region[:step] = before[1][:step]  # each rank increments its own
                rc = fn(a[0], a[1], a[2], ctypes.addressof(u.inputs), lo, hi,
                        ctypes.addressof(table), ranks)  # fmt: skip
                assert rc == 0
            np.testing.assert_array_equal(m._param_region.view(np.uint8), want[0].view(np.uint8))
            np.testing.assert_array_equal(m._state_region.view(np.uint8), want[1].view(np.uint8))
        assert not np.array_equal(want[0], before[0])
        # the sums stay in registers or the entry's stack block: the own gradient is only read
        np.testing.assert_array_equal(s.grad[g0 : g0 + plan.elements], grads[0])


def test_reduce_slots_sums_in_rank_order():
    """NAME_reduce_slots (the shared-memory all-reduce's native part, no MPI needed): over
    [lo, hi) every destination gets ((s0 + s1) + s2) in float32, that order (numpy's
    elementwise adds in float32 are the reference, bit for bit), across block boundaries of
    REDUCE_BLOCK and with a destination that is also a source; nothing outside [lo, hi) is
    written."""
    from graphc.codegen.epoch import REDUCE_BLOCK
    from graphc.runtime.buffers import address

    m = _dropout_mlp("reduce_slots")
    assert m.split_entries() is not None
    fn = ctypes.CFUNCTYPE(
        None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, *(ctypes.c_int64,) * 3
    )(m._split_jit.address("reduce_slots_reduce_slots"))
    rng = np.random.default_rng(3)
    n = 3 * REDUCE_BLOCK + 37
    # magnitudes far apart, so that another order of the sums would give other bits
    srcs = [(rng.standard_normal(n) * 10.0 ** (4 * j)).astype(np.float32) for j in range(3)]
    out = np.full(n, 7.0, np.float32)
    for lo, hi in ((0, n), (5, REDUCE_BLOCK + 3), (REDUCE_BLOCK, 2 * REDUCE_BLOCK), (9, 9)):
        xs = [a.copy() for a in srcs]
        out[...] = 7.0
        table = (ctypes.c_void_p * 3)(*[address(a) for a in xs])
        dsts = (ctypes.c_void_p * 2)(address(out), address(xs[1]))
        fn(ctypes.addressof(table), 3, ctypes.addressof(dsts), 2, lo, hi)
        want = (srcs[0][lo:hi] + srcs[1][lo:hi]) + srcs[2][lo:hi]
        assert want.dtype == np.float32
        np.testing.assert_array_equal(out[lo:hi], want)
        np.testing.assert_array_equal(xs[1][lo:hi], want)
        assert (out[:lo] == 7.0).all() and (out[hi:] == 7.0).all()
        np.testing.assert_array_equal(
            np.delete(xs[1], np.s_[lo:hi]), np.delete(srcs[1], np.s_[lo:hi])
        )
        for j in (0, 2):  # sources that are not destinations are only read
            np.testing.assert_array_equal(xs[j], srcs[j])
    # the data tells the orders apart: a kernel summing in another order fails above
    assert not np.array_equal((srcs[0] + srcs[1]) + srcs[2], srcs[0] + (srcs[1] + srcs[2]))


def test_native_split_epoch_on_one_rank(monkeypatch):
    """NAME_train_epoch_split on one rank (no MPI; the call-out only records) gives train_step's
    bits over the batches of an order (dropout, a partial last batch). A call-out that fails
    stops the epoch before that step's update: one that says so (returns nonzero), and one
    that raises before it can say go on, as a signal handler can at a Python function's first
    instruction (ctypes then returns an undefined value; the entry reads a flag instead).
    With scan, a bad row in the rank's rows skips that step's train_grads and is reported to
    the call-out (run.rejected(): the checked entry's code), which then stops the epoch."""
    from graphc.codegen.checks import CHECK_BASE
    from graphc.codegen.epoch import ERR_REDUCE
    from graphc.runtime.distributed import SplitStep

    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 6)).astype(np.float32)
    y = rng.integers(0, 3, 10).astype(np.int32)
    order = rng.permutation(10).astype(np.int64)
    a, b = _dropout_mlp("native_a"), _dropout_mlp("native_b")
    s = SplitStep(b, 4)
    stage = {"x": np.empty((4, 6), np.float32), "y": np.empty(4, np.int32)}
    run = s.native_epoch({"x": x, "y": y}, stage, 10, 1, 0)
    assert run is not None
    s.lr[...] = b.lr
    seen = []
    rc, at = run(
        order, 4, 0, 3, lambda st, rows: seen.append((st, rows, s.grads.out_arrays[0][()])) or 0
    )
    assert (rc, at) == (0, 2)
    assert [t[:2] for t in seen] == [(0, 4), (1, 4), (2, 2)]
    for (_, _, loss), lo in zip(seen, (0, 4, 8)):
        assert loss == a.train_step(x[order[lo : lo + 4]], y[order[lo : lo + 4]])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    kept = {k: v.copy() for k, v in b.params.items()}
    step = float(b.state["step"])
    assert run(order, 4, 1, 3, lambda st, rows: 1) == (ERR_REDUCE, 1)
    caught = []
    monkeypatch.setattr(sys, "unraisablehook", caught.append)

    def escapes(st, rows):
        raise RuntimeError("planted")

    assert run(order, 4, 0, 3, escapes) == (ERR_REDUCE, 0)
    assert [type(c.exc_value) for c in caught] == [RuntimeError]
    assert float(b.state["step"]) == step
    for k in kept:
        np.testing.assert_array_equal(b.params[k], kept[k])
    # scan: the gather checks the rows; a bad one in the rank's rows of step 1 skips that
    # step's train_grads (its loss output keeps step 0's) and says so to the call-out
    x[order[5], 2] = np.inf
    seen.clear()

    def stop_if_rejected(st, rows):
        seen.append((st, run.rejected(), s.grads.out_arrays[0][()]))
        return 1 if run.rejected() else 0

    assert run(order, 4, 0, 3, stop_if_rejected, True) == (ERR_REDUCE, 1)
    assert [t[:2] for t in seen] == [(0, 0), (1, CHECK_BASE + s.gslots.index("x"))]
    assert seen[1][2] == seen[0][2] and float(b.state["step"]) == step + 1
    seen.clear()  # without scan the same rows pass (the loss is not finite)
    assert run(order, 4, 0, 3, lambda st, rows: seen.append(run.rejected()) or 0) == (0, 2)
    assert seen == [0, 0, 0]


def test_native_split_epoch_gathers_wide_rows_in_groups_as_train_step():
    """NAME_train_epoch_split gathers rows of 512 bytes or more 8 at a time (f32[128] and
    f64[64]: exactly 512 bytes; codegen.epoch.GATHER_GROUP_MIN_BYTES), as train_epoch does:
    on one rank its losses and parameters are train_step's bit for bit over batches of 20
    (2 groups and 4 single rows; a last batch of 13), and with scan a NaN that ends a group
    of the second batch skips that step and is reported to the call-out."""
    from graphc.codegen.checks import CHECK_BASE
    from graphc.runtime.distributed import SplitStep

    def model(name: str) -> gc.Model:
        x = gc.input("x", ("N", 128))
        x2 = gc.input("x2", ("N", 64), dtype="f64")
        y = gc.input("y", ("N",), dtype="i32")
        h = gc.concat([x, gc.cast(x2, dtype="f32")], axis=1)
        o = gc.dense(gc.dense(h, 8, "relu", name="fc1"), 3, name="fc2")
        return gc.compile(o, gc.softmax_cross_entropy(o, y), gc.Adam(lr=0.01), name=name)

    rng = np.random.default_rng(2)
    n, bs = 53, 20
    data = {
        "x": rng.standard_normal((n, 128)).astype(np.float32),
        "x2": rng.standard_normal((n, 64)),
        "y": rng.integers(0, 3, n).astype(np.int32),
    }
    order = rng.permutation(n).astype(np.int64)
    a, b = model("wide_a"), model("wide_b")
    s = SplitStep(b, bs)
    stage = {k: np.empty((bs, *v.shape[1:]), v.dtype) for k, v in data.items()}
    run = s.native_epoch(data, stage, n, 1, 0)
    assert run is not None
    s.lr[...] = b.lr
    seen = []
    rc = run(
        order, bs, 0, 3, lambda st, rows: seen.append((st, rows, s.grads.out_arrays[0][()])) or 0
    )
    assert rc == (0, 2)
    assert [t[:2] for t in seen] == [(0, 20), (1, 20), (2, 13)]
    for (_, _, loss), lo in zip(seen, (0, 20, 40)):
        idx = order[lo : lo + bs]
        assert loss == a.train_step({"x": data["x"][idx], "x2": data["x2"][idx]}, data["y"][idx])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    data["x2"][order[27], 63] = np.nan  # step 1, row 7: the last element of its first group
    seen.clear()

    def stop_if_rejected(st, rows):
        seen.append((st, run.rejected()))
        return 1 if run.rejected() else 0

    assert run(order, bs, 0, 3, stop_if_rejected, True)[1] == 1
    assert seen == [(0, 0), (1, CHECK_BASE + s.gslots.index("x2"))]


@need_mpi
@pytest.mark.skipif(shutil.which("mpicc") is None, reason="needs mpicc (libopenmpi-dev)")
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_c_example_matches_python(dtype, tmp_path):
    """examples/c/mpi_train.c (mpicc, its own MPI_Allreduce between NAME_train_grads and
    NAME_apply_update) on 2 ranks prints the per-step losses of train_step in one process:
    float32 within 1e-5, float64 (model_float_t double: rows read, gradients summed as
    MPI_DOUBLE, the loss printed with 17 digits) within 1e-12."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import mpi_worker as w
    finally:
        sys.path.pop(0)
    m = w.model("adam", "cmpi", dtype)
    res = m.export(
        str(tmp_path / "libcmpi.so"), entries="infer,train_step,train_grads,apply_update"
    )
    header = Path(res.header).read_text()
    assert "cmpi_train_grads(" in header and "cmpi_apply_update(" in header
    from c_build import build_program

    src = WORKER.parents[1] / "examples" / "c" / "mpi_train.c"
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", '-DMODEL_HEADER="cmpi.h"']
    exe = build_program(src, tmp_path, "cmpi", tmp_path / "mpi_train", flags, cc="mpicc")
    assert (
        "typedef double model_float_t;" in header if dtype == "f64" else "float model_f" in header
    )
    x, y = w.data()
    x = x.astype(np.float64) if dtype == "f64" else x
    rows = tmp_path / "rows.txt"
    np.savetxt(rows, np.hstack([x, y[:, None]]), fmt="%.17g")
    cmd = [MPIRUN, "--oversubscribe", "--allow-run-as-root", "-np", "2", str(exe), str(rows),
           "2", str(w.BATCH), "0.01"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [float(line.split()[3]) for line in r.stdout.splitlines() if line.startswith("step ")]
    ref = w.model("adam", "cmpi_ref", dtype)  # the same initial weights (seed 1)
    want = [
        ref.train_step(x[lo : lo + w.BATCH], y[lo : lo + w.BATCH])
        for _ in range(2)
        for lo in range(0, w.ROWS, w.BATCH)
    ]
    assert len(got) == len(want) == 8
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "f32" else 1e-12)


@need_mpi
@pytest.mark.parametrize("wait", ["sleep", "spin", "spin-shard"])
def test_fit_limits_match_one_process(wait, tmp_path):
    """Distributed fit keeps fit's one-process behaviours, identically on every rank (2 ranks):
    the non-finite stop (NumericsError naming epoch 0, step 2 and the rows; the parameters
    after step 1), batch callbacks (lr set before every batch, Keras's batch logs), and a stop
    request (SIGTERM, what mpirun sends on Ctrl-C) on one rank rolling the unfinished epoch
    back on all; each rank's thread share leaves no more threads than cores. The ranks wait in
    the all-reduce by napping (GRAPHC_MPI_WAIT=sleep: MPI_Iallreduce polled), so that path is
    checked too (the other tests use the default MPI_Allreduce); and spinning with the summed
    update, where the all-reduce and these decisions run inside the native epoch."""
    env = {
        "sleep": {"GRAPHC_MPI_WAIT": "sleep"},
        "spin": UPDATES["summed"],
        "spin-shard": {"GRAPHC_MPI_WAIT": "spin"},  # the shared parameters, native all-reduce
    }[wait]
    r = mpirun(2, "limits", str(tmp_path / "got.npz"), **env)
    assert r.returncode == 0, r.stderr[-3000:]
    serial("limits", str(tmp_path / "ref.npz"))
    got, ref = dict(np.load(tmp_path / "got.npz")), dict(np.load(tmp_path / "ref.npz"))
    assert bool(got["ranks_agree"])  # messages, batch logs, parameters: the same on each rank
    want = str(ref["nan_message"])
    assert "at epoch 0, step 2 (batch rows" in want and "after step 1 of that epoch" in want
    head = want[: want.index(" ...")]  # the rows named: the first five of the batch
    assert str(got["nan_message"]).startswith(head), (got["nan_message"], want)
    assert "not finite on 1 of 2 ranks" in str(got["nan_message"])
    assert int(got["nan_epochs"]) == int(ref["nan_epochs"]) == 0
    assert got["batch_logs"].shape == ref["batch_logs"].shape == (16, 4)
    np.testing.assert_allclose(got["batch_logs"], ref["batch_logs"], rtol=1e-5)
    assert bool(got["stop_interrupted"]) and int(got["stop_epochs"]) == 1
    assert bool(got["stop_handler_restored"])
    for k, want_p in ref.items():
        if "_param_" in k:
            np.testing.assert_allclose(got[k], want_p, rtol=1e-4, atol=1e-5, err_msg=k)
    assert list(got["nodes_kept"]) == [2, 1]  # world's and the Dup's, then world's alone
    shares = got["thread_shares"]
    assert len(shares) == 2 and shares.sum() <= max(int(got["cores"]), 2), shares


@need_mpi
@pytest.mark.parametrize("update", UPDATES)
def test_native_epoch_equals_python_steps(update, tmp_path):
    """The rank's epoch in one native call (NAME_train_epoch_split, the all-reduce a Python
    call-out) makes the very calls of the per-step Python loop: losses and parameters equal
    bit for bit (2 ranks, Adam with dropout, a partial last batch); a SIGTERM that arrives
    inside the native call stops every rank at the next step and rolls the epoch back. The
    later fits of the model reuse the first one's shared-memory window (split_step). Each
    rank checks only its share of the rows for bad labels, and for NaN/Inf the rows its first
    native epoch gathers (every rank stops at the step where one found a bad row and undoes
    the steps before); the error is the one process's (first bad row and count over all rows)
    on every rank."""
    r = mpirun(2, "paths", str(tmp_path / "got.npz"), **UPDATES[update])
    assert r.returncode == 0, r.stderr[-3000:]
    got = dict(np.load(tmp_path / "got.npz"))
    assert str(got["native_path"]) == "native-reduce"  # both: spinning in auto wait mode
    assert int(got["ran_native"]) == 1 and int(got["ran_python"]) == 1
    assert len(got["steps"]) == 2 * 4 and np.isfinite(got["steps"]).all()
    assert bool(got["identical"])  # the first fit's fresh window vs the later fits' kept one
    assert bool(got["window_kept"])
    assert bool(got["interrupted"]) and bool(got["rolled_back"])
    assert bool(got["timeline"])  # distributed.TIMELINE: 4 steps, each 4 ordered times
    one_x, dist_x, one_y, dist_y, one_late, dist_late = got["messages"].tolist()
    assert bool(got["messages_agree"])
    assert one_x == dist_x and "row 10 holds NaN or Inf (3 rows)" in one_x, (one_x, dist_x)
    assert one_y == dist_y and "row 5 has class 4" in one_y and "(2 such rows)" in one_y, dist_y
    assert one_late == dist_late and "holds NaN or Inf (1 rows)" in one_late, dist_late
    # NaN/Inf found by the first epoch's gathers (not a pass up front), at the step where a
    # rank gathered the row (step 0; step 2, after two applied steps): undone on every rank
    # (parameters, step counter and history as before fit); labels are checked up front
    assert got["scans"].tolist() == ["epoch 1 True", "- 0 True", "epoch 3 True"], got["scans"]


@need_mpi
@pytest.mark.parametrize("wait", ["spin", "sleep"])
def test_loops_agreed_and_a_late_stop(wait, tmp_path):
    """A batch callback, use_epoch_entry off or TIMELINE on rank 0 only: every rank runs the
    most general loop (their barriers differ), and the parameters and optimizer state equal
    the fit without them bit for bit (spinning: the native all-reduce on the other ranks
    would otherwise wait forever; napping: both would read each other's half-summed slots).
    A SIGTERM taken after an epoch's last all-reduce (here: after epoch 1's native calls on
    rank 1, spinning) stops every rank at that epoch's end with the epoch kept (before: the
    request was seen at the next step only, and lost after the last epoch)."""
    env = (
        UPDATES["summed"]
        if wait == "spin"
        else {"GRAPHC_MPI_SHARD": "0", "GRAPHC_MPI_WAIT": "sleep"}
    )
    r = mpirun(2, "mixed", str(tmp_path / "got.npz"), timeout=90, **env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = dict(np.load(tmp_path / "got.npz"))
    assert bool(got["callback_rank0"]) and bool(got["timeline_rank0"])
    assert bool(got["no_entry_rank0"])
    assert bool(got["late_stop"])  # the ranks agree
    assert str(got["late_path"]) == ("native-reduce" if wait == "spin" else "native")
    if wait == "spin":  # (napping epochs run the call-out: no native calls to signal after)
        assert bool(got["late_interrupted"])
        assert int(got["late_epochs"]) == 2  # epochs 0 and 1 kept, 2 not run
    assert bool(got["late_handler_restored"])


@need_mpi
@pytest.mark.parametrize("update", UPDATES)
def test_fewer_rows_than_ranks_and_errors_on_some_ranks(update, tmp_path):
    """3 ranks: 2 training rows, and 2 validation rows, train as one process does (a rank
    with no rows adds nothing); an error on some ranks before the first step (another input
    width, batch_size 0, fewer rows) is raised on every rank, naming the rank and the cause,
    instead of leaving the others waiting in a collective (they hung before). A /dev/shm too
    small for the shared-memory window: auto falls back to MPI_Allreduce, window is refused."""
    out = tmp_path / "got.npz"
    r = mpirun(3, "edges", str(out), timeout=90, **UPDATES[update])
    assert r.returncode == 0, r.stderr[-3000:]
    got = dict(np.load(out))
    for k, v in got.items():
        if not k.startswith(("error_", "shm_")):
            np.testing.assert_allclose(v[0], v[1], rtol=1e-5, atol=1e-7, err_msg=k)
    width, batch, rows = got["error_width"], got["error_batch"], got["error_rows"]
    assert "shape (50, 13)" in width[1] and width[1].startswith("ArgumentError")
    assert all("rank 1 of 3 failed" in m and "(50, 13)" in m for m in width[[0, 2]])
    assert batch[0] == "ArgumentError: batch_size must be a positive int, got 0"
    assert all(m.startswith("DistributedError: rank 0 of 3 failed") for m in batch[1:])
    assert all("different numbers of rows [50, 50, 49]" in m for m in rows)
    ckpt = got["error_ckpt"]  # rank 0 refused, ranks 1 and 2 waited in dist.fit (hung)
    assert ckpt[0].startswith("ArgumentError: ModelCheckpoint: the folder"), ckpt
    assert all("rank 0 of 3 failed in fit's callback checks" in m for m in ckpt[1:]), ckpt
    # /dev/shm too small for the shared-memory window: auto falls back to MPI_Allreduce (the
    # same loss as with the window), an explicit GRAPHC_MPI_REDUCE=window is refused on every
    # rank before any step
    auto, window, room = got["shm_auto"], got["shm_window"], got["shm_room"]
    assert all(a.startswith("allreduce ") for a in auto) and len(set(auto)) == 1, auto
    assert all(w.startswith("window ") for w in room), room
    np.testing.assert_allclose(float(auto[0].split()[1]), float(room[0].split()[1]), rtol=1e-6)
    assert all(
        w.startswith("DistributedError: GRAPHC_MPI_REDUCE=window: the shared-memory")
        and "--shm-size" in w
        for w in window
    ), window


def test_losses_that_are_no_row_mean_refuse_data_parallel():
    """The ranks' gradients of ``loss * b / B`` add up to the global batch's only for a mean
    over rows (plus terms of no row). A sum over rows, or RMSE (sqrt of a mean), trained
    silently off the one-process trajectory (2 ranks, 22 rows in batches of 7: parameters 0.3
    and 0.008 away after 2 epochs); they are refused, naming the node, before any collective
    (split_step); the exported split entries, right in one process, are kept
    (tests/test_library_files.py). Mean losses, a weight penalty, dropout
    and a per-row attention product still train data-parallel."""
    from graphc.runtime.distributed import split_step

    def build(name, loss_of, body=lambda x: x):
        x = gc.input("x", ("N", 4, 3))
        t = gc.input("t", ("N", 2))
        o = gc.dense(gc.flatten(body(x)), 2, name="fc")
        return gc.compile(o, loss_of(o, t), gc.SGD(lr=0.1), name=name)

    refused = {
        "sum": (lambda o, t: gc.sum(gc.square(o - t)), "(sum '", "a sum over them"),
        "rmse": (lambda o, t: gc.sqrt(gc.mean(gc.square(o - t))), "(sqrt '", "as a whole"),
    }
    for case, (loss_of, node, how) in refused.items():
        m = build(f"rowmean_{case}", loss_of)
        note = m.program.ranks_note
        assert "is not a mean over the batch's rows" in note and node in note and how in note
        with pytest.raises(gc.DistributedError, match="cannot train data-parallel: its loss"):
            split_step(m, 8, None, "allreduce", False)
    w = gc.param("pen", (2,))

    def attention(x):
        return gc.softmax(x @ gc.transpose(x, (0, 2, 1))) @ x

    kept = {
        "mse": (gc.mean_squared_error, lambda x: x),
        "penalty": (lambda o, t: gc.mean_squared_error(o, t) + 0.1 * gc.sum(w * w), lambda x: x),
        "dropout": (gc.mean_absolute_error, lambda x: gc.dropout(x, 0.2, seed=1)),
        "attention": (gc.huber, attention),
    }
    for case, (loss_of, body) in kept.items():
        assert build(f"rowmean_{case}", loss_of, body).program.ranks_note == "", case


def test_losses_that_are_reductions_of_row_means_train_data_parallel():
    """A sum, mean, reshape or constant product of a mean over rows is still one (linear in
    the per-row losses): torch's mse_loss(reduction='none').mean(0).sum(), mean of a mean, a
    reshape of a keepdims mean were refused by 169f0d4 (review rvG 3). Each has an empty
    ranks_note, and the gradients of 3 + 4 rows with loss_scale b / B, summed as the ranks'
    all-reduce sums them, equal the 7 rows' (no mpirun: SplitStep in one process); the loss
    equals numpy float64's. A max of the column means stays refused."""
    from graphc.runtime.distributed import SplitStep

    wts = np.array([[0.25], [2.0]], np.float32)
    cases = {
        "mean_mean": (lambda s: gc.mean(gc.mean(s, axes=0)), lambda s: s.mean(0).mean()),
        "sum_colmeans": (lambda s: gc.sum(gc.mean(s, axes=0)), lambda s: s.mean(0).sum()),
        "keep_reshape": (
            lambda s: gc.reshape(gc.mean(s, axes=(0, 1), keepdims=True), ()),
            lambda s: s.mean(),
        ),
        "weighted": (
            lambda s: gc.reshape(gc.mean(s, axes=0, keepdims=True) @ gc.constant(wts), ()),
            lambda s: (s.mean(0) @ wts.astype(np.float64))[0],
        ),
    }
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    t = rng.standard_normal((7, 2)).astype(np.float32)
    for case, (loss_of, numpy_loss) in cases.items():
        xi, ti = gc.input("x", ("N", 4)), gc.input("t", ("N", 2))
        o = gc.dense(xi, 2, name="fc")
        m = gc.compile(o, loss_of(gc.square(o - ti)), gc.SGD(lr=0.1), name=f"rm2_{case}")
        assert m.program.ranks_note == "", (case, m.program.ranks_note)
        w = {k: v.astype(np.float64) for k, v in m.params.items()}
        y = x @ w["fc.w"] + w["fc.b"]
        s = SplitStep(m, 7)  # no dropout: no row0
        s.scale[...] = 1.0
        loss = s.grads(s.arrays({"x": x, "t": t}), 7)[0]
        np.testing.assert_allclose(float(loss), numpy_loss((y - t) ** 2), rtol=1e-5, err_msg=case)
        full = s.grad.copy()
        total = np.zeros_like(full)
        for lo, hi in ((0, 3), (3, 7)):
            s.scale[...] = (hi - lo) / 7
            s.grads(s.arrays({"x": x[lo:hi], "t": t[lo:hi]}), hi - lo)
            total += s.grad
        np.testing.assert_allclose(total, full, rtol=1e-5, atol=1e-7, err_msg=case)
    xi, ti = gc.input("x", ("N", 4)), gc.input("t", ("N", 2))
    o = gc.dense(xi, 2, name="fc")
    worst = gc.max(gc.mean(gc.square(o - ti), axes=0))  # not linear: refused
    m = gc.compile(o, worst, gc.SGD(lr=0.1), name="rm2_max")
    assert "(max '" in m.program.ranks_note and "a function of them" in m.program.ranks_note


@need_mpi
def test_callbacks_on_some_ranks_act_as_on_rank_0(tmp_path):
    """Horovod's custom puts callbacks on rank 0 only, and a callback may change lr or the
    weights on one rank. Each rank used to apply its own: a StepLR schedule or
    EarlyStopping(restore_best_weights) on rank 0 only, a batch callback setting lr or one
    setting the weights on the last rank only, left the ranks with different parameters
    (and the run off the one-process trajectory). Now rank 0's lr, parameters and optimizer
    state reach every rank after the callbacks of each epoch's start, each step (batch
    callbacks) and the training's end: every rank ends bit for bit alike, equal to one
    process running rank 0's callbacks (3 ranks). Validation rows that differ between ranks
    (each combined its own figure before) are refused on every rank, naming them. Callbacks
    that print or write files (CSVLogger, ModelCheckpoint with save_model, verbose
    schedules) print and write on rank 0 only."""
    r = mpirun(3, "rank0", str(tmp_path / "got.npz"), timeout=90, **UPDATES["summed"])
    assert r.returncode == 0, r.stderr[-3000:]
    got = dict(np.load(tmp_path / "got.npz"))
    for case in ("steplr", "restore", "batch_lr", "weights"):
        assert bool(got[f"{case}_agree"]), case
        lr = got[f"{case}_lr"]
        np.testing.assert_array_equal(lr[0], lr[1], err_msg=case)
    assert got["steplr_lr"][0].tolist() == [0.01, 0.005, 0.0025]
    for k, v in got.items():
        if "_param_" in k:
            np.testing.assert_allclose(v[0], v[1], rtol=1e-4, atol=1e-5, err_msg=k)
    # callbacks that print and write files, on all 3 ranks: rank 0 alone prints and writes
    # (before: every line 3 times; CSVLogger's rows from 3 processes in one file, mixed into
    # one another; save_model's .gcm written by each)
    assert r.stdout.count("saving model to") == 4, r.stdout
    assert r.stdout.count("LearningRateScheduler setting") == 4, r.stdout
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "0", "1", "2", "3"], lines
    saved = gc.load_model(str(tmp_path / "ck.gcm"))
    np.testing.assert_array_equal(
        np.concatenate([v.ravel() for v in saved.params.values()]), got["files_params"]
    )
    errors = got["validation_errors"]
    assert all(
        e.startswith("DistributedError: rank 1 calls fit with other data")
        and "validation data (input, shape, dtype, digest)" in e
        and "(6, 12)" in e
        for e in errors
    ), errors


@need_mpi
@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("ranks", [2, 3])
def test_ignore_index_trains_data_parallel_as_one_process(ranks, update, tmp_path):
    """softmax_cross_entropy(ignore_index=-100) is a mean over the label positions kept, whose
    counts differ between ranks: each rank's loss_scale is its kept positions over the global
    batch's (distributed.kept_scales), so per-step and epoch losses, validation loss and
    parameters equal the one process's (token labels [N, 3], 40% ignored, an L2 penalty,
    momentum; a step where rank 0 keeps nothing, a global batch keeping nothing, where the
    penalty alone trains; the native epoch and the per-step loop); likewise with class
    weights (the ranks' shares of the kept rows' weights; validation loss weighted by them,
    accuracy by the kept count). Before: refused."""
    r = mpirun(ranks, "ignore", str(tmp_path / "got.npz"), **UPDATES[update])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ordered path: native" in r.stdout and "stepwise path: python" in r.stdout
    serial("ignore", str(tmp_path / "ref.npz"))
    _compare(dict(np.load(tmp_path / "got.npz")), dict(np.load(tmp_path / "ref.npz")))


@need_mpi
def test_batch_callbacks_writing_weights_on_some_ranks_act_as_on_rank_0(tmp_path):
    """A batch callback that calls set_weights mid-epoch on some ranks only: rank 0's weights
    prevail from that step on (before: the steps until the next epoch used each rank's own
    weights: 0.165 off the one-process run, mpibreak). On rank 1 only: as one process without
    the callback; on rank 0 only: as one process with it (2 ranks, Adam, dropout)."""
    r = mpirun(2, "midepoch", str(tmp_path / "got.npz"))
    assert r.returncode == 0, r.stderr[-3000:]
    serial("midepoch", str(tmp_path / "ref.npz"))
    _compare(dict(np.load(tmp_path / "got.npz")), dict(np.load(tmp_path / "ref.npz")))
