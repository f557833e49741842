"""The default thread count of compiled models.

The threads themselves live in the generated code (codegen/threads.py): every entry point
(training step, epoch, predict) splits its large GEMMs over them, with results that do not
depend on the count.

Objects whose native calls share buffers (a Model's entries, a loaded Library's workspace)
serialize their methods with one lock each (``serialized``); ``own_lock`` gives an object that
lock and a fresh one in the child of a fork(), where a parent thread may have held the old one.

The thread count: ``threads`` of ``gc.compile`` / ``Model.threads``; default
``$GRAPHC_THREADS``, else every core this process may run on (``os.sched_getaffinity``).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref

from graphc.codegen.threads import thread_count_env


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
    env = threads_from_env()
    if env is not None:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_lock_owners: weakref.WeakSet = weakref.WeakSet()


def own_lock(obj: object) -> None:
    """Give ``obj`` the lock ``serialized`` methods take (``obj._lock``, reentrant)."""
    obj._lock = threading.RLock()
    _lock_owners.add(obj)


def _fresh_locks_after_fork() -> None:
    """In a fork()ed child: new locks (a parent thread, absent here, may have held the old)."""
    for obj in list(_lock_owners):
        obj._lock = threading.RLock()


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
