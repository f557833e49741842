"""Resuming a learning-rate schedule from a checkpoint (``fit(initial_epoch=k)`` after
``load``, in a new process's model and a new schedule object) gives the rates and the final
weights of an uninterrupted run: the documented formulas with the base rate, not the decayed
rate the checkpoint held (torch's schedulers resume from ``initial_lr`` likewise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
