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

from collections.abc import Callable, Iterable
from typing import Any


def _hook(cb: Any, *names: str) -> Callable[..., Any] | None:
    """The first of ``names`` that ``cb`` defines, or None."""
    for name in names:
        fn = getattr(cb, name, None)
        if fn is not None:
            return fn
    return None


class CallbackList:
    """The hooks of ``callbacks``, each list holding only the callbacks that define it."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = list(callbacks)

        def hooks(*names: str) -> list[Callable[..., Any]]:
            found = (_hook(cb, *names) for cb in self.callbacks)
            return [h for h in found if h is not None]

        self._epoch_begin = hooks("on_epoch_begin")
        self._batch_begin = hooks("on_train_batch_begin", "on_batch_begin")
        self._batch_end = hooks("on_train_batch_end", "on_batch_end")
        self._epoch_end = hooks("on_epoch_end")
        self._train_end = hooks("on_train_end")

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
                    fn(model)

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
