"""How much freed memory the C allocator keeps for reuse (glibc's mallopt).

Python's small objects live in its own arenas; every buffer over 512 bytes
comes from the C library's ``malloc``: each read (up to 256 KiB from
uvloop), each batch of answers joined for one send. glibc hands an
allocation of 128 KiB or more its own ``mmap`` and gives the top of its
heap back to the system once 128 KiB are free there (both thresholds grow
as it sees large blocks freed, to at most 32 and 64 MiB). A proxy
allocates and frees such buffers on every read and send, and each one
given back is faulted in again, page by page, the next time: the ZMTP
broker took 26,000 page faults per 110,000 1 KiB messages (``perf stat``;
870 with 32 MiB here). Fixing both thresholds keeps up to the trim
threshold of freed memory in the process, for reuse.

A process-wide setting, so the ``serve`` command's (``--malloc-trim-threshold``),
never the library's: an application embedding a server tunes its own
process. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["MAX_MMAP_THRESHOLD", "malloc_trim_threshold", "set_malloc_trim_threshold"]

#: mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit systems: larger
#: blocks always get their own mapping (and are given back when freed).
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024

_set: int | None = None


def set_malloc_trim_threshold(size: int) -> bool:
    """Keep up to ``size`` bytes of freed memory for reuse, and serve
    blocks up to ``size`` (at most :data:`MAX_MMAP_THRESHOLD`) from the
    heap rather than a mapping of their own; False (nothing changed) where
    the C library is not glibc or refuses."""
    global _set
    if size < 0:
        raise ValueError("the trim threshold is a size in bytes, >= 0")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not mallopt(_M_MMAP_THRESHOLD, min(size, MAX_MMAP_THRESHOLD)) or not mallopt(_M_TRIM_THRESHOLD, size):
        return False
    _set = size
    return True


def malloc_trim_threshold() -> int | None:
    """The trim threshold :func:`set_malloc_trim_threshold` set in this
    process; None: the C library's own (adaptive) one."""
    return _set
