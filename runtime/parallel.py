"""Threads for row-independent entries (``infer``): the rows are split over a pool of threads,
each running the compiled entry on its own block of rows with its own workspace.

The native call releases the GIL (ctypes does, for the whole call), so the blocks run on
different cores at once. Every row's result is computed by the same code as with one thread;
only the GEMM's blocking may differ with the number of rows in a call, so results agree with
one thread within float32 rounding (tests/test_threads.py), not necessarily bit for bit.

Training steps are not split: forward, backward and the optimizer update of one mini-batch are
one native call, and splitting it would need a gradient reduction between threads (see the note
in benchmarks/README.md).

The thread count: ``threads`` of ``gc.compile`` / ``Model.threads``; default
``$GRAPHC_THREADS``, else every core this process may run on (``os.sched_getaffinity``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_ROWS_PER_THREAD = 16  # below this, a thread's start-up and hand-over cost more than it saves


def default_threads() -> int:
    """``$GRAPHC_THREADS`` if set (>= 1), else the cores this process may run on."""
    env = os.environ.get("GRAPHC_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class RowPool:
    """A pool of ``threads`` workers, each with its own copy of an entry (workspace, outputs)."""

    def __init__(self, make_entry: Callable[[], object], threads: int) -> None:
        self.threads = threads
        self.entries = [make_entry() for _ in range(threads)]
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="graphc")

    def run(self, arrays: list[np.ndarray], n: int, outs: list[np.ndarray]) -> None:
        """Run the entry over rows 0..n-1 of ``arrays`` (C-contiguous, n rows first) and write
        the rows of its results into ``outs`` (each with n rows first)."""
        blocks = min(self.threads, max(1, n // MIN_ROWS_PER_THREAD))
        step = -(-n // blocks)

        def work(k: int) -> None:
            lo, hi = k * step, min(n, (k + 1) * step)
            e = self.entries[k]
            part = [a[lo:hi] for a in arrays]
            res = e(part, hi - lo, checked=False)
            for o, r in zip(outs, res):
                o[lo:hi] = r

        list(self.pool.map(work, range(blocks)))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
