"""The default thread count of compiled models.

The threads themselves live in the generated code (codegen/threads.py): every entry point
(training step, epoch, predict) splits its large GEMMs over them, with results that do not
depend on the count.

The thread count: ``threads`` of ``gc.compile`` / ``Model.threads``; default
``$GRAPHC_THREADS``, else every core this process may run on (``os.sched_getaffinity``).
"""

from __future__ import annotations

import os


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
