"""Early stopping and plateau reduction, fed scripted validation curves (no compiled model)."""

from __future__ import annotations

import math

import pytest

from graphc.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, run_scripted
from graphc.ir.errors import ArgumentError, GraphcError


@pytest.mark.parametrize("patience", [0, 1, 2, 3, 5])
def test_early_stopping_stops_exactly_patience_epochs_after_the_best(patience: int) -> None:
    # best at epoch 2, then no improvement
    curve = [1.0, 0.8, 0.5] + [0.6] * 10
    es = EarlyStopping(patience=patience)
    _, ran = run_scripted([es], curve)
    assert es.best_epoch == 2 and es.best == 0.5
    # stops after epoch 2 + patience (patience 0: the first epoch without improvement, epoch 3)
    want_stop = 2 + max(patience, 1)
    assert es.stopped_epoch == want_stop and ran == want_stop + 1


def test_early_stopping_runs_to_the_end_while_improving() -> None:
    curve = [1.0 / (e + 1) for e in range(8)]
    es = EarlyStopping(patience=1)
    _, ran = run_scripted([es], curve)
    assert ran == 8 and es.stopped_epoch is None and es.best_epoch == 7


def test_min_delta_ignores_small_improvements() -> None:
    curve = [1.0, 0.95, 0.92, 0.9, 0.89]
    es = EarlyStopping(patience=2, min_delta=0.1)
    _, ran = run_scripted([es], curve)
    assert es.best_epoch == 0 and es.stopped_epoch == 2 and ran == 3
    es = EarlyStopping(patience=2, min_delta=0.01)  # every step improves by > 0.01 except the last
    _, ran = run_scripted([es], curve)
    assert es.best_epoch == 3 and ran == 5


def test_mode_max_and_auto_for_accuracy() -> None:
    curve = [0.5, 0.7, 0.9, 0.85, 0.8, 0.95]
    for mode in ("max", "auto"):
        es = EarlyStopping("val_accuracy", patience=2, mode=mode)
        _, ran = run_scripted([es], curve, monitor="val_accuracy")
        assert es.mode == "max" and es.best_epoch == 2 and es.stopped_epoch == 4 and ran == 5


def test_baseline_improving_epochs_never_stop_training() -> None:
    # Keras 3: an improving epoch returns before the patience test; wait is reset only when the
    # improvement also beats the baseline (failed before: graphc stopped after epoch 1)
    curve = [1.0, 0.9, 0.8, 0.7, 0.6]  # improving, but never below the baseline 0.5
    es = EarlyStopping(patience=2, baseline=0.5)
    _, ran = run_scripted([es], curve)
    assert es.stopped_epoch is None and ran == 5 and es.wait == 5
    _, ran = run_scripted([es], [1.0, 0.9, 0.95])  # first non-improving epoch, wait 3 >= 2
    assert es.stopped_epoch == 2 and ran == 3
    es = EarlyStopping(patience=2, baseline=0.95)
    _, ran = run_scripted([es], curve)
    assert es.stopped_epoch is None and ran == 5


def _keras_early_stopping(curve, patience, min_delta, mode, baseline, start, restore):
    """Keras 3's EarlyStopping rules, written from its documented behaviour and source
    (keras/src/callbacks/early_stopping.py): (epochs run, stopped epoch, restored epoch)."""
    less = mode == "min"
    best, wait, best_w, stopped = (math.inf if less else -math.inf), 0, None, None

    def improves(v, ref):
        return (v - (-min_delta if less else min_delta)) < ref if less else v - min_delta > ref

    for epoch, v in enumerate(curve):
        if epoch < start:
            continue
        if restore and best_w is None:
            best_w = epoch
        wait += 1
        if improves(v, best):
            best = v
            if restore:
                best_w = epoch
            if baseline is None or improves(v, baseline):
                wait = 0
            continue
        if wait >= patience and epoch > 0:
            stopped = epoch
            break
    ran = len(curve) if stopped is None else stopped + 1
    return ran, stopped, (best_w if restore and best_w is not None else ran - 1)


def test_early_stopping_matches_keras_rules_on_random_curves() -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    for _ in range(300):
        mode = str(rng.choice(["min", "max"]))
        curve = [float(v) for v in np.round(rng.normal(size=12).cumsum(), 1)]
        for k in rng.integers(0, 12, size=int(rng.integers(0, 3))):
            curve[int(k)] = math.nan
        kw = dict(
            patience=int(rng.integers(0, 4)),
            min_delta=float(rng.choice([0.0, 0.1, 0.5])),
            mode=mode,
            baseline=None if rng.random() < 0.4 else float(rng.normal()),
            start=int(rng.integers(0, 3)),
            restore=bool(rng.random() < 0.5),
        )
        es = EarlyStopping(
            patience=kw["patience"],
            min_delta=kw["min_delta"],
            mode=mode,
            baseline=kw["baseline"],
            start_from_epoch=kw["start"],
            restore_best_weights=kw["restore"],
        )
        model, ran = run_scripted([es], curve)
        want = _keras_early_stopping(curve, **kw)
        assert (ran, es.stopped_epoch, int(model.params["w"][0])) == want, (curve, kw)


def test_restore_best_weights_without_any_improvement_takes_the_first_epoch() -> None:
    # every figure NaN: Keras restores the first monitored epoch's weights (failed before:
    # graphc kept the last epoch's)
    es = EarlyStopping(patience=2, restore_best_weights=True, start_from_epoch=1)
    model, ran = run_scripted([es], [math.nan] * 5)
    assert ran == 3 and es.stopped_epoch == 2 and model.params["w"][0] == 1


def test_start_from_epoch_ignores_warm_up_epochs() -> None:
    curve = [0.1, 0.2, 1.0, 0.9, 0.95, 0.96, 0.97]
    es = EarlyStopping(patience=2, start_from_epoch=2)
    _, ran = run_scripted([es], curve)
    assert es.best_epoch == 3 and es.stopped_epoch == 5 and ran == 6


def test_restore_best_weights_on_stop_and_without_stop() -> None:
    es = EarlyStopping(patience=2, restore_best_weights=True)
    model, ran = run_scripted([es], [1.0, 0.5, 0.7, 0.8, 0.9])
    assert ran == 4 and model.params["w"][0] == 1  # the weights of epoch 1
    es = EarlyStopping(patience=10, restore_best_weights=True)
    model, ran = run_scripted([es], [1.0, 0.5, 0.7, 0.8])
    assert ran == 4 and es.stopped_epoch is None and model.params["w"][0] == 1
    es = EarlyStopping(patience=10)
    model, _ = run_scripted([es], [1.0, 0.5, 0.7, 0.8])
    assert model.params["w"][0] == 3  # not restored


def test_missing_monitor_names_the_available_figures() -> None:
    es = EarlyStopping("val_loss")
    with pytest.raises(ArgumentError, match="validation_data"):
        run_scripted([es], [1.0], monitor="loss")
    with pytest.raises(GraphcError, match="mode"):
        EarlyStopping(mode="up")


def test_reduce_on_plateau_follows_torch_rules() -> None:
    # torch: reduce when num_bad_epochs > patience; then cooldown epochs count as good
    curve = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    cb = ReduceLROnPlateau(patience=2, factor=0.5, cooldown=1)
    model, _ = run_scripted([cb], curve)
    # bad epochs: 2, 3, 4 -> count 3 > 2 at epoch 4: reduce; epoch 5 cooldown; 6, 7, 8 bad -> 8
    assert cb.reductions == [4, 8]
    assert math.isclose(model.lr, 0.1 * 0.25)


def test_reduce_on_plateau_threshold_and_min_lr() -> None:
    curve = [1.0, 0.99995, 0.9999, 0.9998]  # rel threshold 1e-4: improvements of < 0.01% are bad
    cb = ReduceLROnPlateau(patience=0, factor=0.1, min_lr=0.05)
    model, _ = run_scripted([cb], curve)
    assert cb.reductions == [1]  # 0.99995 is not better; then lr is at min_lr: no more changes
    assert model.lr == 0.05


def test_overfitting_example_shows_a_smaller_gap_with_dropout_and_early_stopping() -> None:
    """examples/overfitting.py, shortened: the regularized run generalizes better."""
    import os
    import sys

    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    sys.path.insert(0, examples)
    import overfitting

    plain, reg = overfitting.main(["--epochs", "30", "--hidden", "128", "--plot", ""])
    assert plain["epochs_run"] == 30 and plain["train_loss"] < 0.01  # memorized
    assert reg["gap"] < plain["gap"] and reg["val_loss"] < plain["val_loss"]
    assert reg["val_accuracy"] > 0.85


def test_keras_arguments_verbose_and_min_delta(capsys) -> None:
    # Keras scripts pass verbose (and ReduceLROnPlateau's min_delta): a TypeError before
    es = EarlyStopping(patience=1, restore_best_weights=True, verbose=1)
    run_scripted([es], [1.0, 0.5, 0.7, 0.8])
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Epoch 3: early stopping",
        "Restoring model weights from the end of the best epoch: 2.",
    ]
    # min_delta: an absolute threshold (0.95 is 0.05 better than 1.0, not 0.1 better)
    cb = ReduceLROnPlateau(patience=0, factor=0.5, min_delta=0.1, verbose=1)
    model, _ = run_scripted([cb], [1.0, 0.95, 0.8])
    assert cb.threshold_mode == "abs" and cb.reductions == [1] and model.lr == 0.05
    assert capsys.readouterr().out == "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.05.\n"
    with pytest.raises(GraphcError, match="not both"):
        ReduceLROnPlateau(min_delta=0.1, threshold_mode="abs")


def test_reduce_on_plateau_with_min_delta_follows_keras_rules() -> None:
    # Keras 3's ReduceLROnPlateau (keras/src/callbacks/reduce_lr_on_plateau.py): a cooldown
    # epoch counts down first and resets wait; outside the cooldown a non-improving epoch grows
    # wait, and wait >= patience lowers the rate. torch lowers it when the count > patience:
    # one epoch later. min_delta (Keras's name) took torch's count before: [3] here, not [2, 4].
    flat = [1.0] * 6
    cb = ReduceLROnPlateau(patience=2, factor=0.5, min_delta=0.0)
    model, _ = run_scripted([cb], flat)
    assert cb.semantics == "keras" and cb.reductions == [2, 4] and model.lr == 0.1 * 0.25
    # cooldown 2: the first cooldown epoch (2, 4, 6) does not count, the second counts down to 0
    # and then counts as bad, reaching patience 1 (cooldown 1 would lower the rate every epoch)
    cb = ReduceLROnPlateau(patience=1, cooldown=2, factor=0.5, min_delta=0.0)
    run_scripted([cb], [1.0] * 8)
    assert cb.reductions == [1, 3, 5, 7]
    # min_delta 0.01 absolute: 0.9 -> 0.85 improves, 0.85 -> 0.8 too; the 0.8s are bad
    cb = ReduceLROnPlateau(patience=2, cooldown=1, factor=0.5, min_delta=0.01)
    run_scripted([cb], [1, 0.95, 0.9, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8])
    assert cb.reductions == [6, 9]
    # semantics="keras" alone: Keras's default min_delta 1e-4 (absolute); the rate stops at min_lr
    cb = ReduceLROnPlateau(patience=0, factor=0.1, min_lr=0.05, semantics="keras")
    model, _ = run_scripted([cb], [1.0, 0.99995, 0.9999, 0.9998, 0.9])
    assert cb.threshold == 1e-4 and cb.reductions == [1] and model.lr == 0.05
    # the torch default keeps torch's count
    cb = ReduceLROnPlateau(patience=2, factor=0.5)
    run_scripted([cb], flat)
    assert cb.semantics == "torch" and cb.reductions == [3]
    with pytest.raises(GraphcError, match="min_delta is Keras's option"):
        ReduceLROnPlateau(min_delta=0.1, semantics="torch")
    with pytest.raises(GraphcError, match="not threshold"):
        ReduceLROnPlateau(threshold=0.1, semantics="keras")
    with pytest.raises(GraphcError, match="semantics"):
        ReduceLROnPlateau(semantics="tf")


def test_reduce_on_plateau_monitors_accuracy_upward_by_default() -> None:
    # mode defaulted to "min": a rising accuracy counted as bad epochs and lowered the rate
    cb = ReduceLROnPlateau("val_accuracy", patience=1, factor=0.5)
    model, _ = run_scripted([cb], [0.5, 0.6, 0.7, 0.8], monitor="val_accuracy")
    assert cb.mode == "max" and cb.reductions == [] and model.lr == 0.1
    assert ReduceLROnPlateau("val_loss").mode == "min"


def test_model_checkpoint_saves_the_best_epochs_weights(tmp_path) -> None:
    import numpy as np

    import graphc as gc

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    xi, yi = gc.input("x", ("N", 3), dtype="f64"), gc.input("y", ("N", 1), dtype="f64")
    out = gc.dense(xi, 1, name="l")
    model = gc.compile(out, gc.mean_squared_error(out, yi), gc.SGD(lr=0.5), name="ckpt")

    class Snapshots:  # the weights after each epoch, taken where the checkpoint is
        weights: list = []

        def on_epoch_end(self, m, epoch, figures):
            self.weights.append(m.get_weights())

    best = ModelCheckpoint(
        str(tmp_path / "best-{epoch:02d}.npz"), save_best_only=True, save_weights_only=True
    )
    every = ModelCheckpoint(str(tmp_path / "last.gcm"))
    snaps = Snapshots()
    hist = model.fit(
        x, y, epochs=6, batch_size=8, verbose=0, validation_data=(x[:10], y[:10]),
        callbacks=[snaps, best, every],
    )  # fmt: skip
    val = hist["val_loss"]
    improving = [e for e in range(6) if val[e] < min(val[:e], default=math.inf)]
    assert best.saved == [str(tmp_path / f"best-{e + 1:02d}.npz") for e in improving]
    assert best.best == min(val) and len(improving) < 6  # lr 0.5 oscillates: some epochs worse
    model.load(best.saved[-1])
    e = int(np.argmin(val))
    for k, v in snaps.weights[e].items():
        assert np.array_equal(model.get_weights()[k], v)
    loaded = gc.load_model(every.saved[-1])  # the model file of the last epoch
    for k, v in snaps.weights[-1].items():
        assert np.array_equal(loaded.get_weights()[k], v)
    # a filepath field that names no figure, or a folder that does not exist (it raised at
    # the first save, after an epoch had trained), is refused before anything trains
    before, steps = model.get_weights(), len(model.history.epochs)
    bads = ("{val_acc}.npz", "val_acc"), ("{epoch}-{los:.2f}.gcm", "los"), ("no/c.gcm", "no'")
    for bad, name in bads:
        with pytest.raises(ArgumentError, match=name):
            model.fit(x, y, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / bad))])
        assert len(model.history.epochs) == steps
        for k, v in before.items():
            assert np.array_equal(model.get_weights()[k], v)


def test_keras_stop_training_flag_ends_fit_after_the_batch_or_epoch() -> None:
    # Keras callbacks stop with self.model.stop_training = True: graphc ignored it (fit ran on)
    import numpy as np

    import graphc as gc
    from graphc.callbacks import Callback

    x, y = np.arange(40.0).reshape(20, 2) / 40, np.ones((20, 1))
    xi, yi = gc.input("x", ("N", 2), dtype="f64"), gc.input("y", ("N", 1), dtype="f64")
    out = gc.dense(xi, 1, name="l")
    model = gc.compile(out, gc.mean_squared_error(out, yi), gc.SGD(lr=0.1), name="stopflag")

    class AtEpoch(Callback):
        def on_epoch_end(self, m, epoch, figures):
            if epoch == 1:
                self.model.stop_training = True

    hist = model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[AtEpoch()])
    assert hist.epochs == [0, 1] and hist.stopped_early

    class AtBatch(Callback):
        losses: list = []

        def on_batch_end(self, batch, logs):
            self.losses.append(logs["batch_loss"])
            if batch == 1:
                self.model.stop_training = True

    cb = AtBatch()
    hist = model.fit(x, y, epochs=5, batch_size=8, shuffle=False, verbose=0, callbacks=[cb])
    assert hist.epochs == [0] and len(cb.losses) == 2  # 2 of the epoch's 3 batches
    assert math.isclose(hist["loss"][0], sum(cb.losses) / 2, rel_tol=1e-12)  # 8 rows each
    hist = model.fit(x, y, epochs=2, verbose=0)  # the flag is cleared by the next fit
    assert hist.epochs == [0, 1]


_STOP_FLAG_MPI = """
import numpy as np, graphc as gc
x, y = np.arange(40.0).reshape(20, 2) / 40, np.ones((20, 1))
xi, yi = gc.input("x", ("N", 2), dtype="f64"), gc.input("y", ("N", 1), dtype="f64")
out = gc.dense(xi, 1, name="l")
model = gc.compile(out, gc.mean_squared_error(out, yi), gc.SGD(lr=0.1), name="stopflag_mpi")
class AtEpoch(gc.callbacks.Callback):
    def on_epoch_end(self, m, epoch, figures):
        if epoch == 1:
            self.model.stop_training = True
fit = dict(epochs=4, batch_size=5, verbose=0, distributed="mpi")
print(model.fit(x, y, callbacks=[AtEpoch()], **fit).epochs, model.fit(x, y, **fit).epochs)
"""


def test_keras_stop_training_flag_ends_the_data_parallel_fit() -> None:
    # the data-parallel fit read no stop_training (ran all epochs), and a flag left set by an
    # earlier fit was never cleared. One rank (MPI's singleton start), in a process of its own.
    import shutil
    import subprocess
    import sys

    pytest.importorskip("mpi4py")
    if shutil.which("mpirun") is None:  # mpi4py without an MPI library to load (as test_mpi)
        pytest.skip("needs Open MPI (apt-get install openmpi-bin libopenmpi-dev)")
    r = subprocess.run(
        [sys.executable, "-c", _STOP_FLAG_MPI], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[-2] == "[0, 1] [0, 1, 2, 3]"


def test_model_checkpoint_takes_keras_arguments_in_keras_order() -> None:
    # ModelCheckpoint(path, "val_loss", 1, True) and save_freq="epoch" (Keras's default) were
    # Python TypeErrors; a save_freq in batches is refused saying what graphc does instead
    cb = ModelCheckpoint("ck.npz", "val_accuracy", 1, True, True, "auto", "epoch", 0.5)
    assert (cb.verbose, cb.save_best_only, cb.save_weights_only) == (1, True, True)
    assert cb.mode == "max" and cb.best == 0.5
    with pytest.raises(GraphcError, match=r"save_freq=100 is not supported.*on_batch_end"):
        ModelCheckpoint("ck.npz", save_freq=100)


def test_a_schedule_with_another_rate_setter_is_refused_before_training() -> None:
    """A torch-style schedule sets every epoch's rate from its formula: with a second schedule
    in the same fit, one undid the other silently ([LinearLR, CosineAnnealingLR] ran the
    cosine alone); refused before anything trains (ReduceLROnPlateau now composes with it). Keras's LearningRateScheduler
    (from the current rate) with ReduceLROnPlateau composes and is kept: checked against
    the rates composed by hand."""
    import numpy as np

    import graphc as gc

    x, y = gc.input("x", ("N", 2)), gc.input("y", ("N", 1))
    p = gc.dense(x, 1)
    m = gc.compile(p, gc.mean_squared_error(p, y), gc.SGD(0.1))
    X, Y = np.zeros((4, 2), np.float32), np.ones((4, 1), np.float32)
    w = m.get_weights()
    for cbs in (  # (a schedule with ReduceLROnPlateau composes: test_lr_resume.py)
        [gc.LinearLR(), gc.CosineAnnealingLR(5)],
        [gc.StepLR(2), gc.LearningRateScheduler(lambda e, lr: lr)],
    ):
        with pytest.raises(ArgumentError, match="undone"):
            m.fit(X, Y, epochs=3, verbose=0, callbacks=cbs)
        assert all(np.array_equal(w[k], v) for k, v in m.get_weights().items())
    m.set_weights({k: np.zeros_like(v) for k, v in w.items()})
    Y[...] = 0.0  # zero weights, zero targets: a loss of 0 and no gradient, every epoch a plateau
    sched = gc.LearningRateScheduler(lambda e, lr: 0.8 if e == 0 else lr * 0.9)
    h = m.fit(
        X,
        Y,
        epochs=4,
        verbose=0,
        callbacks=[sched, ReduceLROnPlateau("loss", patience=0, factor=0.5)],
    )
    assert np.allclose(h["lr"], [0.8, 0.8 * 0.9, 0.8 * 0.5 * 0.81, 0.8 * 0.25 * 0.729])
