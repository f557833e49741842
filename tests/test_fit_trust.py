"""fit stops at a non-finite loss (#13 item 8), an interrupted epoch is rolled back so a resumed
run follows the uninterrupted one (item 16), and batch callbacks get Keras's arguments (item 18).

References: numpy float64 SGD on a linear model (item 8), the uninterrupted run and a
checkpoint round trip (item 16), per-batch losses of the documented formula (item 18)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import graphc as gc

ROWS, BS, LR = 20, 4, 0.05


def _linear() -> gc.Model:
    x, y = gc.input("x", ("N", 3)), gc.input("y", ("N", 1))
    out = gc.dense(x, 1, name="lin")
    return gc.compile(out, gc.mean_squared_error(out, y), gc.SGD(lr=LR), name="lintrust", seed=3)


@pytest.fixture
def ctrl_c():
    """SIGINT with Python's default handler (KeyboardInterrupt) during the test: a shell that
    starts the suite in the background (`cmd &` without job control, nohup) gives it SIGINT
    ignored, and fit then rightly leaves Ctrl-C alone (it defers only the default handler)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((ROWS, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    return x, y


def _sgd_reference(m: gc.Model, x: np.ndarray, y: np.ndarray, steps: int) -> dict:
    """float64 SGD on mean((x w + b - y)^2) over consecutive batches (shuffle=False)."""
    w = m.params["lin.w"].astype(np.float64)
    b = m.params["lin.b"].astype(np.float64)
    for s in range(steps):
        xb, yb = x[s * BS : (s + 1) * BS].astype(np.float64), y[s * BS : (s + 1) * BS]
        r = xb @ w + b - yb
        w = w - LR * 2 * xb.T @ r / r.size
        b = b - LR * 2 * r.sum(axis=0) / r.size
    return {"lin.w": w, "lin.b": b}


@pytest.mark.parametrize("one_call_epoch", [True, False])
def test_fit_stops_at_the_first_nonfinite_loss_with_the_last_finite_parameters(
    data, one_call_epoch: bool
) -> None:
    x, y = data
    x = x.copy()
    x[13, 1] = np.inf  # row 13 is in step 3 (rows 12..15) of every epoch
    m = _linear()
    m.use_epoch_entry = one_call_epoch
    start = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(gc.NumericsError, match=r"epoch 0, step 3\b.*after step 2"):
        m.fit(x, y, epochs=2, batch_size=BS, shuffle=False, verbose=0, allow_nonfinite=True)
    assert m.history.epochs == [] and int(m.state["step"]) == 3
    m2 = _linear()
    m2.set_weights(start)
    want = _sgd_reference(m2, x, y, 3)
    for k in want:
        assert np.all(np.isfinite(m.params[k]))
        np.testing.assert_allclose(m.params[k], want[k], rtol=1e-5, atol=1e-6)
    # the option turns the stop off: training goes on into NaN as before
    m.fit(
        x,
        y,
        epochs=1,
        batch_size=BS,
        shuffle=False,
        verbose=0,
        allow_nonfinite=True,
        stop_on_nonfinite=False,
    )
    assert not np.all(np.isfinite(m.params["lin.w"]))


def test_nonfinite_loss_in_a_later_epoch_keeps_the_finished_epochs(data) -> None:
    x, y = data
    m = _linear()
    m.lr = 1.5  # diverges: the loss grows geometrically and overflows after a few epochs
    with pytest.raises(gc.NumericsError, match=r"at epoch \d+, step \d+") as err:
        m.fit(x, y, epochs=500, batch_size=BS, shuffle=False, verbose=0)
    assert all(np.all(np.isfinite(v)) for v in m.params.values())
    done = len(m.history.epochs)
    assert done >= 2 and np.all(np.isfinite(m.history["loss"]))
    assert f"at epoch {done}, step" in str(err.value)


class _InterruptAfterEpochs:
    """Raises KeyboardInterrupt as the native epoch call returns, epoch ``at`` (as Ctrl-C
    pressed during the call does: Python raises it right after the call)."""

    def __init__(self, real, at: int) -> None:
        self.real, self.at, self.calls = real, at, 0

    def __call__(self, *a, **kw):
        out = self.real(*a, **kw)
        self.calls += 1
        if self.calls == self.at + 1:
            raise KeyboardInterrupt
        return out


def test_interrupt_during_a_one_call_epoch_rolls_back_and_resumes_exactly(data, tmp_path) -> None:
    x, y = data
    fit = dict(batch_size=BS, verbose=0, seed=4)
    ref = _linear()
    ref_hist = ref.fit(x, y, epochs=4, **fit)
    m = _linear()
    m.epoch_entry = _InterruptAfterEpochs(m.epoch_entry, at=2)
    h = m.fit(x, y, epochs=4, **fit)
    assert h.interrupted and h.epochs == [0, 1] and h["loss"] == ref_hist["loss"][:2]
    steps_per_epoch = -(-ROWS // BS)
    assert int(m.state["step"]) == 2 * steps_per_epoch  # no step of the rolled-back epoch
    path = str(tmp_path / "ck.npz")
    m.save(path)
    resumed = _linear()
    header = resumed.load(path)
    assert header["epochs_done"] == 2
    h2 = resumed.fit(x, y, epochs=4, initial_epoch=header["epochs_done"], **fit)
    assert h2["loss"] == ref_hist["loss"][2:]
    for k in ref.params:
        np.testing.assert_array_equal(resumed.params[k], ref.params[k])
    np.testing.assert_array_equal(resumed.state["step"], ref.state["step"])


def test_sigint_in_the_middle_of_a_per_step_epoch_rolls_back(data, ctrl_c) -> None:
    x, y = data
    fit = dict(batch_size=BS, verbose=0, seed=4)
    ref = _linear()
    ref.fit(x, y, epochs=1, **fit)
    after_one = {k: v.copy() for k, v in ref.params.items()}
    m = _linear()
    seen = []

    class CtrlC:
        def on_batch_end(self, batch, logs):
            seen.append((len(seen), batch))
            if len(seen) == 7:  # epoch 1, batch 1: a real SIGINT to this process
                os.kill(os.getpid(), signal.SIGINT)

    h = m.fit(x, y, epochs=3, callbacks=[CtrlC()], **fit)
    assert h.interrupted and h.epochs == [0]
    for k in after_one:
        np.testing.assert_array_equal(m.params[k], after_one[k])
    assert int(m.state["step"]) == -(-ROWS // BS)


def test_batch_callbacks_get_keras_arguments(data) -> None:
    x, y = data
    m = _linear()
    start = {k: v.copy() for k, v in m.params.items()}
    calls = []

    class Recorder:
        def on_batch_begin(self, batch, logs):
            calls.append(("begin", batch, dict(logs)))

        def on_batch_end(self, batch, logs):
            calls.append(("end", batch, dict(logs)))

    m.fit(x[:18], y[:18], epochs=1, batch_size=BS, shuffle=False, verbose=0, callbacks=[Recorder()])
    assert [(c[0], c[1]) for c in calls] == [(w, b) for b in range(5) for w in ("begin", "end")]
    sizes = [c[2]["size"] for c in calls if c[0] == "end"]
    assert sizes == [4, 4, 4, 4, 2]
    # each batch's loss against float64 SGD on the same batches (the documented MSE)
    ref = _linear()
    ref.set_weights(start)
    w = {k: v.astype(np.float64) for k, v in start.items()}
    total = 0.0
    for b, (_, _, logs) in enumerate(c for c in calls if c[0] == "end"):
        xb, yb = x[b * BS : b * BS + sizes[b]].astype(np.float64), y[b * BS : b * BS + sizes[b]]
        r = xb @ w["lin.w"] + w["lin.b"] - yb
        np.testing.assert_allclose(logs["batch_loss"], np.mean(r**2), rtol=1e-5)
        total += logs["batch_loss"] * sizes[b]
        np.testing.assert_allclose(logs["loss"], total / (b * BS + sizes[b]), rtol=1e-12)
        w["lin.w"] = w["lin.w"] - LR * 2 * xb.T @ r / r.size
        w["lin.b"] = w["lin.b"] - LR * 2 * r.sum(axis=0) / r.size


def test_sigint_during_a_one_call_epoch_finishes_and_commits_that_epoch(data, ctrl_c) -> None:
    """A real SIGINT while epoch 2 runs natively: the epoch completes, enters the history, and
    fit stops there; resuming gives the uninterrupted run."""
    x, y = data
    fit = dict(batch_size=BS, verbose=0, seed=4)
    ref = _linear()
    ref_hist = ref.fit(x, y, epochs=4, **fit)
    m = _linear()
    assert m.epoch_entry is not None

    class CtrlCAtEpoch2:
        def on_epoch_begin(self, model, epoch):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    h = m.fit(x, y, epochs=4, callbacks=[CtrlCAtEpoch2()], **fit)
    assert h.interrupted and h.epochs == [0, 1, 2] and h["loss"] == ref_hist["loss"][:3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    m.fit(x, y, epochs=4, initial_epoch=3, **fit)
    for k in ref.params:
        np.testing.assert_array_equal(m.params[k], ref.params[k])
