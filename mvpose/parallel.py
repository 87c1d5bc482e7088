"""Worker processes that are safe to start from a process that already ran torch or OpenCV.

Forking a process whose OpenMP / OpenCV thread pools are running can deadlock the child (it
inherits locks held by threads that do not exist in it): seen here as a hanging test run. A
``forkserver`` starts workers from a clean server process instead, which imports the worker
modules once, so workers still start in milliseconds; ``spawn`` is the fallback elsewhere.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Sequence


def worker_context(preload: Sequence[str] = ()) -> mp.context.BaseContext:
    """A multiprocessing context for worker pools (``forkserver`` where available, else ``spawn``).

    Args:
        preload: modules the fork server imports once, so that each worker does not.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload(list(preload))
        return ctx
    return mp.get_context("spawn")
