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
