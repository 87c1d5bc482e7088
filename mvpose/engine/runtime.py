"""Process settings for fast CPU training and inference.

They change how fast the same computation runs, never its result.

* :func:`keep_freed_memory`: glibc returns large freed blocks to the kernel (every block above
  the mmap threshold, and the top of the heap above the trim threshold), so each training step
  maps its activations afresh and pays a page fault per 4 KiB page. On the 2-core VM this project
  is measured on, a training step of ``mv_ppt_tiny`` (batch 8, 4 views) took 1.0-1.4 s of wall
  time with the default allocator and 0.6-0.8 s with freed memory kept, for the same CPU time
  (README, "Speed against the official multi-view PPT"). The process keeps its peak heap size
  instead of shrinking after each step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse (no mmap for large blocks, no heap trimming).

    Process-wide, inherited by forked DataLoader workers; applied once. Does nothing (returns
    False) where the C library is not glibc (macOS, Windows, musl) or when the environment
    variable ``MVPOSE_KEEP_FREED_MEMORY`` is ``0``.

    Returns:
        True if the setting is in effect.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("MVPOSE_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success; the trim threshold is a size_t-sized int: 1 GiB is plenty.
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    _applied = bool(ok)
    log.debug("keep_freed_memory: %s", "on" if ok else "mallopt refused")
    return _applied
