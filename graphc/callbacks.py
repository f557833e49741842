"""Training callbacks for ``Model.fit``: early stopping and learning-rate schedules.

A callback is any object with some of these methods (``fit`` calls those it has):

    on_train_begin(model)
    on_epoch_begin(model, epoch)                  epoch counts from 0
    on_epoch_end(model, epoch, figures) -> bool   figures: {"loss": ..., "val_loss": ...}; True stops
    on_train_end(model, history)
    on_batch_begin(batch, logs)                   Keras's arguments: batch counts from 0 in each
    on_batch_end(batch, logs)                     epoch; logs {"batch", "size"}, at the end also
                                                  "loss" (epoch mean so far) and "batch_loss"

A batch hook makes ``fit`` call the native code once per batch instead of once per epoch.

The learning rate is a runtime input of the compiled training step (``model.lr``), so a
schedule changes it between epochs without recompiling anything.
"""

from __future__ import annotations

import base64
import contextlib
import math
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir.errors import ArgumentError, GraphcError, install_hint
from graphc.runtime.checkpoint import check_file_name
from graphc.runtime.checks import check_bool, check_count, check_real


class Callback:
    """Base class with no-op hooks (subclassing it is optional). ``fit`` calls ``set_model``
    first, so a hook may use ``self.model`` as in Keras (``self.model.stop_training = True``
    ends training after the current batch or epoch)."""

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, model: Any) -> None:
        pass

    def on_epoch_begin(self, model: Any, epoch: int) -> None:
        pass

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        return False

    def on_train_end(self, model: Any, history: Any) -> None:
        pass


def _prints(model: Any) -> bool:
    """Whether this process prints and writes the callbacks' files: not on ranks other than 0
    of a data-parallel fit (graphc.runtime.distributed), which hold rank 0's model; one line
    and one file per job, not one per rank (Model.save and save_model write nothing there)."""
    return not getattr(model, "_dist_rank", 0)


def _mode_for(monitor: str, mode: str, who: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise GraphcError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "r2", "auc")) else "min"


def _figure(figures: dict[str, float], monitor: str, who: str) -> float:
    if monitor not in figures:
        hint = (
            " (pass validation_data or validation_split to fit)"
            if monitor.startswith("val_")
            else ""
        )
        raise ArgumentError(
            f"{who}: monitor {monitor!r} is not among this epoch's figures {sorted(figures)}{hint}"
        )
    return float(figures[monitor])


def _check_monitor(monitor: str, names: list[str], who: str) -> None:
    """``monitor`` among the figure names ``fit`` announced before training, else ArgumentError
    naming the callback and the names (a typo would otherwise surface after an epoch)."""
    if monitor in names:
        return
    hint = ""
    if monitor.startswith("val_") and "val_loss" not in names:
        hint = " (pass validation_data or validation_split to fit for val_ figures)"
    elif monitor.startswith("val_") or f"val_{monitor}" in names:
        close = [n for n in names if n.startswith("val_")]
        hint = f" (the validation figures are {close})"
    raise ArgumentError(
        f"{who}(monitor={monitor!r}): fit reports no figure {monitor!r}; its figures are "
        f"{names}{hint}"
    )


class EarlyStopping(Callback):
    """Stop training when the monitored figure stops improving (the rules of Keras 3's
    ``keras.callbacks.EarlyStopping``, whose best weights are restored when training ends,
    stopped or not).

    An epoch improves when ``current + min_delta < best`` (mode "min") or
    ``current - min_delta > best`` ("max"). After each epoch from ``start_from_epoch`` on, the
    counter ``wait`` grows by one; an improvement resets it to 0 only when it also beats
    ``baseline`` (if set), and an improving epoch never stops training. Training stops after
    a non-improving epoch where ``wait >= patience`` (never after the first epoch). So with
    patience 2 it stops 2 epochs after the best one; with a baseline, an improving run that
    has not beaten the baseline stops at its first non-improving epoch once ``patience``
    epochs have passed.

    Args:
        monitor: a key of the epoch's figures ("val_loss", "val_accuracy", "loss", ...).
        min_delta: the least change that counts as an improvement (>= 0).
        patience: epochs without improvement before stopping (>= 0).
        mode: "min", "max" or "auto" (max for accuracy-like names, else min).
        baseline: stop unless the figure beats this within ``patience`` epochs.
        start_from_epoch: epochs to let pass before monitoring (warm-up).
        restore_best_weights: at the end of training (stopped or not), set the parameters to
            those of the best epoch (of the first monitored epoch when none improved, e.g.
            every figure NaN, as Keras).
        verbose: 1 prints Keras's lines when training stops ("Epoch 5: early stopping", the
            epoch counted from 1) and when the best weights are restored; 0 (default) is
            silent.

    Attributes:
        best: the best value of the monitored figure so far.
        best_epoch: the epoch that reached it.
        stopped_epoch: the epoch after which training stopped (None when not stopped).
        wait: epochs since the last improvement.

    Raises:
        ArgumentError: (when ``fit`` starts, before any training) ``monitor`` is not among
            the figures fit reports.
        OptionTypeError: (when made) ``patience`` or ``start_from_epoch`` not an int,
            ``min_delta`` or ``baseline`` not a number (a string baseline failed after the
            first epoch had trained; patience 2.7 was read as 2).
        GraphcError: (when made) ``patience``, ``min_delta`` or ``start_from_epoch`` negative,
            ``min_delta`` or ``baseline`` not finite (a NaN min_delta made no epoch improve).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        start_from_epoch: int = 0,
        restore_best_weights: bool = False,
        verbose: int = 0,
    ) -> None:
        self.verbose = verbose
        self.monitor = monitor
        self.min_delta = check_real(min_delta, "EarlyStopping: min_delta", 0.0)
        self.patience = check_count(patience, "EarlyStopping: patience")
        self.mode = _mode_for(monitor, mode, "EarlyStopping")
        if baseline is not None:  # compared after the first epoch: a string failed there
            baseline = check_real(baseline, "EarlyStopping: baseline")
        self.baseline = baseline
        self.start_from_epoch = check_count(start_from_epoch, "EarlyStopping: start_from_epoch")
        self.restore_best_weights = check_bool(
            restore_best_weights, "EarlyStopping: restore_best_weights"
        )
        self.on_train_begin(None)

    def check_figures(self, names: list[str]) -> None:
        """Called by ``fit`` before training: the monitor is one of its figures."""
        _check_monitor(self.monitor, names, "EarlyStopping")

    def on_train_begin(self, model: Any) -> None:
        if getattr(self, "_resumed", False):  # load_state_dict: this fit continues the run
            self._resumed = False
            self.stopped_epoch = None
            return
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict[str, np.ndarray] | None = None
        self.stopped_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (torch's ``state_dict``; JSON, for ``model.save(path,
        extra={"early_stopping": es.state_dict()})``): best, best_epoch, wait and, with
        ``restore_best_weights``, the best epoch's weights (``best_weights``: name ->
        {"dtype", "shape", "data": base64 of the array's bytes, exact}), so that a resumed
        run whose later epochs never beat the loaded best restores the weights of the best
        epoch before the interruption, as the uninterrupted run does."""
        state: dict[str, Any] = {
            "best": float(self.best),
            "best_epoch": self.best_epoch,
            "wait": int(self.wait),
        }
        if self.restore_best_weights and self.best_weights is not None:
            state["best_weights"] = {
                k: {
                    "dtype": str(v.dtype),
                    "shape": list(v.shape),
                    "data": base64.b64encode(np.ascontiguousarray(v).tobytes()).decode("ascii"),
                }
                for k, v in self.best_weights.items()
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``: the next ``fit`` (``initial_epoch=k`` after
        ``model.load``) keeps its counters and best weights instead of starting afresh, so it
        stops at the epoch the uninterrupted run stops at (a fresh callback counted patience
        from the resume) and restores the same weights.

        Raises:
            GraphcError: ``state`` is not such a dict (a weight's data of the wrong size
                included); the callback is then left as it was.
        """
        try:
            best, wait = float(state["best"]), check_count(state["wait"], "wait")
            epoch = state["best_epoch"]
            epoch = None if epoch is None else check_count(epoch, "best_epoch")
            weights = None
            if state.get("best_weights") is not None:
                weights = {}
                for k, w in state["best_weights"].items():
                    a = np.frombuffer(base64.b64decode(w["data"], validate=True), w["dtype"])
                    weights[str(k)] = a.reshape([int(d) for d in w["shape"]]).copy()
        except (KeyError, TypeError, ValueError, AttributeError, GraphcError) as e:
            raise GraphcError(f"EarlyStopping.load_state_dict: not a state_dict ({e!r})") from None
        if self.restore_best_weights and epoch is not None and weights is None:
            warnings.warn(
                "EarlyStopping.load_state_dict: restore_best_weights=True, but the state holds "
                f"no weights of its best epoch ({epoch + 1}, counted from 1): it was saved with "
                "restore_best_weights=False or by graphc before best_weights were kept. If no "
                "later epoch beats that best, the weights restored when training ends are "
                "those of the first resumed epoch, not of the best one",
                UserWarning,
                stacklevel=2,
            )
        self.on_train_begin(None)
        self.best, self.best_epoch, self.wait = best, epoch, wait
        self.best_weights = weights
        self._resumed = True

    def _improves(self, value: float, reference: float) -> bool:
        # Keras's float expressions (monitor_op(value -+ min_delta, reference)): equal rounding
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        if epoch < self.start_from_epoch:
            return False
        current = _figure(figures, self.monitor, "EarlyStopping")
        if self.restore_best_weights and self.best_weights is None and model is not None:
            # until an epoch improves (a NaN figure never does), the first one is the best
            self.best_weights, self.best_epoch = model.get_weights(), epoch
        self.wait += 1
        if self._improves(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights and model is not None:
                self.best_weights = model.get_weights()
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return False  # an improving epoch never stops training (Keras)
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            if self.verbose and _prints(model):
                print(f"Epoch {epoch + 1}: early stopping")
            return True
        return False

    def on_train_end(self, model: Any, history: Any) -> None:
        if self.restore_best_weights and self.best_weights is not None and model is not None:
            if self.verbose and _prints(model) and self.best_epoch is not None:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            model.set_weights(self.best_weights)
        if history is not None and self.best_epoch is not None:
            history.best_epoch = self.best_epoch


class LRSchedule(Callback):
    """Base of the epoch-wise schedules: ``model.lr = rate(epoch, base_lr)`` before each epoch.

    ``base_lr``, unless set on the schedule: ``model.lr`` when the schedule starts at epoch 0,
    else ``model.initial_lr`` (a resumed run, ``fit(initial_epoch=k)``, possibly after
    ``load``: the base rate the checkpoint kept, not the rate it had decayed to; torch's
    schedulers resume from ``initial_lr`` likewise). Epoch k then gets the rate of an
    uninterrupted run. To resume with another base rate, set ``model.lr`` (outside ``fit``)
    or ``model.initial_lr`` before ``fit``, or ``schedule.base_lr``. A later ``fit`` with the
    same schedule object continues from its ``base_lr``. The rates of the current ``fit`` are
    recorded in ``self.rates``.

    Raises:
        GraphcError: (when made) a factor that gives no valid rate (``gamma`` or ``eta_min``
            negative or not finite); a period (``step_size``, ``T_max``) below 1.
        OptionTypeError: (when made) a period that is not an int (StepLR(1.5) decayed at
            epochs 2, 3, 5, 6, ...; torch's step_size and T_max are ints).
        ArgumentError: (in ``fit``, before the epoch) the rate computed for an epoch is
            negative or not finite (a ``LambdaLR`` function's), naming the schedule and the
            epoch; the epochs before it stay trained and in the history.
    """

    base_lr: float | None = None

    def check_together(self, callbacks: list[Any]) -> None:
        """Called by ``fit`` before training with all its callbacks. A ReduceLROnPlateau in
        the same ``fit`` composes with this schedule: epoch e trains at ``rate(e) * scale``,
        ``scale`` the product of the plateau's reductions so far (each the ratio of its new
        rate to the rate it lowered, ``factor`` unless ``min_lr`` clamped it). That is the
        rule of torch's chained schedulers ("each scheduler is applied one after the other
        on the learning rate obtained by the one preceding it", torch.optim's documentation),
        whose chainable forms of StepLR, MultiStepLR, ExponentialLR, LinearLR and
        PolynomialLR multiply the current rate by rate(e) / rate(e - 1): [ExponentialLR(0.9),
        ReduceLROnPlateau(factor=0.5)] on a plateau trains at 0.9, 0.405, 0.18225, ... as
        torch's pair. (torch's LambdaLR is not chainable and its CosineAnnealingLR's chained
        form is additive; graphc multiplies for every schedule.) Another callback that sets
        the rate (a second schedule, LearningRateScheduler) is refused: this schedule sets
        every epoch's rate from its formula, so the other's changes would be undone at the
        next epoch (or it would undo this one's) without a word.

        Raises:
            ArgumentError: naming both callbacks and the way out.
        """
        self._plateaus = [cb for cb in callbacks if isinstance(cb, ReduceLROnPlateau)]
        for other in callbacks:
            if other is not self and isinstance(other, LRSchedule | LearningRateScheduler):
                raise ArgumentError(
                    f"fit: {type(self).__name__} sets the learning rate of every epoch from its "
                    f"formula, so {type(other).__name__}'s changes of the rate would be undone "
                    "(or undo its own) silently; give one of them (for a warm-up followed by a "
                    "decay, one LambdaLR(lambda epoch: warmup(epoch) * decay(epoch)); "
                    "ReduceLROnPlateau composes with a schedule). Nothing was trained"
                )

    def on_train_begin(self, model: Any) -> None:
        self.rates: list[float] = []

    def rate(self, epoch: int, base_lr: float) -> float:
        raise NotImplementedError

    def on_epoch_begin(self, model: Any, epoch: int) -> None:
        if self.base_lr is None:
            base = getattr(model, "initial_lr", None)
            self.base_lr = float(model.lr if epoch == 0 or base is None else base)
            if epoch == 0 and base is not None:
                model.initial_lr = self.base_lr  # what a checkpoint of this run keeps
        if not hasattr(self, "rates"):
            self.rates = []
        rate = float(self.rate(epoch, self.base_lr))
        for plateau in getattr(self, "_plateaus", ()):  # check_together: composed reductions
            rate *= plateau.scale
        if not (math.isfinite(rate) and rate >= 0):  # (model.lr would refuse it too, unnamed)
            raise ArgumentError(
                f"{type(self).__name__}: the rate for epoch {epoch} is {rate!r} (base_lr "
                f"{self.base_lr!r}); a learning rate must be finite and >= 0. Training stopped "
                f"before epoch {epoch}: the model and model.history hold the epochs before it"
            )
        model.lr = rate
        self.rates.append(model.lr)


def _check_rate_factor(who: str, what: str, v: Any) -> float:
    """A schedule's factor (gamma, eta_min) as a Python float: a finite real number >= 0, else
    GraphcError when the schedule is made (a negative or NaN rate would otherwise stop fit
    after an epoch). A numpy float32 kept as such would make the rates float32 (0.1 * f32)."""
    ok = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    if not (ok and math.isfinite(v) and v >= 0):
        raise GraphcError(f"{who}: {what} must be a finite number >= 0, got {v!r}")
    return float(v)


def _real(v: Any) -> bool:
    """A real number, numpy's scalars included (np.float32(0.1)), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _whole(v: Any) -> bool:
    """An integer, numpy's included (np.int64(3), an element of np.arange), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (epoch // step_size) (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        step_size = check_count(step_size, "StepLR: step_size", 1)  # an int, as torch's
        gamma = _check_rate_factor("StepLR", "gamma", gamma)
        self.step_size, self.gamma = step_size, gamma

    def rate(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRSchedule):
    """lr = base_lr * gamma ** epoch (``torch.optim.lr_scheduler.ExponentialLR``)."""

    def __init__(self, gamma: float) -> None:
        gamma = _check_rate_factor("ExponentialLR", "gamma", gamma)
        self.gamma = gamma

    def rate(self, epoch: int, base_lr: float) -> float:
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRSchedule):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2.

    The closed form given in ``torch.optim.lr_scheduler.CosineAnnealingLR``'s documentation
    (SGDR without restarts, Loshchilov & Hutter 2017); it continues periodically past T_max.
    """

    def __init__(self, T_max: int, eta_min: float = 0.0) -> None:
        T_max = check_count(T_max, "CosineAnnealingLR: T_max", 1)  # an int, as torch's
        eta_min = _check_rate_factor("CosineAnnealingLR", "eta_min", eta_min)
        self.T_max, self.eta_min = T_max, eta_min

    def rate(self, epoch: int, base_lr: float) -> float:
        return (
            self.eta_min
            + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        )


class LambdaLR(LRSchedule):
    """lr = base_lr * fn(epoch) (``torch.optim.lr_scheduler.LambdaLR``)."""

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn

    def rate(self, epoch: int, base_lr: float) -> float:
        return base_lr * float(self.fn(epoch))


class LinearLR(LRSchedule):
    """Linear warm-up (or decay): lr = base_lr * (start_factor + (end_factor - start_factor)
    * min(epoch, total_iters) / total_iters) (``torch.optim.lr_scheduler.LinearLR``'s closed
    form; defaults 1/3, 1.0, 5): the rate goes from start_factor * base_lr at epoch 0 to
    end_factor * base_lr at epoch total_iters and stays there.

    Raises:
        GraphcError: start_factor outside (0, 1], end_factor outside [0, 1] (torch's ranges),
            total_iters < 1.
    """

    def __init__(
        self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
    ) -> None:
        if not (_real(start_factor) and 0 < start_factor <= 1):
            raise GraphcError(f"LinearLR: start_factor must lie in (0, 1], got {start_factor!r}")
        if not (_real(end_factor) and 0 <= end_factor <= 1):
            raise GraphcError(f"LinearLR: end_factor must lie in [0, 1], got {end_factor!r}")
        if not _whole(total_iters) or total_iters < 1:
            raise GraphcError(f"LinearLR: total_iters must be an int >= 1, got {total_iters!r}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = int(total_iters)

    def rate(self, epoch: int, base_lr: float) -> float:
        done = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


class MultiStepLR(LRSchedule):
    """lr = base_lr * gamma ** (the number of milestones <= epoch)
    (``torch.optim.lr_scheduler.MultiStepLR``; a milestone given twice counts twice).

    Raises:
        GraphcError: a milestone that is not an int >= 0, gamma negative or not finite.
    """

    def __init__(self, milestones: Any, gamma: float = 0.1) -> None:
        ms = list(milestones)
        if not all(_whole(m) and m >= 0 for m in ms):
            raise GraphcError(f"MultiStepLR: milestones must be ints >= 0, got {milestones!r}")
        gamma = _check_rate_factor("MultiStepLR", "gamma", gamma)
        self.milestones, self.gamma = sorted(int(m) for m in ms), gamma

    def rate(self, epoch: int, base_lr: float) -> float:
        import bisect

        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class PolynomialLR(LRSchedule):
    """lr = base_lr * (1 - min(epoch, total_iters) / total_iters) ** power
    (``torch.optim.lr_scheduler.PolynomialLR``'s closed form; defaults 5, 1.0): 0 from epoch
    total_iters on.

    Raises:
        GraphcError: total_iters < 1, power negative or not finite.
    """

    def __init__(self, total_iters: int = 5, power: float = 1.0) -> None:
        if not _whole(total_iters) or total_iters < 1:
            raise GraphcError(f"PolynomialLR: total_iters must be an int >= 1, got {total_iters!r}")
        power = _check_rate_factor("PolynomialLR", "power", power)
        self.total_iters, self.power = int(total_iters), power

    def rate(self, epoch: int, base_lr: float) -> float:
        return base_lr * (1.0 - min(epoch, self.total_iters) / self.total_iters) ** self.power


class LearningRateScheduler(Callback):
    """Keras's ``keras.callbacks.LearningRateScheduler``: before each epoch,
    ``model.lr = schedule(epoch, lr)`` with ``lr`` the current rate (or ``schedule(epoch)``
    for a function of one argument); epoch counts from 0, as in ``fit``.

    Unlike the torch-style schedules (LRSchedule), the rate is computed from the current one,
    so a run resumed with ``fit(initial_epoch=k)`` continues from the rate the model (or its
    checkpoint) holds, as Keras does. The rates of the current ``fit`` are in ``self.rates``.

    Args:
        schedule: a function (epoch, lr) -> new rate, or epoch -> new rate (told apart by
            its signature: two positional parameters or ``*args`` get the rate; an exception
            the function raises, a TypeError included, reaches the caller as it is).
        verbose: 1 prints Keras's line for each epoch ("Epoch 1: LearningRateScheduler
            setting learning rate to 0.01.").

    Raises:
        GraphcError: ``schedule`` is not callable (when made).
        ArgumentError: (in ``fit``, before the epoch) the schedule returned a rate that is
            not a finite number >= 0, naming the epoch; the epochs before it are kept.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        if not callable(schedule):
            raise GraphcError(
                f"LearningRateScheduler: schedule must be a function (epoch, lr) -> rate, got "
                f"{type(schedule).__name__}"
            )
        self.schedule, self.verbose = schedule, verbose
        self.rates: list[float] = []

    def on_train_begin(self, model: Any) -> None:
        self.rates = []

    def _takes_lr(self) -> bool | None:
        """Whether the schedule takes (epoch, lr): two positional parameters or *args, by its
        signature; None when it has none to read (some C callables)."""
        import inspect

        try:
            params = inspect.signature(self.schedule).parameters.values()
        except (TypeError, ValueError):
            return None
        P = inspect.Parameter
        kinds = [p.kind for p in params]
        return (
            P.VAR_POSITIONAL in kinds
            or sum(k in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) for k in kinds) >= 2
        )

    def on_epoch_begin(self, model: Any, epoch: int) -> None:
        takes_lr = self._takes_lr()
        if takes_lr is None:
            try:
                rate = self.schedule(epoch, float(model.lr))
            except TypeError:  # Keras's fallback: a schedule of the epoch alone
                rate = self.schedule(epoch)
        else:  # by the signature: a TypeError inside the schedule is the user's, left as is
            rate = self.schedule(epoch, float(model.lr)) if takes_lr else self.schedule(epoch)
        ok = isinstance(rate, int | float | np.integer | np.floating) and not isinstance(rate, bool)
        if not (ok and math.isfinite(rate) and rate >= 0):
            raise ArgumentError(
                f"LearningRateScheduler: the schedule returned {rate!r} for epoch {epoch}; a "
                f"learning rate must be a finite number >= 0. Training stopped before epoch "
                f"{epoch}: the model and model.history hold the epochs before it"
            )
        model.lr = float(rate)
        self.rates.append(model.lr)
        if self.verbose and _prints(model):
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {model.lr}.")


class ReduceLROnPlateau(Callback):
    """Multiply the rate by ``factor`` when the monitored figure stops improving, by the rules
    of ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (the default) or of Keras's
    ``keras.callbacks.ReduceLROnPlateau`` (``semantics="keras"``, or ``min_delta`` given).

    torch: after each epoch, ``current`` is better when ``current < best * (1 - threshold)``
    (mode "min", threshold_mode "rel"), ``current < best - threshold`` ("abs"), and
    symmetrically for "max". A better value resets the bad-epoch count, otherwise it grows by
    one; during the ``cooldown`` epochs after a reduction the count stays 0. When the count
    exceeds ``patience``, ``lr = max(lr * factor, min_lr)`` (skipped when the change is below
    ``eps``), and the count is reset. So patience p lowers the rate at the (p + 1)-th epoch
    without improvement.

    Keras (its source, Keras 3): ``current`` is better when ``current < best - min_delta``
    ("min"; ``> best + min_delta`` for "max"; ``min_delta`` default 1e-4, absolute). A cooldown
    epoch counts down first and resets the count; a better value resets it; otherwise, outside
    the cooldown, the count grows by one and when it reaches ``patience`` (``>=``) the rate
    becomes ``max(lr * factor, min_lr)`` if ``lr > min_lr`` (compared in float32), then the
    cooldown starts and the count is reset. So patience p lowers the rate at the p-th epoch
    without improvement: one epoch before torch for the same p >= 1. ``min_delta`` is Keras's
    argument (torch's is ``threshold``), so giving it selects Keras's rules: a Keras script's
    ``ReduceLROnPlateau(min_delta=1e-4, patience=5)`` then lowers the rate when Keras would
    (before, it took torch's count and lowered it one epoch late).

    The default ``mode`` is Keras's "auto": "max" for a monitored name with "acc", "r2" or
    "auc" in it, else "min" (torch's default, whose scheduler sees no names: an accuracy
    monitored in "min" mode would lower the rate while it improves). ``verbose=1`` prints
    Keras's line at each reduction ("Epoch 5: ReduceLROnPlateau reducing learning rate to
    0.001.", the epoch counted from 1). The epochs that lowered the rate are in
    ``self.reductions``. With an LR schedule (StepLR, CosineAnnealingLR, ...) in the same
    ``fit`` the reductions compose with it: the schedule's rates are multiplied by ``scale``,
    the product of the reductions so far (torch's chaining; see
    ``LRSchedule.check_together``).

    Raises:
        OptionTypeError: ``patience`` or ``cooldown`` not an int, ``factor``, ``threshold``,
            ``min_delta``, ``min_lr`` or ``eps`` not a number.
        GraphcError: ``factor`` outside (0, 1), ``patience``, ``cooldown``, ``threshold``,
            ``min_delta``, ``min_lr`` or ``eps`` negative or not finite (patience -1 lowered
            the rate after every epoch), an unknown ``threshold_mode`` or ``semantics``, ``min_delta`` given with a ``threshold`` or a ``threshold_mode``
            too or with ``semantics="torch"``, or ``threshold``/``threshold_mode`` with
            ``semantics="keras"`` (Keras has ``min_delta`` only).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        mode: str = "auto",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        min_delta: float | None = None,
        verbose: int = 0,
        semantics: str | None = None,
    ) -> None:
        if semantics not in (None, "torch", "keras"):
            raise GraphcError(
                f"ReduceLROnPlateau: semantics must be 'torch' or 'keras', got {semantics!r}"
            )
        who = "ReduceLROnPlateau"
        threshold = check_real(threshold, f"{who}: threshold", 0.0)
        if min_delta is not None:
            min_delta = check_real(min_delta, f"{who}: min_delta", 0.0)
        torch_options = threshold != 1e-4 or threshold_mode != "rel"
        if min_delta is not None:  # Keras's name: an absolute threshold, Keras's rules
            if torch_options:
                raise GraphcError(
                    "ReduceLROnPlateau: give min_delta (Keras's absolute threshold) or "
                    "threshold and threshold_mode (torch's), not both"
                )
            if semantics == "torch":
                raise GraphcError(
                    "ReduceLROnPlateau: min_delta is Keras's option; with semantics='torch' "
                    "give threshold=d, threshold_mode='abs'"
                )
            semantics = "keras"
        elif semantics == "keras":
            if torch_options:
                raise GraphcError(
                    "ReduceLROnPlateau: Keras's rules take min_delta, not threshold or "
                    "threshold_mode (torch's options)"
                )
            min_delta = 1e-4  # Keras's default
        if semantics == "keras":
            threshold, threshold_mode = float(min_delta), "abs"  # type: ignore[arg-type]
        self.semantics = semantics or "torch"
        self.verbose = verbose
        factor = check_real(factor, f"{who}: factor")
        if not 0 < factor < 1:
            raise GraphcError(f"ReduceLROnPlateau: factor must lie in (0, 1), got {factor}")
        patience = check_count(patience, f"{who}: patience")  # -1 lowered the rate every epoch
        cooldown = check_count(cooldown, f"{who}: cooldown")
        min_lr = check_real(min_lr, f"{who}: min_lr", 0.0)
        eps = check_real(eps, f"{who}: eps", 0.0)
        if threshold_mode not in ("rel", "abs"):
            raise GraphcError(
                f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.mode = _mode_for(monitor, mode, "ReduceLROnPlateau")
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.on_train_begin(None)

    def check_figures(self, names: list[str]) -> None:
        """Called by ``fit`` before training: the monitor is one of its figures."""
        _check_monitor(self.monitor, names, "ReduceLROnPlateau")

    def on_train_begin(self, model: Any) -> None:
        self.reductions: list[int] = []
        if getattr(self, "_resumed", False):  # load_state_dict: this fit continues the run
            self._resumed = False
            return
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.scale = 1.0

    def state_dict(self) -> dict[str, Any]:
        """The counters a resumed run needs (torch's ``ReduceLROnPlateau.state_dict``; JSON
        numbers, for ``model.save(path, extra={"plateau": cb.state_dict()})``): best,
        num_bad_epochs, cooldown_counter, and scale (the product of the reductions, which an
        LR schedule in the same fit multiplies its rates by)."""
        return {
            "best": float(self.best),
            "num_bad_epochs": int(self.num_bad_epochs),
            "cooldown_counter": int(self.cooldown_counter),
            "scale": float(self.scale),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s counters: the next ``fit`` (``initial_epoch=k``
        after ``model.load``, which restores the reduced rate) keeps them instead of starting
        afresh, so the rate is lowered at the epochs of the uninterrupted run (a fresh
        callback took the first resumed epoch as an improvement and counted from there).

        Raises:
            GraphcError: ``state`` is not such a dict.
        """
        try:
            best = float(state["best"])
            bad = check_count(state["num_bad_epochs"], "num_bad_epochs")
            cool = check_count(state["cooldown_counter"], "cooldown_counter")
            scale = float(state.get("scale", 1.0))  # (states saved before scale: 1.0)
            if not (math.isfinite(scale) and 0 < scale <= 1):
                raise ValueError(f"scale {scale!r} outside (0, 1]")
        except (KeyError, TypeError, ValueError, AttributeError, GraphcError) as e:
            raise GraphcError(
                f"ReduceLROnPlateau.load_state_dict: not a state_dict ({e!r})"
            ) from None
        self.best, self.num_bad_epochs, self.cooldown_counter = best, bad, cool
        self.scale = scale
        self._resumed = True

    def _better(self, a: float) -> bool:
        t, best = self.threshold, self.best
        if self.mode == "min":
            return a < best * (1 - t) if self.threshold_mode == "rel" else a < best - t
        return a > best * (1 + t) if self.threshold_mode == "rel" else a > best + t

    def _reduce(self, model: Any, epoch: int) -> None:
        old = float(model.lr)
        new = max(old * self.factor, self.min_lr)
        model.lr = new
        # what an LR schedule in the same fit multiplies its later rates by
        self.scale *= float(model.lr) / old if old > 0 else self.factor
        self.reductions.append(epoch)
        if self.verbose and _prints(model):
            print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")

    def _keras_epoch_end(self, model: Any, current: float, epoch: int) -> None:
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self._better(current):
            self.best, self.num_bad_epochs = current, 0
        elif self.cooldown_counter == 0:
            self.num_bad_epochs += 1
            if self.num_bad_epochs >= self.patience and model.lr > np.float32(self.min_lr):
                self._reduce(model, epoch)
                self.cooldown_counter = self.cooldown
                self.num_bad_epochs = 0

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        current = _figure(figures, self.monitor, "ReduceLROnPlateau")
        if self.semantics == "keras":
            self._keras_epoch_end(model, current, epoch)
            return False
        if self._better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            if model.lr - max(model.lr * self.factor, self.min_lr) > self.eps:
                self._reduce(model, epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return False


class ModelCheckpoint(Callback):
    """Save the model after epochs (Keras's ``keras.callbacks.ModelCheckpoint``).

    ``filepath`` may hold ``str.format`` fields: ``{epoch}`` (counted from 1, as Keras names
    files) and any of the epoch's figures (``"ck-{epoch:02d}-{val_loss:.3f}.gcm"``).

    Args:
        filepath: the file to write each time (its folder must exist).
        monitor: the figure ``save_best_only`` compares ("val_loss", "val_accuracy", ...).
        verbose: 1 prints Keras's line for each epoch (saved, or did not improve).
        save_best_only: save only when the monitored figure beats the best so far (a NaN
            never does); otherwise after every epoch.
        save_weights_only: write ``Model.save``'s checkpoint (parameters, optimizer state,
            step counter and rates; ``Model.load`` reads it) instead of ``Model.save_model``'s
            model file (the network too; ``graphc.load_model`` reads it).
        mode: "min", "max" or "auto" (max for accuracy-like names, else min).
        save_freq: "epoch" only (Keras's default; the arguments are in Keras's order).
        initial_value_threshold: the best value to beat at first (None: any finite value).

    Attributes:
        best: the best monitored value so far (save_best_only).
        saved: the paths written by the current ``fit``, in order.

    Raises:
        GraphcError: (when made) an unknown ``mode``; ``save_freq`` other than "epoch".
        ArgumentError: (when ``fit`` starts, before anything trains) ``monitor`` is not
            among fit's figures (save_best_only); a ``filepath`` field names no figure; the
            folder of ``filepath`` does not exist (when its name has no fields).
        CheckpointError: the file cannot be written (the previous one is left as it was);
            (when made) ``filepath`` is named like another framework's file (Keras's
            ``.keras`` / ``.h5``, ``.pt``, ``.onnx``, ...): graphc writes only its own format,
            which those readers cannot load (runtime.checkpoint.check_file_name).
        OptionTypeError: (when made) ``save_best_only`` or ``save_weights_only`` not a bool,
            ``initial_value_threshold`` not a number (None: none).
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
    ) -> None:
        if save_freq != "epoch":
            raise GraphcError(
                f"ModelCheckpoint: save_freq={save_freq!r} is not supported; it saves at the "
                "end of epochs (save_freq='epoch', Keras's default). For saves within an "
                "epoch, call model.save in a callback's on_batch_end"
            )
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only = check_bool(save_best_only, "ModelCheckpoint: save_best_only")
        self.save_weights_only = check_bool(save_weights_only, "ModelCheckpoint: save_weights_only")
        check_file_name(  # Keras's "best.keras" / "w.weights.h5": refused before fit starts
            self.filepath,
            "a graphc checkpoint (numpy .npz archive of parameters and optimizer state)"
            if self.save_weights_only
            else "a graphc model file (numpy .npz archive)",
            "ModelCheckpoint",
        )
        self.mode = _mode_for(monitor, mode, "ModelCheckpoint")
        if initial_value_threshold is not None:  # compared after the first epoch
            initial_value_threshold = check_real(
                initial_value_threshold, "ModelCheckpoint: initial_value_threshold"
            )
        self.initial_value_threshold = initial_value_threshold
        self.on_train_begin(None)

    def check_figures(self, names: list[str]) -> None:
        """Called by ``fit`` before training: the monitor is one of its figures, and
        ``filepath``'s fields are ``epoch`` and figures among them (a typo would otherwise
        surface at the first save, after an epoch had trained)."""
        if self.save_best_only:
            _check_monitor(self.monitor, names, "ModelCheckpoint")
        path = self._path(0, dict.fromkeys(names, 0.0))
        folder = os.path.dirname(path) or "."
        # a folder without format fields is the same for every epoch: a missing one would
        # otherwise surface at the first save, after an epoch had changed the weights (only
        # the process that writes checks it: rank 0 under MPI)
        if "{" not in os.path.dirname(self.filepath) and not os.path.isdir(folder):
            from graphc.runtime.distributed import is_root

            if is_root():
                raise ArgumentError(
                    f"ModelCheckpoint: the folder {folder!r} of filepath {self.filepath!r} "
                    f"does not exist; create it before fit (os.makedirs({folder!r}, "
                    "exist_ok=True)). Nothing was trained"
                )

    def on_train_begin(self, model: Any) -> None:
        start = self.initial_value_threshold
        self.best = (math.inf if self.mode == "min" else -math.inf) if start is None else start
        self.saved: list[str] = []

    def _path(self, epoch: int, figures: dict[str, float]) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **figures)
        except (KeyError, IndexError, ValueError) as e:
            raise ArgumentError(
                f"ModelCheckpoint: cannot fill in filepath {self.filepath!r} ({e!r}); its "
                f"fields may be epoch and the epoch's figures {sorted(figures)}"
            ) from None

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        path = self._path(epoch, figures)
        if self.save_best_only:
            current = _figure(figures, self.monitor, "ModelCheckpoint")
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                if self.verbose and _prints(model):
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return False
            if self.verbose and _prints(model):
                print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                    f"{current:.5f}, saving model to {path}"
                )
            self.best = current
        elif self.verbose and _prints(model):
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            model.save(path)
        else:
            model.save_model(path)
        self.saved.append(path)
        return False


class Scripted:
    """A stand-in model for testing callbacks: ``lr`` and weights, no compiled code."""

    def __init__(self, lr: float = 0.1) -> None:
        self.lr = lr
        self.params = {"w": np.zeros(1)}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for k, v in weights.items():
            self.params[k][...] = v


def run_scripted(
    callbacks: list[Any], curve: list[float], monitor: str = "val_loss", model: Any = None
) -> tuple[Any, int]:
    """Feed a scripted curve of ``monitor`` values to callbacks as ``fit`` would.

    At epoch e the stand-in model's weight is e, so restored weights name the epoch they come
    from. Returns (model, number of epochs run).
    """
    model = model or Scripted()
    for cb in callbacks:
        getattr(cb, "on_train_begin", lambda m: None)(model)
    ran = 0
    for epoch, value in enumerate(curve):
        for cb in callbacks:
            getattr(cb, "on_epoch_begin", lambda m, e: None)(model, epoch)
        model.params["w"][...] = epoch
        ran += 1
        stop = False
        for cb in callbacks:
            stop |= bool(
                getattr(cb, "on_epoch_end", lambda m, e, f: False)(model, epoch, {monitor: value})
            )
        if stop:
            break
    for cb in callbacks:
        getattr(cb, "on_train_end", lambda m, h: None)(model, None)
    return model, ran


class CSVLogger(Callback):
    """Append one row per epoch to a CSV file (the columns of Keras's ``CSVLogger``: ``epoch``,
    then the epoch's figures sorted by name: ``loss``, ``lr``, ``seconds``, ``val_loss``, ...).

    The header is written with the first row; a later key gets a column only if it was present
    in the first epoch (Keras's rule). With ``append=True`` an existing file keeps its rows and
    no second header is written. Rows are flushed after every epoch, so an interrupted run
    keeps what it logged.

    Args:
        filename: the CSV file's path (its folder must exist).
        separator: the field separator (",").
        append: append to an existing file instead of replacing it.

    Raises:
        ArgumentError: the file cannot be opened (when training begins).
        GraphcError: (when made) a separator that is not one character (or a quote or a
            line break).
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        append = check_bool(append, "CSVLogger: append")
        if not (isinstance(separator, str) and len(separator) == 1 and separator not in '"\r\n'):
            # (csv.writer refused it with TypeError when training began)
            raise GraphcError(f"CSVLogger: separator must be one character, got {separator!r}")
        self.filename, self.separator, self.append = str(filename), separator, append
        self._file: Any = None
        self._writer: Any = None
        self._keys: list[str] | None = None

    def on_train_begin(self, model: Any) -> None:
        import csv
        import os

        self._file = self._writer = None
        if not _prints(model):  # a data-parallel fit's other ranks: rank 0 writes the rows
            return
        had_rows = self.append and os.path.isfile(self.filename)
        had_rows = had_rows and os.path.getsize(self.filename) > 0
        try:
            self._file = open(self.filename, "a" if self.append else "w", newline="")
        except OSError as e:
            raise ArgumentError(f"CSVLogger: cannot open {self.filename!r}: {e.strerror}") from None
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._keys = None
        self._header_done = had_rows

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        if self._writer is None:
            return False
        if self._keys is None:
            self._keys = sorted(figures)
            if not self._header_done:
                self._writer.writerow(["epoch", *self._keys])
        try:
            row = [epoch, *(repr(float(figures.get(k, "nan"))) for k in self._keys)]
            self._writer.writerow(row)
            self._file.flush()
        except OSError as e:  # a full disk: the epoch's model is kept; the log says no more
            f, self._file, self._writer = self._file, None, None
            with contextlib.suppress(OSError):
                f.close()  # its unwritten buffer fails again: dropped
            raise ArgumentError(
                f"CSVLogger: cannot write {self.filename!r} ([Errno {e.errno}] {e.strerror})"
            ) from None
        return False

    def on_train_end(self, model: Any, history: Any) -> None:
        if self._file is not None:
            f, self._file, self._writer = self._file, None, None
            try:
                f.close()
            except OSError as e:
                raise ArgumentError(
                    f"CSVLogger: cannot write {self.filename!r} ([Errno {e.errno}] {e.strerror})"
                ) from None


class TensorBoard(Callback):
    """Write every epoch's figures as TensorBoard scalars (tag ``epoch_loss``,
    ``epoch_val_loss``, ... as Keras names them; step = the epoch, from 0) into ``log_dir``.

    Needs the optional ``tensorboardX`` package (``pip install -e ".[tensorboard]"``); view
    with ``tensorboard --logdir LOG_DIR``.

    Args:
        log_dir: the folder of the event files (created if missing).

    Raises:
        GraphcError: tensorboardX is not installed (raised here, at construction).
    """

    def __init__(self, log_dir: str = "logs") -> None:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise GraphcError(
                "TensorBoard needs the tensorboardX package: "
                + install_hint("tensorboardX", "tensorboard")
            ) from None
        self.log_dir = str(log_dir)
        self._writer: Any = None

    def on_train_begin(self, model: Any) -> None:
        from tensorboardX import SummaryWriter

        # a data-parallel fit's other ranks: rank 0 writes the event file
        self._writer = SummaryWriter(self.log_dir) if _prints(model) else None

    def on_epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        if self._writer is not None:
            for k, v in figures.items():
                self._writer.add_scalar(f"epoch_{k}", float(v), epoch)
            self._writer.flush()
        return False

    def on_train_end(self, model: Any, history: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
