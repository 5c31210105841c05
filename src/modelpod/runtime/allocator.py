"""Keep large freed buffers for reuse instead of giving them back to the OS after every request.

A serving process allocates and frees the same large buffers on every request: request bodies,
input and output tensors, response bodies. glibc's malloc serves large blocks with ``mmap`` and
returns freed memory to the OS when the top of the heap is free, so each request pays again for
fresh pages (a page fault per 4 KiB, plus zeroing). Measured on the 1 MiB binary benchmark
(``benchmarks/serve_v2.py``), that churn was most of the request time: about 3.4 ms per request
against 0.9 ms once the memory is kept.

:func:`keep_freed_memory` sets glibc's ``M_MMAP_THRESHOLD`` (blocks under it come from the heap)
and ``M_TRIM_THRESHOLD`` (how much free memory the heap keeps before giving it back). The cost is
memory: freed memory, up to what requests used at their peak, stays for the next requests (at most
the trim threshold of free memory per malloc arena; threads may have arenas of their own). It is a
no-op where the C library is not glibc. ``modelpod serve --no-keep-freed-memory`` turns it off.
Worker processes (``metadata.worker = "process"``) follow their server: :func:`applied` says
whether this process tuned its allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("modelpod.serve")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest allowed mmap threshold on 64-bit systems
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
_applied = False


def applied() -> bool:
    """Whether :func:`keep_freed_memory` tuned this process."""
    return _applied


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Tune glibc malloc for this process; True when it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    global _applied
    _applied = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    if _applied:
        log.debug("malloc keeps freed blocks under %d MiB and up to %d MiB of free heap",
                  mmap_threshold >> 20, trim_threshold >> 20)
    return _applied
