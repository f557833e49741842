"""Learning-rate schedules (no recompile), the learning-rate search, fit's history and progress
output, and learning-curve plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import torch_or_skip as _torch

import graphc as gc
from graphc.callbacks import CosineAnnealingLR, ExponentialLR, LambdaLR, StepLR, run_scripted
from graphc.ir.errors import GraphcError
from graphc.lr_finder import find_lr, steepest
from graphc.plot import have_matplotlib, learning_curves

RNG = np.random.default_rng(7)
X = RNG.normal(size=(64, 3))
W_TRUE = np.array([[1.5], [-2.0], [0.5]])
Y = X @ W_TRUE + 0.3 + 0.05 * RNG.normal(size=(64, 1))


@pytest.fixture(scope="module")
def model():
    x = gc.input("x", ("N", 3), dtype="f64")
    y = gc.input("y", ("N", 1), dtype="f64")
    out = gc.dense(x, 1, name="l")
    return gc.compile(out, loss=gc.mean_squared_error(out, y), optimizer=gc.SGD(lr=0.1), name="lin")


def _grads(w, b):
    r = X @ w + b - Y
    dr = 2 * r / r.size
    return X.T @ dr, dr.sum(axis=0)


def test_step_schedule_changes_rate_without_recompiling(model) -> None:
    model.initialize(0)
    model.lr = 0.1
    jit, entries = model.jit, dict(model.entries)
    w0 = model.get_weights()
    sched = StepLR(step_size=2, gamma=0.5)
    hist = model.fit(X, Y, epochs=5, batch_size=64, shuffle=False, verbose=0, callbacks=[sched])
    rates = [0.1, 0.1, 0.05, 0.05, 0.025]
    assert np.allclose(hist["lr"], rates) and np.allclose(sched.rates, rates)
    assert model.jit is jit and all(model.entries[k] is v for k, v in entries.items())
    w, b = w0["l.w"].astype(np.float64), w0["l.b"].astype(np.float64)
    for lr in rates:  # one full-batch SGD step per epoch with the scheduled rate
        gw, gb = _grads(w, b)
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(model.params["l.w"], w, rtol=1e-10)
    np.testing.assert_allclose(model.params["l.b"], b, rtol=1e-10)


def test_closed_form_schedules() -> None:
    cases = [
        (StepLR(3, 0.1), lambda e: 0.1 * 0.1 ** (e // 3)),
        (ExponentialLR(0.9), lambda e: 0.1 * 0.9**e),
        (
            CosineAnnealingLR(T_max=6, eta_min=0.01),
            lambda e: 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * e / 6)) / 2,
        ),
        (LambdaLR(lambda e: 1 / (1 + e)), lambda e: 0.1 / (1 + e)),
    ]
    for sched, formula in cases:
        run_scripted([sched], [1.0] * 10)
        assert np.allclose(sched.rates, [formula(e) for e in range(10)]), type(sched).__name__
    cos = CosineAnnealingLR(T_max=6, eta_min=0.01)
    run_scripted([cos], [1.0] * 7)
    assert math.isclose(cos.rates[0], 0.1) and math.isclose(cos.rates[6], 0.01)


def test_schedules_match_torch_lr_scheduler() -> None:
    torch = _torch()
    for ours, make in (
        (StepLR(3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (ExponentialLR(0.8), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8)),
        (
            CosineAnnealingLR(5, 0.01),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 5, 0.01),
        ),
    ):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        ts = make(opt)
        want = []
        for _ in range(8):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            ts.step()
        run_scripted([ours], [1.0] * 8)
        assert np.allclose(ours.rates, want)


def test_find_lr_sweeps_suggests_and_restores_everything(model, caplog) -> None:
    model.initialize(3)
    model.lr = 0.1
    model.train_step(X, Y)  # a non-trivial state: step counter 1
    params = model.get_weights()
    state = {k: v.copy() for k, v in model.state.items()}
    res = find_lr(
        model,
        X,
        Y,
        start_lr=1e-4,
        end_lr=10.0,
        num_steps=60,
        batch_size=16,
        plot="/nonexistent-dir/lr.png" if not have_matplotlib() else None,
    )
    assert len(res.lrs) == len(res.losses) == len(res.smoothed) >= 10
    ratios = np.diff(np.log(res.lrs))
    assert np.allclose(ratios, ratios[0])  # exponential sweep
    assert math.isclose(res.lrs[0], 1e-4)
    assert res.suggestion is not None and 1e-4 < res.suggestion < 10.0
    assert min(res.smoothed) < res.smoothed[0]  # the loss did fall during the sweep
    # gradient descent on this least-squares problem diverges for lr > 2/lambda_max ~ 1
    assert res.suggestion < 2.0
    for k, v in params.items():
        assert np.array_equal(model.params[k], v)
    for k, v in state.items():
        assert np.array_equal(model.state[k], v)
    assert model.lr == 0.1
    if not have_matplotlib():
        assert "matplotlib is not installed" in caplog.text  # a warning of the graphc logger


def test_find_lr_with_a_loss_below_zero() -> None:
    """A loss offset below 0 (a negative log-likelihood) sweeps as the same loss offset above
    0 and gives the same suggestion: the divergence test sm > 4 * best held at once for a
    negative best, and the sweep stopped after 2 steps with no suggestion (fastai #962)."""
    res = {}
    for off in (10.0, -10.0):
        x = gc.input("x", ("N", 3), dtype="f64")
        y = gc.input("y", ("N", 1), dtype="f64")
        out = gc.dense(x, 1, name="l")
        m = gc.compile(out, gc.mean_squared_error(out, y) + off, gc.SGD(lr=0.1), name="lin")
        m.initialize(3)
        res[off] = find_lr(m, X, Y, start_lr=1e-4, end_lr=1.0, num_steps=30, batch_size=16)
    up, down = res[10.0], res[-10.0]
    assert len(down.lrs) == len(up.lrs) == 30  # no divergence below lr 1 (diverges > ~2)
    assert np.allclose(np.array(down.losses) + 20.0, up.losses, rtol=1e-9, atol=1e-9)
    assert down.suggestion is not None and math.isclose(down.suggestion, up.suggestion)
    with pytest.raises(gc.ArgumentError, match="diverge"):
        find_lr(m, X, Y, diverge=1.0)


def test_steepest_descent_of_a_known_curve() -> None:
    lrs = list(np.logspace(-5, 0, 51))
    smoothed = [1.0 - math.tanh(math.log10(lr) + 2.5) for lr in lrs]  # steepest at 10^-2.5
    assert math.isclose(math.log10(steepest(lrs, smoothed)), -2.5, abs_tol=0.05)


def test_fit_history_and_plain_progress_lines(model, capsys) -> None:
    model.initialize(0)
    model.lr = 0.05
    hist = model.fit(X, Y, epochs=3, batch_size=16, validation_split=0.25, verbose=1)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith("epoch 1/3") and "val_loss" in out[0]
    for key in ("loss", "val_loss", "val_mse", "val_mae", "lr"):
        assert len(hist[key]) == 3, key
    assert hist.epoch == hist.epochs == [0, 1, 2]  # Keras's History.epoch
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert math.isclose(hist["val_loss"][-1], hist["val_mse"][-1], rel_tol=1e-9)
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    assert capsys.readouterr().out == ""


def test_learning_curves_plot_or_clear_message(tmp_path) -> None:
    hist = {"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.8]}
    path = str(tmp_path / "curves.png")
    if have_matplotlib():
        learning_curves(hist, path)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        with pytest.raises(GraphcError, match="pip install matplotlib"):
            learning_curves(hist, path)
    with pytest.raises(GraphcError, match="none of"):
        learning_curves({"acc": [1.0]}, path)


def test_schedule_continues_across_fit_calls() -> None:
    sched = ExponentialLR(0.5)
    model, _ = run_scripted([sched], [1.0] * 3)
    assert np.allclose(sched.rates, [0.1, 0.05, 0.025])
    run_scripted([sched], [1.0] * 2, model=model)  # the base rate stays 0.1, not 0.025
    assert np.allclose(sched.rates, [0.1, 0.05])


def test_metrics_match_their_definitions() -> None:
    from types import SimpleNamespace

    from graphc.runtime.model import Model

    rng = np.random.default_rng(3)

    def metrics(kind, out, y):
        stub = SimpleNamespace(
            program=SimpleNamespace(loss_kind=kind, label_inputs=["y"]),
            _ignored_label=lambda name: None,  # no loss's ignore_index (tests/test_xent_ignore)
        )
        return Model._metrics(stub, out, {"y": y})

    logits, labels = rng.normal(size=(50, 4)), rng.integers(0, 4, 50)
    acc = metrics("softmax_cross_entropy", logits, labels)["accuracy"]
    assert acc == np.mean(logits.argmax(1) == labels)
    z, t = rng.normal(size=(50, 1)), rng.integers(0, 2, (50, 1)).astype(np.float32)
    assert metrics("binary_cross_entropy", z, t)["accuracy"] == np.mean((z > 0) == (t > 0.5))
    p, q = rng.normal(size=(50, 1)), rng.normal(size=(50, 1))
    m = metrics("mean_squared_error", p, q)
    assert np.isclose(m["mse"], np.mean((p - q) ** 2)) and np.isclose(
        m["mae"], np.mean(np.abs(p - q))
    )


@pytest.mark.parametrize("n, fraction", [(10, 0.25), (3, 0.5), (7, 0.5), (64, 0.3), (50, 0.29)])
def test_validation_split_holds_out_keras_rows(model, n, fraction) -> None:
    """Keras trains on the first floor(n * (1.0 - fraction)) rows and validates on the rest;
    graphc rounded (10 rows at 0.25: 8 training rows instead of 7). val_loss of the held-out
    rows against the reference mean over exactly those rows."""
    model.initialize(0)
    cut = math.floor(n * (1.0 - fraction))
    hist = model.fit(
        X[:n], Y[:n], epochs=1, batch_size=n, validation_split=fraction, shuffle=False, verbose=0
    )
    p = model.predict(X[cut:n])
    assert math.isclose(hist["val_loss"][0], float(np.mean((p - Y[cut:n]) ** 2)), rel_tol=1e-9)
    _, _, rows = model._split_validation({"x": X[:n], "y": Y[:n]}, n, fraction)
    assert rows == cut


def test_schedules_refuse_bad_factors_and_name_a_bad_rate(model) -> None:
    # a negative gamma / eta_min was taken, and fit stopped after an epoch with the model's
    # "the learning rate must be ... nothing was changed" (an epoch had been trained)
    for make in (
        lambda: ExponentialLR(-0.5),
        lambda: StepLR(1, gamma=math.nan),
        lambda: CosineAnnealingLR(4, eta_min=-1.0),
    ):
        with pytest.raises(GraphcError, match="must be a finite number >= 0"):
            make()
    model.initialize(0)
    model.lr = 0.1
    sched = LambdaLR(lambda e: 1.0 - e)  # epoch 2: -0.1
    with pytest.raises(gc.ArgumentError, match=r"LambdaLR: the rate for epoch 2 is -0\.1"):
        model.fit(X, Y, epochs=4, verbose=0, callbacks=[sched])
    assert model.history.epochs == [0, 1] and model.lr == 0.0  # epoch 1's rate, kept


def test_find_lr_keeps_the_schedules_base_rate(model) -> None:
    # after a scheduled fit, lr is the decayed rate and initial_lr the base a resumed schedule
    # starts from; find_lr set lr outside fit, which made initial_lr the decayed rate
    model.initialize(0)
    model.lr = 0.1
    model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[StepLR(1, 0.5)])
    assert (model.lr, model.initial_lr) == (0.025, 0.1)
    find_lr(model, X, Y, num_steps=5, batch_size=16)
    assert (model.lr, model.initial_lr) == (0.025, 0.1)
    hist = model.fit(X, Y, epochs=4, initial_epoch=3, verbose=0, callbacks=[StepLR(1, 0.5)])
    assert hist["lr"] == [0.1 * 0.5**3]


def test_validation_data_overrides_validation_split(model) -> None:
    # Keras: validation_data overrides validation_split; graphc held out the split's rows
    # (training on 48 of 64) and validated on them instead of on validation_data
    model.initialize(0)
    model.lr = 0.1
    w0 = model.get_weights()
    hist = model.fit(
        X, Y, epochs=1, batch_size=64, shuffle=False, verbose=0,
        validation_data=(X[:5], Y[:5]), validation_split=0.25,
    )  # fmt: skip
    assert math.isclose(
        hist["val_loss"][0], float(np.mean((model.predict(X[:5]) - Y[:5]) ** 2)), rel_tol=1e-9
    )
    gw, gb = _grads(w0["l.w"], w0["l.b"])  # one full-batch step on all 64 rows
    np.testing.assert_allclose(model.params["l.w"], w0["l.w"] - 0.1 * gw, rtol=1e-10)
    np.testing.assert_allclose(model.params["l.b"], w0["l.b"] - 0.1 * gb, rtol=1e-10)


def test_keras_learning_rate_scheduler_steps_with_the_rates_it_returns(model, capsys) -> None:
    model.initialize(0)
    model.lr = 0.1
    w0 = model.get_weights()
    sched = gc.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else lr * 0.5, verbose=1)
    hist = model.fit(X, Y, epochs=2, batch_size=64, shuffle=False, verbose=0, callbacks=[sched])
    hist2 = model.fit(  # resumed: from the rate the model holds, as Keras
        X, Y, epochs=3, initial_epoch=2, batch_size=64, shuffle=False, verbose=0,
        callbacks=[sched],
    )  # fmt: skip
    rates = [0.1, 0.05, 0.025]
    assert hist["lr"] + hist2["lr"] == rates and sched.rates == [0.025]
    w, b = w0["l.w"].astype(np.float64), w0["l.b"].astype(np.float64)
    for lr in rates:  # one full-batch SGD step per epoch with the scheduled rate
        gw, gb = _grads(w, b)
        w, b = w - lr * gw, b - lr * gb
    np.testing.assert_allclose(model.params["l.w"], w, rtol=1e-10)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "Epoch 3: LearningRateScheduler setting learning rate to 0.025."
    )
    one_arg = gc.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    assert model.fit(X, Y, epochs=2, verbose=0, callbacks=[one_arg])["lr"] == [0.01, 0.02]
    with pytest.raises(gc.ArgumentError, match=r"returned -1 for epoch 1"):
        model.fit(
            X, Y, epochs=3, verbose=0, callbacks=[gc.LearningRateScheduler(lambda e: 1 - 2 * e)]
        )
    assert model.history.epochs == [0]

    # a TypeError inside a two-argument schedule was taken for "takes one argument": the
    # schedule was called again as schedule(epoch), hiding the user's error behind
    # "missing 1 required positional argument: 'lr'"
    def buggy(epoch, lr):
        return lr * "0.5" if epoch else lr

    with pytest.raises(TypeError, match="can't multiply sequence"):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[gc.LearningRateScheduler(buggy)])
    assert model.history.epochs == [0]
    model.lr = 0.04
    star = gc.LearningRateScheduler(lambda *a: a[1] * 0.5)  # *args: gets the rate too
    assert model.fit(X, Y, epochs=2, verbose=0, callbacks=[star])["lr"] == [0.02, 0.01]


def test_fit_names_keras_arguments_it_has_not(model) -> None:
    # Keras's sample_weight, class_weight, steps_per_epoch: Python TypeErrors before
    for kw, msg in [
        ({"class_weight": {0: 1.0}}, "weigh every row alike"),
        ({"sample_weight": np.ones(64)}, "oversampling"),
        ({"steps_per_epoch": 3}, "one pass over all rows"),
        ({"epoch": 3}, "Its arguments: x, y, epochs"),
    ]:
        with pytest.raises(gc.ArgumentError, match=msg):
            model.fit(X, Y, verbose=0, **kw)


def test_warm_up_and_step_schedules_give_torchs_rates() -> None:
    # the rates torch.optim.lr_scheduler (2.x) steps through from lr 0.1, recorded
    want = {
        "linear": [0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.1, 0.1],
        "linear_down": [0.1, 0.082, 0.064, 0.046, 0.028, 0.01, 0.01],
        "multistep": [0.1, 0.1, 0.05, 0.05, 0.05, 0.0125, 0.0125, 0.0125, 0.0125, 0.00625],
        "poly": [0.1, 0.0694444444, 0.0444444444, 0.025, 0.0111111111, 0.0027777778, 0.0, 0.0],
    }
    made = {
        "linear": gc.LinearLR(start_factor=0.25, end_factor=1.0, total_iters=4),
        "linear_down": gc.LinearLR(start_factor=1.0, end_factor=0.1, total_iters=5),
        "multistep": gc.MultiStepLR([2, 5, 5, 9], gamma=0.5),
        "poly": gc.PolynomialLR(total_iters=6, power=2.0),
    }
    for name, sched in made.items():
        run_scripted([sched], [1.0] * len(want[name]))
        np.testing.assert_allclose(sched.rates, want[name], rtol=1e-8, atol=1e-12, err_msg=name)
    for bad in (
        lambda: gc.LinearLR(start_factor=0.0),
        lambda: gc.MultiStepLR([1.5]),
        lambda: gc.PolynomialLR(total_iters=0),
    ):
        with pytest.raises(GraphcError):
            bad()


def test_numpy_scalars_are_numbers_for_schedules_and_optimizers() -> None:
    # a value from a numpy grid (np.float32(0.25), np.arange's np.int64) was refused with a
    # message that it lies outside the range it lies in ("start_factor must lie in (0, 1],
    # got np.float32(0.25)"); now it gives what the Python number gives
    f, i = np.float32, np.int64
    pairs = [
        (gc.LinearLR(f(0.25), f(0.5), i(4)), gc.LinearLR(0.25, 0.5, 4)),
        (gc.MultiStepLR(np.arange(2, 6, 3), gamma=f(0.5)), gc.MultiStepLR([2, 5], gamma=0.5)),
        (gc.PolynomialLR(i(6), power=f(2.0)), gc.PolynomialLR(6, power=2.0)),
    ]
    for a, b in pairs:
        run_scripted([a], [1.0] * 8)
        run_scripted([b], [1.0] * 8)
        assert a.rates == b.rates, type(a).__name__
    assert gc.Adam(lr=f(0.5), clipnorm=f(2.0)) == gc.Adam(lr=0.5, clipnorm=2.0)
    assert gc.SGD(lr=f(0.5), momentum=f(0.25), global_clipnorm=i(3)) == gc.SGD(
        lr=0.5, momentum=0.25, global_clipnorm=3.0
    )
    for bad in (lambda: gc.LinearLR(True), lambda: gc.MultiStepLR([np.float64(2.0)])):
        with pytest.raises(GraphcError):
            bad()
