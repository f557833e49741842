"""Resuming a learning-rate schedule from a checkpoint (``fit(initial_epoch=k)`` after
``load``, in a new process's model and a new schedule object) gives the rates and the final
weights of an uninterrupted run: the documented formulas with the base rate, not the decayed
rate the checkpoint held (torch's schedulers resume from ``initial_lr`` likewise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import torch_or_skip

import graphc as gc

RS = np.random.RandomState(0)
X = RS.randn(24, 4).astype(np.float32)
Y = RS.randint(0, 3, 24).astype(np.int32)
BASE = 0.1

SCHEDULES = {  # the schedule, and its documented rate at epoch e for base rate b
    "step": (lambda: gc.StepLR(2, 0.5), lambda e, b: b * 0.5 ** (e // 2)),
    "exponential": (lambda: gc.ExponentialLR(0.7), lambda e, b: b * 0.7**e),
    "cosine": (
        lambda: gc.CosineAnnealingLR(5, eta_min=0.001),
        lambda e, b: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * e / 5)) / 2,
    ),
    "lambda": (lambda: gc.LambdaLR(lambda e: 1 / (1 + e)), lambda e, b: b / (1 + e)),
}


def build() -> gc.Model:
    x = gc.input("x", ("N", 4))
    y = gc.input("labels", ("N",), dtype="i32")
    lg = gc.dense(x, 3, name="d")
    m = gc.compile(lg, gc.softmax_cross_entropy(lg, y), gc.SGD(lr=BASE), name="lrres")
    m.initialize(seed=0)
    return m


def fit(m: gc.Model, sched, epochs: int, initial_epoch: int = 0) -> list[float]:
    h = m.fit(
        X, Y, epochs=epochs, initial_epoch=initial_epoch, batch_size=8, verbose=0,
        shuffle=False, callbacks=[sched],
    )  # fmt: skip
    return list(h["lr"])


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_resumed_schedule_equals_uninterrupted_run(kind, tmp_path) -> None:
    make, formula = SCHEDULES[kind]
    a = build()
    whole = fit(a, make(), 5)
    np.testing.assert_allclose(whole, [formula(e, BASE) for e in range(5)], rtol=1e-12)
    b = build()
    fit(b, make(), 3)
    b.save(str(tmp_path / "ck.npz"))
    c = build()  # a new process: new model, new schedule
    c.load(str(tmp_path / "ck.npz"))
    assert c.initial_lr == BASE and c.lr == pytest.approx(formula(2, BASE))
    resumed = fit(c, make(), 5, initial_epoch=3)
    np.testing.assert_allclose(resumed, whole[3:], rtol=1e-12)
    for k, v in a.params.items():
        np.testing.assert_allclose(c.params[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
    # in the same process, the same model and a new schedule object: the same
    d = build()
    fit(d, make(), 3)
    np.testing.assert_allclose(fit(d, make(), 5, initial_epoch=3), whole[3:], rtol=1e-12)


def test_a_deliberate_new_base_rate_is_kept_on_resume(tmp_path) -> None:
    make, formula = SCHEDULES["step"]
    b = build()
    fit(b, make(), 3)
    b.save(str(tmp_path / "ck.npz"))
    c = build()
    c.load(str(tmp_path / "ck.npz"))
    c.lr = 0.04  # the user's new base rate, set outside fit
    assert c.initial_lr == 0.04
    np.testing.assert_allclose(
        fit(c, make(), 5, initial_epoch=3), [formula(e, 0.04) for e in (3, 4)]
    )
    e = build()
    e.load(str(tmp_path / "ck.npz"))
    e.initial_lr = 0.2
    np.testing.assert_allclose(fit(e, make(), 4, initial_epoch=3), [formula(3, 0.2)])
    with pytest.raises(gc.ArgumentError):
        e.initial_lr = float("nan")


def test_plateau_and_early_stopping_counters_resume_with_the_checkpoint(tmp_path) -> None:
    """ReduceLROnPlateau and EarlyStopping resumed from their state_dict (saved in the
    checkpoint's extra) lower the rate and stop at the epochs of the uninterrupted run, with
    the same weights bit for bit; fresh callbacks (what resuming gave before) do not: they
    took the first resumed epoch as an improvement (rates 0.075 one epoch longer, one epoch
    more trained)."""
    import numpy as np

    import graphc as gc

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    lab = rng.integers(0, 3, 40)

    def model():
        x, y = gc.input("x", ("N", 4)), gc.input("y", ("N",), dtype="i32")
        z = gc.dense(gc.dense(x, 8, "tanh"), 3)
        return gc.compile(z, gc.softmax_cross_entropy(z, y), gc.SGD(0.3, momentum=0.9))

    def callbacks():
        return [
            gc.ReduceLROnPlateau("loss", patience=0, factor=0.5, threshold=0.05),
            gc.EarlyStopping("loss", patience=2, min_delta=0.02),
        ]

    kw = dict(batch_size=8, verbose=0)
    a = model()
    whole = a.fit(X, lab, epochs=14, callbacks=callbacks(), **kw)
    assert whole.stopped_early and len(set(whole["lr"])) >= 3 and len(whole["lr"]) > 6
    b, cbs = model(), callbacks()
    first = b.fit(X, lab, epochs=5, callbacks=cbs, **kw)
    path = b.save(
        str(tmp_path / "ck.npz"), extra={"plateau": cbs[0].state_dict(), "es": cbs[1].state_dict()}
    )
    for restore in (True, False):
        c, cbs = model(), callbacks()
        extra = c.load(path)["extra"]
        if restore:
            cbs[0].load_state_dict(extra["plateau"])
            cbs[1].load_state_dict(extra["es"])
        rest = c.fit(X, lab, epochs=14, initial_epoch=5, callbacks=cbs, **kw)
        same_weights = all(
            np.array_equal(u, v) for u, v in zip(a.get_weights().values(), c.get_weights().values())
        )
        assert (first["lr"] + rest["lr"] == whole["lr"] and same_weights) == restore
    with pytest.raises(gc.GraphcError, match="not a state_dict"):
        gc.ReduceLROnPlateau().load_state_dict({"best": 1.0})


# a monitored loss with improving and flat stretches: plateaus at epochs 2-4 and 7-9
LOSSES = [1.0, 0.8, 0.8, 0.8, 0.8, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.3]
CHAINED = {  # graphc's schedule, and torch's (chainable form) with the same formula
    "step": (lambda: gc.StepLR(3, 0.5), lambda t, o: t.StepLR(o, 3, 0.5)),
    "multistep": (lambda: gc.MultiStepLR([2, 6], 0.3), lambda t, o: t.MultiStepLR(o, [2, 6], 0.3)),
    "exponential": (lambda: gc.ExponentialLR(0.9), lambda t, o: t.ExponentialLR(o, 0.9)),
    "linear": (lambda: gc.LinearLR(0.25, 1.0, 4), lambda t, o: t.LinearLR(o, 0.25, 1.0, 4)),
    "polynomial": (lambda: gc.PolynomialLR(12, 2.0), lambda t, o: t.PolynomialLR(o, 12, 2.0)),
}


class _Rate:
    lr = BASE
    initial_lr = None


def _chained_rates(sched, plateau) -> list[float]:
    """fit's calls of the two callbacks over LOSSES, on an object holding the rate."""
    m = _Rate()
    sched.check_together([plateau, sched])
    rates = []
    for cb in (sched, plateau):
        cb.on_train_begin(m)
    for e, loss in enumerate(LOSSES):
        sched.on_epoch_begin(m, e)
        rates.append(m.lr)
        plateau.on_epoch_end(m, e, {"loss": loss})
    return rates


@pytest.mark.parametrize("kind", list(CHAINED))
def test_a_schedule_composes_with_reduce_lr_on_plateau(kind) -> None:
    """An LR schedule and ReduceLROnPlateau in one fit (refused before): epoch e trains at
    rate(e) times the product of the plateau's reductions so far, the rates of torch's chained
    pair (its chainable forms multiply the current rate by rate(e) / rate(e - 1)); checked
    against that formula written here and, where torch is installed, torch's rates."""
    make, _ = CHAINED[kind]
    plateau = gc.ReduceLROnPlateau("loss", patience=1, factor=0.5)
    got = _chained_rates(make(), plateau)
    sched = make()
    scale, want = 1.0, []
    for e in range(len(LOSSES)):
        want.append(sched.rate(e, BASE) * scale)
        if e in plateau.reductions:
            scale *= 0.5
    assert plateau.reductions == [3, 8, 10]  # torch's count: the 2nd flat epoch after the best
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert plateau.state_dict()["scale"] == 0.125


@pytest.mark.parametrize("kind", list(CHAINED))
def test_the_composed_rates_equal_torchs_chained_schedulers(kind) -> None:
    torch = torch_or_skip()
    make, make_torch = CHAINED[kind]
    got = _chained_rates(make(), gc.ReduceLROnPlateau("loss", patience=1, factor=0.5))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE)
    t = torch.optim.lr_scheduler
    sched, plateau = make_torch(t, opt), t.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    want = []
    for loss in LOSSES:
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        plateau.step(loss)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_schedule_with_reduce_lr_on_plateau_trains_and_resumes(tmp_path) -> None:
    """In fit, on a plateau from the start (zero weights and targets: loss 0, no gradient), the
    composed rates; a run resumed from a checkpoint with the plateau's state_dict (its scale
    included) continues them (with scale 1 the resumed rates were 2x, 4x too high)."""
    Z = np.zeros((8, 1), np.float32)

    def model():
        x, y = gc.input("x", ("N", 4)), gc.input("y", ("N", 1))
        p = gc.dense(x, 1, name="d")
        m = gc.compile(p, gc.mean_squared_error(p, y), gc.SGD(lr=BASE), name="plat")
        m.set_weights({k: np.zeros_like(v) for k, v in m.get_weights().items()})
        return m

    def run(m, epochs, cbs, initial_epoch=0):
        h = m.fit(X[:8], Z, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=cbs)
        return list(h["lr"])

    def cbs():
        return [gc.ExponentialLR(0.9), gc.ReduceLROnPlateau("loss", patience=0, factor=0.5)]

    whole = run(model(), 5, cbs())
    np.testing.assert_allclose(
        whole, [BASE * 0.9**e * 0.5 ** max(e - 1, 0) for e in range(5)], rtol=1e-12
    )
    b, first = model(), cbs()
    run(b, 3, first)
    path = b.save(str(tmp_path / "ck.npz"), extra={"plateau": first[1].state_dict()})
    c, rest = model(), cbs()
    rest[1].load_state_dict(c.load(path)["extra"]["plateau"])
    np.testing.assert_allclose(run(c, 5, rest, initial_epoch=3), whole[3:], rtol=1e-12)


def test_early_stopping_restores_the_best_weights_seen_before_a_resume(tmp_path) -> None:
    """EarlyStopping(restore_best_weights=True) resumed from its state_dict restores the weights
    of the best epoch before the interruption when no later epoch beats it, as the
    uninterrupted run does (bit for bit); its state lacked them, so the resumed run took its
    first epoch as the best and restored that. mode "max" on the falling training loss: the
    best epoch is the first."""

    def es():
        return gc.EarlyStopping("loss", mode="max", patience=50, restore_best_weights=True)

    def run(m, epochs, cb, initial_epoch=0):
        m.fit(X, Y, epochs=epochs, initial_epoch=initial_epoch, batch_size=8, verbose=0,
              shuffle=False, callbacks=[cb])  # fmt: skip

    a = build()
    best = es()
    run(a, 1, best)
    after_first = a.get_weights()
    a, whole = build(), es()
    run(a, 5, whole)
    assert whole.best_epoch == 0
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, after_first[k])
    b, first = build(), es()
    run(b, 2, first)
    path = b.save(str(tmp_path / "ck.npz"), extra={"es": first.state_dict()})
    c, rest = build(), es()
    rest.load_state_dict(c.load(path)["extra"]["es"])
    run(c, 5, rest, initial_epoch=2)
    assert rest.best_epoch == 0
    for k, v in c.get_weights().items():
        np.testing.assert_array_equal(v, after_first[k], err_msg=k)
    bad = first.state_dict()
    bad["best_weights"]["d.w"]["data"] = bad["best_weights"]["d.w"]["data"][:-8]
    with pytest.raises(gc.GraphcError, match="not a state_dict"):
        es().load_state_dict(bad)


def test_early_stopping_state_without_best_weights_warns_when_they_would_be_restored() -> None:
    """A state saved with restore_best_weights=False (or by graphc before best_weights were
    kept) cannot restore the best epoch's weights: loading it into a callback that restores
    them says so (it silently restored the first resumed epoch's weights), and a state that
    holds them, or a callback that restores nothing, loads without a warning."""
    import warnings

    old = {"best": 0.25, "best_epoch": 3, "wait": 1}
    es = gc.EarlyStopping("loss", restore_best_weights=True)
    with pytest.warns(UserWarning, match=r"no weights of its best epoch \(4"):
        es.load_state_dict(old)
    assert (es.best, es.best_epoch, es.wait) == (0.25, 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gc.EarlyStopping("loss").load_state_dict(old)
        full = dict(old, best_weights={"w": {"dtype": "float32", "shape": [1], "data": "AACAPw=="}})
        gc.EarlyStopping("loss", restore_best_weights=True).load_state_dict(full)
