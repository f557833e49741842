"""The ``train_epoch`` entry: a whole epoch in one native call, as Model.fit uses it."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def classifier():
    x = gc.input("x", ("N", 6))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 5, "tanh", name="fc1"), 3, name="fc2")
    return gc.compile(
        logits, gc.softmax_cross_entropy(logits, labels), gc.Adam(lr=0.01), name="epochnet", seed=1
    )


def test_epoch_entry_is_bit_identical_to_per_step_calls(classifier) -> None:
    m = classifier
    assert m.epoch_entry is not None
    rng = np.random.default_rng(0)
    x = rng.standard_normal((53, 6)).astype(np.float32)  # 53 = 6 * 8 + 5: a partial last batch
    y = rng.integers(0, 3, 53)
    runs = []
    for use_epoch in (True, False):
        m.initialize(1)
        m.use_epoch_entry = use_epoch
        h = m.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=4)
        runs.append((h["loss"], m.get_weights(), {k: v.copy() for k, v in m.state.items()}))
    m.use_epoch_entry = True
    (l1, w1, s1), (l2, w2, s2) = runs
    assert l1 == l2
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k], err_msg=k)
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k], err_msg=k)
    assert s1["step"] == 3 * 7  # ceil(53 / 8) steps per epoch


def test_batch_callback_falls_back_to_per_step_path(classifier) -> None:
    m = classifier
    seen = []

    class PerBatch:
        def on_batch_end(self, batch, logs):  # Keras's arguments (#13 item 18)
            seen.append(batch)

    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    m.initialize(1)
    h1 = m.fit(x, y, epochs=1, batch_size=6, verbose=0, callbacks=[PerBatch()])
    m.initialize(1)
    h2 = m.fit(x, y, epochs=1, batch_size=6, verbose=0)
    assert h1["loss"] == h2["loss"]
    assert seen == [0, 1, 2, 3]


def test_epoch_entry_rejects_row_index_outside_data(classifier) -> None:
    m = classifier
    e = m.entries["train_step"]
    n, bs = 10, 4
    x = np.zeros((n, 6), np.float32)
    y = np.zeros(n, np.int32)
    feeds = {"x": x, "labels": y, "lr": np.array(0.01, np.float32)}
    arrays = [feeds[s] for s in e.sched.input_slots]
    staging = [
        None if s == "lr" else np.empty((bs,) + feeds[s].shape[1:], feeds[s].dtype)
        for s in e.sched.input_slots
    ]
    order = np.arange(n, dtype=np.int64)
    order[7] = n  # one past the last row
    losses = np.empty(3, np.float32)
    with pytest.raises(gc.ArgumentError, match="row index outside"):
        m.epoch_entry(arrays, staging, n, order, bs, losses)


def test_epoch_matches_numpy_sgd_on_shuffled_minibatches() -> None:
    """Linear regression, SGD, MSE: one epoch against a float64 transcription of
    torch.optim.SGD (p -= lr * grad) with grad of mean((xW + b - y)^2) = 2/B * X^T r."""
    x = gc.input("x", ("N", 4))
    y = gc.input("y", ("N", 1))
    pred = gc.dense(x, 1, name="lin")
    m = gc.compile(pred, gc.mean_squared_error(pred, y), gc.SGD(lr=0.05), name="linreg", seed=3)
    rng = np.random.default_rng(2)
    n, bs = 23, 5
    xs = rng.standard_normal((n, 4)).astype(np.float32)
    ys = rng.standard_normal((n, 1)).astype(np.float32)
    w = m.params["lin.w"].astype(np.float64).copy()
    b = m.params["lin.b"].astype(np.float64).copy()
    order = np.random.default_rng([7, 0]).permutation(n)  # fit's documented shuffling
    losses = []
    for lo in range(0, n, bs):
        idx = order[lo : lo + bs]
        xb, yb = xs[idx].astype(np.float64), ys[idx].astype(np.float64)
        r = xb @ w + b - yb
        losses.append(float(np.mean(r**2)) * len(idx))
        w -= 0.05 * (2.0 / r.size) * xb.T @ r
        b -= 0.05 * (2.0 / r.size) * r.sum(axis=0)
    h = m.fit(xs, ys, epochs=1, batch_size=bs, seed=7, verbose=0)
    np.testing.assert_allclose(m.params["lin.w"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.params["lin.b"], b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h["loss"][0], sum(losses) / n, rtol=1e-4)


class _Spy:
    """Records the ``scan`` flag of every epoch call, then makes it."""

    def __init__(self, real) -> None:
        self.real, self.scans = real, []

    def __call__(self, *a, scan=False, **kw):
        self.scans.append(scan)
        return self.real(*a, scan=scan, **kw)


def _snapshot(m: gc.Model) -> tuple[dict, dict]:
    return (
        {k: v.copy() for k, v in m.params.items()},
        {k: np.array(v, copy=True) for k, v in m.state.items()},
    )


def _assert_same(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    for part_a, part_b in zip(a, b):
        assert part_a.keys() == part_b.keys()
        for k in part_a:
            np.testing.assert_array_equal(part_a[k], part_b[k], err_msg=k)


@pytest.mark.parametrize(
    ("bad", "shuffle"), [(np.nan, False), (np.inf, True), (-np.inf, False), (np.nan, True)]
)
def test_first_epoch_scan_rejects_last_row_and_leaves_everything_unchanged(
    classifier, bad, shuffle
) -> None:
    """fit without callbacks scans each gathered batch natively in its first epoch (no scan of
    the whole data set up front): a NaN/Inf in the very last row of the data (the last batch
    when not shuffled) raises the same ArgumentError as the up-front check (the callback path),
    with the parameters, the optimizer state, the step counter and model.history bit for bit
    as before the call, after earlier fits and their Adam state."""
    m = classifier
    rng = np.random.default_rng(5)
    n = 45  # 45 = 5 * 8 + 5: the last batch is partial
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = rng.integers(0, 3, n)
    m.initialize(1)
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)  # nonzero Adam state and step counter
    hist = m.history
    before = _snapshot(m)
    x[-1, 4] = bad
    spy = m.epoch_entry = _Spy(m.epoch_entry)
    try:
        with pytest.raises(gc.ArgumentError) as native:
            m.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=shuffle, seed=2)
    finally:
        m.epoch_entry = spy.real
    assert spy.scans == [True]  # rejected inside the first (scanning) native epoch
    assert m.history is hist
    _assert_same(_snapshot(m), before)

    class Noop:  # any callback: fit checks the whole data set before anything runs
        def on_epoch_end(self, model, epoch, figures):
            return False

    with pytest.raises(gc.ArgumentError) as upfront:
        m.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[Noop()])
    assert str(native.value) == str(upfront.value)
    assert f"row {n - 1} holds NaN or Inf (1 rows)" in str(native.value)
    _assert_same(_snapshot(m), before)


def test_only_the_first_epoch_scans_and_scanning_changes_no_result(classifier) -> None:
    """Epochs 2.. run the unchecked steps; the scanning first epoch gives bit-identical
    parameters, state and losses to an epoch whose data was checked up front."""
    m = classifier
    rng = np.random.default_rng(6)
    x = rng.standard_normal((37, 6)).astype(np.float32)
    y = rng.integers(0, 3, 37)
    m.initialize(1)
    spy = m.epoch_entry = _Spy(m.epoch_entry)
    try:
        h1 = m.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=1)
        m.epoch_entry = spy.real
        one = _snapshot(m)
        m.initialize(1)
        h2 = m.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=1, allow_nonfinite=True)
    finally:
        m.epoch_entry = spy.real
    assert spy.scans == [True, False, False]
    assert h1["loss"] == h2["loss"]
    _assert_same(_snapshot(m), one)


def test_first_epoch_scan_rejects_bce_targets_outside_unit_interval() -> None:
    """Binary cross-entropy targets: the native [0, 1] check in the first epoch, the same
    message as the up-front check, parameters unchanged."""
    x = gc.input("x", ("N", 3))
    t = gc.input("t", ("N", 1))
    out = gc.dense(x, 1, name="lin")
    m = gc.compile(out, gc.binary_cross_entropy(out, t), gc.Adam(lr=0.01), name="bceep", seed=2)
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((30, 3)).astype(np.float32)
    ts = rng.integers(0, 2, (30, 1)).astype(np.float32)
    ts[29, 0] = 1.5
    before = _snapshot(m)
    with pytest.raises(gc.ArgumentError, match=r"row 29 holds \[1.5\], outside \[0, 1\]"):
        m.fit(xs, ts, epochs=1, batch_size=7, verbose=0, shuffle=False)
    _assert_same(_snapshot(m), before)
    assert int(m.state["step"]) == 0


# Rows of 150 float32 (600 bytes, over codegen.epoch.GATHER_GROUP_MIN_BYTES) are gathered 8 at a
# time; 600 = 4 * 128 + 88 leaves a tail of each row to the group's memcpy, and batches of 20
# rows are two groups and 4 rows copied one by one. The labels (4 bytes a row) are copied row
# by row beside them.
WIDE = 150


@pytest.fixture(scope="module")
def wide_classifier():
    x = gc.input("x", ("N", WIDE))
    labels = gc.input("labels", ("N",), dtype="i32")
    logits = gc.dense(gc.dense(x, 7, "relu", name="fc1"), 3, name="fc2")
    return gc.compile(
        logits, gc.softmax_cross_entropy(logits, labels), gc.Adam(lr=0.01), name="wide", seed=2
    )


def test_grouped_gather_of_wide_rows_is_bit_identical_to_per_step_calls(wide_classifier) -> None:
    """The same epochs through the one-call entry (rows gathered 8 at a time) and through one
    train_step call per batch of numpy-gathered rows: losses, params and state bit for bit."""
    rng = np.random.default_rng(7)
    n = 53  # batches of 20, 20 and 13 rows: 2, 2 and 1 groups of 8 and 4, 4, 5 single rows
    x = rng.standard_normal((n, WIDE)).astype(np.float32)
    _assert_epoch_entry_as_steps(wide_classifier, x, rng.integers(0, 3, n))


def _assert_epoch_entry_as_steps(m: gc.Model, x, y) -> None:
    """Two epochs of batches of 20 (shuffled) through the one-call entry and through one
    train_step call per batch: losses, params and state bit for bit."""
    runs = []
    for use_epoch in (True, False):
        m.initialize(1)
        m.use_epoch_entry = use_epoch
        h = m.fit(x, y, epochs=2, batch_size=20, verbose=0, seed=3)
        runs.append((h["loss"], _snapshot(m)))
    m.use_epoch_entry = True
    assert runs[0][0] == runs[1][0]
    _assert_same(runs[0][1], runs[1][1])


# batches of 20 rows unshuffled: row 27 ends a group (its last element ends the group), 38 is
# copied alone, 47 ends the last batch's only group
@pytest.mark.parametrize("row", [27, 38, 47])
def test_grouped_gather_scan_names_the_row_and_changes_nothing(wide_classifier, row) -> None:
    m = wide_classifier
    rng = np.random.default_rng(8)
    x = rng.standard_normal((53, WIDE)).astype(np.float32)
    y = rng.integers(0, 3, 53)
    m.initialize(1)
    m.fit(x, y, epochs=1, batch_size=20, verbose=0)
    before = _snapshot(m)
    x[row, WIDE - 1] = np.nan  # the last element: in the tail the group copies by memcpy
    spy = m.epoch_entry = _Spy(m.epoch_entry)
    try:
        with pytest.raises(gc.ArgumentError, match=f"row {row} holds NaN or Inf"):
            m.fit(x, y, epochs=2, batch_size=20, verbose=0, shuffle=False)
    finally:
        m.epoch_entry = spy.real
    assert spy.scans == [True]
    _assert_same(_snapshot(m), before)


# The labels are narrow rows (4 bytes): the scanning epoch tests a batch's labels once, over the
# stage they were copied to. (fit checks integer labels up front in Python, so the entry is
# called here directly.) Rows: the first of the data, one gathered beside a group of wide rows,
# one copied alone, the last of the partial last batch; classes 3, -1 and 7 (3 classes).
@pytest.mark.parametrize(("row", "label"), [(0, 3), (27, -1), (38, 3), (52, 7)])
def test_scanning_epoch_rejects_a_label_outside_the_classes(wide_classifier, row, label) -> None:
    """The epoch entry with ``scan`` stops before the step of the batch holding the bad label,
    naming the labels input, with the batches before it run exactly as per-step calls run
    them; the same data with the label mended runs the whole epoch."""
    m = wide_classifier
    e = m.entries["train_step"]
    rng = np.random.default_rng(9)
    n, bs = 53, 20
    feeds = {
        "x": rng.standard_normal((n, WIDE)).astype(np.float32),
        "labels": rng.integers(0, 3, n).astype(np.int32),
        "lr": np.array(0.01, np.float32),
    }
    good = feeds["labels"][row]
    feeds["labels"][row] = label
    arrays = [feeds[s] for s in e.sched.input_slots]
    staging = [
        None if s == "lr" else np.empty((bs,) + feeds[s].shape[1:], feeds[s].dtype)
        for s in e.sched.input_slots
    ]
    order = np.random.default_rng(row).permutation(n).astype(np.int64)
    losses = np.full(3, -1.0, np.float32)
    m.initialize(1)
    with pytest.raises(gc.ArgumentError) as err:
        m.epoch_entry(arrays, staging, n, order, bs, losses, scan=True)
    assert "labels" in str(err.value)
    after = _snapshot(m)
    bad_batch = int(np.nonzero(order == row)[0][0]) // bs
    m.initialize(1)
    for s in range(bad_batch):  # the batches before it, one train_step call each
        idx = order[s * bs : (s + 1) * bs]
        loss = m.train_step(feeds["x"][idx], feeds["labels"][idx])
        assert losses[s] == np.float32(loss)
    assert (losses[bad_batch:] == -1.0).all()
    _assert_same(after, _snapshot(m))
    feeds["labels"][row] = good
    m.epoch_entry(arrays, staging, n, order, bs, losses, scan=True)
    assert (losses >= 0).all()


def test_grouped_gather_rejects_a_row_index_outside_data(wide_classifier) -> None:
    m = wide_classifier
    e = m.entries["train_step"]
    n, bs = 24, 16
    feeds = {
        "x": np.zeros((n, WIDE), np.float32),
        "labels": np.zeros(n, np.int32),
        "lr": np.array(0.01, np.float32),
    }
    arrays = [feeds[s] for s in e.sched.input_slots]
    staging = [
        None if s == "lr" else np.empty((bs,) + feeds[s].shape[1:], feeds[s].dtype)
        for s in e.sched.input_slots
    ]
    for bad_at in (5, 20):  # in the first group of 8; among the rows copied one by one
        order = np.arange(n, dtype=np.int64)
        order[bad_at] = -1 if bad_at == 5 else n
        with pytest.raises(gc.ArgumentError, match="row index outside"):
            m.epoch_entry(arrays, staging, n, order, bs, np.empty(2, np.float32))


def test_integer_and_f64_wide_inputs_gathered_in_groups_train_as_numpy() -> None:
    """Three inputs of rows of exactly 512 bytes (GATHER_GROUP_MIN_BYTES: f32[128], f64[64]
    and i64[64], the last two cast to f32): an i64 feature has no NaN check (its scan was
    emitted as a float one, `fsub <16 x i64>`, and LLVM refused the module); the epoch entry
    gathers all three 8 rows at a time, bit for bit as per-step calls; the first step's loss
    is numpy's float64 softmax cross-entropy; a NaN in the f64 input inside a group is named
    by input and row, with nothing changed."""
    x1 = gc.input("x1", ("N", 128))
    x2 = gc.input("x2", ("N", 64), dtype="f64")
    x3 = gc.input("x3", ("N", 64), dtype="i64")
    labels = gc.input("labels", ("N",), dtype="i32")
    h = gc.concat([x1, gc.cast(x2, dtype="f32"), gc.cast(x3, dtype="f32")], axis=1)
    logits = gc.dense(h, 3, name="fc")
    loss = gc.softmax_cross_entropy(logits, labels)
    m = gc.compile(logits, loss, gc.SGD(lr=0.01), name="wide_ints", seed=2)
    rng = np.random.default_rng(7)
    n = 53  # batches of 20, 20 and 13 rows: groups of 8 and rows copied one by one
    xs = {
        "x1": rng.standard_normal((n, 128)).astype(np.float32),
        "x2": rng.standard_normal((n, 64)),
        "x3": rng.integers(-5, 6, (n, 64)),
    }
    y = rng.integers(0, 3, n)
    w, b = (m.params[k].astype(np.float64) for k in ("fc.w", "fc.b"))
    hb = np.concatenate([xs[k][:20].astype(np.float32).astype(np.float64) for k in xs], axis=1)
    z = hb @ w + b
    z -= z.max(axis=1, keepdims=True)
    want = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(20), y[:20]]))
    first = m.train_step({k: v[:20] for k, v in xs.items()}, y[:20])
    np.testing.assert_allclose(first, want, rtol=1e-5)
    _assert_epoch_entry_as_steps(m, xs, y)
    before = _snapshot(m)
    bad = {k: v.copy() for k, v in xs.items()}
    bad["x2"][27, 63] = np.nan  # the last element of the second batch's first group
    with pytest.raises(gc.ArgumentError, match="input 'x2': row 27 holds NaN or Inf"):
        m.fit(bad, y, epochs=1, batch_size=20, verbose=0, shuffle=False)
    _assert_same(_snapshot(m), before)
