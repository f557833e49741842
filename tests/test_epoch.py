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
