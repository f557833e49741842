"""CallbackList: each hook looked up once, any subset of hooks, Keras's batch-hook names."""

from __future__ import annotations

from graphc.runtime.callbacks import CallbackList


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def set_model(self, m):
        self.calls.append(("set_model", m))

    def on_train_begin(self, m):
        self.calls.append(("train_begin", m))

    def on_batch_end(self, b, logs):  # shadowed by on_train_batch_end (Keras prefers it)
        self.calls.append(("batch_end_old", b))

    def on_train_batch_end(self, b, logs):
        logs["mutated"] = True  # a hook gets its own copy of the logs
        self.calls.append(("batch_end", b, dict(logs)))

    def on_epoch_end(self, m, epoch, figures):
        self.calls.append(("epoch_end", epoch))
        return epoch >= 1


def test_callback_list_calls_the_hooks_each_callback_defines() -> None:
    r, bare = Recorder(), object()  # a callback without any hook is allowed
    cbs = CallbackList([r, bare])
    assert cbs.has_batch_hooks and not CallbackList([bare]).has_batch_hooks
    cbs.train_begin("m")
    cbs.epoch_begin("m", 0)  # nobody defines it
    logs = {"batch": 0, "size": 4, "loss": 1.0}
    cbs.batch_end(0, logs)
    assert "mutated" not in logs
    assert cbs.epoch_end("m", 0, {}) is False and cbs.epoch_end("m", 1, {}) is True
    cbs.train_end("m", None)
    assert r.calls == [
        ("set_model", "m"),
        ("train_begin", "m"),
        ("batch_end", 0, {"batch": 0, "size": 4, "loss": 1.0, "mutated": True}),
        ("epoch_end", 0),
        ("epoch_end", 1),
    ]


def test_epoch_and_train_hooks_written_with_keras_arguments() -> None:
    """A callback ported from Keras (on_epoch_begin(self, epoch, logs=None), ...) gets Keras's
    arguments: its epoch hooks received the model as the epoch silently (and on_epoch_end
    raised TypeError); graphc's own form (model first) is unchanged in the same fit."""
    import numpy as np

    import graphc as gc

    x, y = gc.input("x", ("N", 3)), gc.input("y", ("N", 2))
    p = gc.dense(x, 2)
    m = gc.compile(p, gc.mean_squared_error(p, y), gc.SGD(0.1))
    X, Y = np.ones((6, 3), np.float32), np.ones((6, 2), np.float32)

    class KerasStyle(gc.callbacks.Callback):
        def __init__(self):
            self.seen = []

        def on_train_begin(self, logs=None):
            self.seen.append(("train_begin", logs))

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(("epoch_begin", epoch, logs))

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(("epoch_end", epoch, logs["loss"]))
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.seen.append(("train_end", logs["loss"]))

    class GraphcStyle:
        def __init__(self):
            self.seen = []

        def on_epoch_begin(self, model, epoch):
            self.seen.append((model is m, epoch))

    k, g = KerasStyle(), GraphcStyle()
    h = m.fit(X, Y, epochs=5, verbose=0, callbacks=[k, g])
    assert k.seen == [
        ("train_begin", {}),
        ("epoch_begin", 0, {}),
        ("epoch_end", 0, h["loss"][0]),
        ("epoch_begin", 1, {}),
        ("epoch_end", 1, h["loss"][1]),
        ("train_end", h["loss"][1]),
    ]
    assert g.seen == [(True, 0), (True, 1)]
