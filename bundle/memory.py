"""Memory freed by one chunk of a stream is kept for the next one.

Verifying and unpacking move a bundle through the process in 4 MiB chunks, each a new bytes object. With
glibc's defaults a freed chunk of that size goes back to the kernel (a dynamic mmap threshold, heap
trimming), so every chunk costs fresh pages: zeroing, page faults and, on a virtual machine that hands
freed memory to its host, a host fault per page too. That was a third of `verify`'s CPU. Allocations up
to MMAP_THRESHOLD come from the heap instead, and the heap keeps up to TRIM_THRESHOLD free for reuse; the
process's memory still stays bounded by what it holds at once.
"""

import ctypes

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Tell the C library to reuse freed chunks rather than return them; whether it could (glibc: yes; musl has no mallopt)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
