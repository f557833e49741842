"""``CallbackList``: the callbacks of one ``Model.fit`` call, called hook by hook.

A callback may define any subset of the hooks (the callbacks users write are plain objects,
graphc.callbacks.Callback is a convenience base): ``set_model(model)``,
``on_train_begin(model)``, ``on_epoch_begin(model, epoch)``, ``on_batch_begin(batch, logs)``,
``on_batch_end(batch, logs)`` (Keras's ``on_train_batch_begin/end`` are the same hooks and
preferred when both exist), ``on_epoch_end(model, epoch, figures) -> bool`` (True stops
training) and ``on_train_end(model, history)``. The hooks are looked up once, here, instead of
at every call site.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any


def _hook(cb: Any, *names: str) -> Callable[..., Any] | None:
    """The first of ``names`` that ``cb`` defines, or None."""
    for name in names:
        fn = getattr(cb, name, None)
        if fn is not None:
            return fn
    return None


def keras_form(fn: Callable[..., Any], first: str) -> bool:
    """Whether hook ``fn`` is written with Keras's arguments: its first positional parameter
    is named ``first`` ("epoch" for ``on_epoch_begin(epoch, logs=None)`` and
    ``on_epoch_end(epoch, logs=None)``, "logs" for ``on_train_begin(logs=None)`` and
    ``on_train_end(logs=None)``) where graphc's hooks take the model first. False when the
    signature cannot be read."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    return bool(positional) and positional[0].name == first


def _epoch_hook(fn: Callable[..., Any], end: bool) -> Callable[..., Any]:
    """``fn`` called as graphc calls epoch hooks, (model, epoch[, figures]): a Keras-form hook
    (``on_epoch_begin(self, epoch, logs=None)``, a callback ported from Keras) gets Keras's
    (epoch, logs) instead; it received the model as its epoch, silently (``epoch > 5``
    compared the model, a list of epochs collected models). Keras's on_epoch_end returns
    nothing (it stops training with ``self.model.stop_training = True``)."""
    if not keras_form(fn, "epoch"):
        return fn
    if end:
        return lambda model, epoch, figures: fn(epoch, figures)
    return lambda model, epoch: fn(epoch, {})


def _train_hook(fn: Callable[..., Any], end: bool) -> Callable[..., Any]:
    """``fn`` called as graphc calls on_train_begin(model) / on_train_end(model, history): a
    Keras-form hook (``on_train_begin(self, logs=None)``) gets Keras's logs instead: {} at
    the beginning, the last epoch's figures at the end."""
    if not keras_form(fn, "logs"):
        return fn
    if not end:
        return lambda model: fn({})

    def train_end(model: Any, history: Any) -> Any:
        figures = getattr(history, "history", None) or {}
        return fn({k: v[-1] for k, v in figures.items() if v})

    return train_end


class CallbackList:
    """The hooks of ``callbacks``, each list holding only the callbacks that define it.

    Epoch and train hooks written with Keras's arguments (``on_epoch_begin(self, epoch,
    logs=None)``, ``on_epoch_end(self, epoch, logs=None)``, ``on_train_begin(self,
    logs=None)``, ``on_train_end(self, logs=None)``: the first parameter named ``epoch`` or
    ``logs``) are called with Keras's arguments (keras_form); graphc's own take the model
    first."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = list(callbacks)

        def hooks(*names: str) -> list[Callable[..., Any]]:
            found = (_hook(cb, *names) for cb in self.callbacks)
            return [h for h in found if h is not None]

        self._epoch_begin = [_epoch_hook(h, False) for h in hooks("on_epoch_begin")]
        self._batch_begin = hooks("on_train_batch_begin", "on_batch_begin")
        self._batch_end = hooks("on_train_batch_end", "on_batch_end")
        self._epoch_end = [_epoch_hook(h, True) for h in hooks("on_epoch_end")]
        self._train_end = [_train_hook(h, True) for h in hooks("on_train_end")]

    @property
    def has_batch_hooks(self) -> bool:
        """Whether a callback runs between batches (fit then makes one native call per batch)."""
        return bool(self._batch_begin or self._batch_end)

    def train_begin(self, model: Any) -> None:
        """``set_model`` then ``on_train_begin``, callback by callback, in order."""
        for cb in self.callbacks:
            for name in ("set_model", "on_train_begin"):
                fn = getattr(cb, name, None)
                if fn is not None:
                    (_train_hook(fn, False) if name == "on_train_begin" else fn)(model)

    def epoch_begin(self, model: Any, epoch: int) -> None:
        for fn in self._epoch_begin:
            fn(model, epoch)

    def batch_begin(self, batch: int, logs: dict[str, Any]) -> None:
        for fn in self._batch_begin:
            fn(batch, dict(logs))

    def batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        for fn in self._batch_end:
            fn(batch, dict(logs))

    def epoch_end(self, model: Any, epoch: int, figures: dict[str, float]) -> bool:
        """Calls every callback's ``on_epoch_end``; True when one of them asks to stop."""
        stop = False
        for fn in self._epoch_end:
            stop |= bool(fn(model, epoch, figures))
        return stop

    def train_end(self, model: Any, history: Any) -> None:
        for fn in self._train_end:
            fn(model, history)
