"""The default thread count of compiled models.

The threads themselves live in the generated code (codegen/threads.py): every entry point
(training step, epoch, predict) splits its large GEMMs over them, with results that do not
depend on the count.

Objects whose native calls share buffers (a Model's entries, a loaded Library's workspace)
serialize their methods with one lock each (``serialized``); ``own_lock`` gives an object that
lock and a fresh one in the child of a fork(), where a parent thread may have held the old one.
Every method that reads or writes the parameters, optimizer state or step counter takes it, so
what it sees is the state after some whole training step, never a mix of two. A long call
(``fit``) hands the lock over at its step / epoch boundaries to the threads waiting in
``turn`` (snapshots: get_weights, save, ...) instead of making them wait for its end
(``hand_over``).

The thread count: ``threads`` of ``gc.compile`` / ``Model.threads``; default
``$GRAPHC_THREADS``, else every core this process may run on (``os.sched_getaffinity``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Iterator

from graphc.codegen.threads import thread_count_env, threads_or_cores


def threads_from_env() -> int | None:
    """``$GRAPHC_THREADS`` as a thread count; None when unset or blank.

    Raises:
        ArgumentError: set to anything but a whole number >= 1 (see thread_count_env).
    """
    return thread_count_env("GRAPHC_THREADS")


def default_threads() -> int:
    """``$GRAPHC_THREADS`` if set, else the cores this process may run on.

    Raises:
        ArgumentError: GRAPHC_THREADS is set but not a whole number >= 1.
    """
    return threads_or_cores("GRAPHC_THREADS")


_lock_owners: weakref.WeakSet = weakref.WeakSet()


class _Waiters:
    """How many threads wait in ``turn`` for an object's lock (a counter under its own lock)."""

    def __init__(self) -> None:
        self.count = 0
        self.mutex = threading.Lock()

    def add(self, k: int) -> None:
        with self.mutex:
            self.count += k


def _fresh(obj: object) -> None:
    obj._lock = threading.RLock()
    obj._waiters = _Waiters()
    # held for the whole of a long call (fit) that hands ``_lock`` over at its boundaries, so
    # that a second such call from another thread still waits for the first one's end
    obj._long_lock = threading.RLock()


def own_lock(obj: object) -> None:
    """Give ``obj`` the lock ``serialized`` methods take (``obj._lock``, reentrant), the count
    of threads waiting in ``turn`` and the lock of long calls (``obj._long_lock``)."""
    _fresh(obj)
    _lock_owners.add(obj)


def _fresh_locks_after_fork() -> None:
    """In a fork()ed child: new locks (a parent thread, absent here, may have held the old)."""
    for obj in list(_lock_owners):
        _fresh(obj)


@contextlib.contextmanager
def turn(obj: object) -> Iterator[None]:
    """Hold ``obj._lock`` (as ``serialized``); while another thread's long call (``fit``) holds
    it, ask that call to hand it over at its next step or epoch boundary (``hand_over``)
    rather than waiting for its end. For the short methods that read or write the weights."""
    lock = obj._lock
    if not lock.acquire(blocking=False):
        waiters = obj._waiters
        waiters.add(1)
        try:
            lock.acquire()
        finally:
            waiters.add(-1)
    try:
        yield
    finally:
        lock.release()


def hand_over(obj: object, patience: float = 0.5) -> None:
    """Called by the thread holding ``obj._lock`` at a point where the object's state is whole
    (between training steps or epochs): when threads wait in ``turn``, release the lock fully
    (whatever its recursion depth), let them run, and take it back. Returns at once when nobody
    waits (one integer read). ``patience`` (seconds) bounds the wait for a stream of new
    waiters; after it the caller competes for the lock like anyone else."""
    waiters = obj._waiters
    if not waiters.count:
        return
    lock = obj._lock
    if not hasattr(lock, "_release_save"):  # (every CPython RLock has it: Condition uses it)
        return
    saved = lock._release_save()  # the whole recursion (threading.Condition's own protocol)
    try:
        end = time.monotonic() + patience
        while waiters.count and time.monotonic() < end:
            time.sleep(0.0002)
    finally:
        lock._acquire_restore(saved)


def in_turn_of_first(fn):
    """Run ``fn(obj, ...)`` in ``turn(obj)`` when ``obj`` has the lock (a Model, a Library):
    module-level functions that read or write an object's weights (checkpoint save/load,
    export), so that calling them directly is as safe as calling the methods."""

    @functools.wraps(fn)
    def run(obj, *args, **kwargs):
        if getattr(obj, "_waiters", None) is None:
            return fn(obj, *args, **kwargs)
        with turn(obj):
            return fn(obj, *args, **kwargs)

    return run


def turned(method):
    """Run the method in ``turn(self)`` (a short method that reads or writes the weights)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with turn(self):
            return method(self, *args, **kwargs)

    return locked


def long_call(method):
    """Run the method holding ``self._long_lock`` (taken before ``self._lock``): a call that
    hands ``_lock`` over at its boundaries (``fit``: ``hand_over``) still runs whole before
    the same call from another thread starts."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._long_lock:
            return method(self, *args, **kwargs)

    return run


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_after_fork)


def serialized(method):
    """Run the method under ``self._lock`` (see own_lock): calls from several Python threads
    take turns, each still using every thread of the native pool."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked
