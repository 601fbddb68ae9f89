"""The process's heap where nothing is timed: freed blocks stay in the heap for the next one.

glibc serves an allocation at or above its mmap threshold (adjusted as blocks are freed, at
most 32 MiB) with fresh pages from the kernel and gives them back on free, and trims the top of
its heap past the trim threshold; every fresh page is a fault that the kernel fills with zeros.
A point's float64 references walk the draw block by block (a 32 MiB block of the draw, 2 MiB
temporaries, hundreds of times), so at B = 2048, C = 32768, fp32, accuracy only, the process
took 2.7-3.9 million page faults and 6-8 s of system time: more than the arithmetic. With both
thresholds at 64 MiB those blocks are reused from the heap: 11.0-11.7 s -> 8.7 s a point and 0.55
million faults, the peak RSS 1.42 -> 1.44 GB (docs/operations.md). The inputs (L bytes, 256 MiB
there) are above it and still go back to the kernel when freed.

Only where nothing is timed (`timing.enabled=false`): a variant's timed calls allocate too, and
in a default PyTorch process they pay those faults; keeping freed memory would time them as if
a caching allocator served them. A process keeps the setting once made (glibc cannot go back to
its adjusting threshold), so a later timed job in the same process would inherit it: a sweep's
jobs share one timing setting unless `timing.enabled` itself is swept.

A walk that makes its draw ahead in a second thread (harness/loss/ahead.py, any job) ends with
`give_back_free_pages`, so that its blocks are not resident under the call that follows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
HEAP_BLOCK_BYTES = 64 << 20  # above the draw's 32 MiB blocks, below any point's logits worth keeping

_kept = False


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library, where it is glibc's (mallopt, malloc_trim); None elsewhere (musl has
    neither). Once per process: find_library runs ldconfig, tens of ms, and a large walk's end
    asks again."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_blocks() -> bool:
    """Blocks below HEAP_BLOCK_BYTES come from, and go back to, the heap (glibc's mallopt), once
    per process. False where the C library is not glibc (nothing is changed there)."""
    global _kept
    if _kept:
        return True
    libc = _libc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = (
        mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES) == 1
        and mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_BYTES) == 1
    )
    return _kept


def give_back_kept(call_bytes: int) -> bool:
    """`give_back_free_pages` before a variant's untimed call that moves `call_bytes`, where this
    process keeps freed blocks (keep_freed_blocks). A call whose tensors are HEAP_BLOCK_BYTES or
    more gets them mapped apart from the heap, so what the references and the guard freed there
    cannot serve them and stays resident under the call's own peak (80-210 MiB free at
    B = 2048, C = 32768: the point's peak 0.04-0.09 GB above what its calls alone need,
    docs/operations.md). A smaller call's tensors reuse those free blocks; a trim there (0.5 ms,
    and the pages faulted in again) only slowed a sweep of small points (system time +1.4-2.2 s
    over the cpu sweep's 1,056 rows). Elsewhere glibc trims as it frees."""
    return _kept and call_bytes >= HEAP_BLOCK_BYTES and give_back_free_pages()


def give_back_free_pages() -> bool:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim), where a walk of a
    large draw ends: its blocks, kept in the heap while it ran (keep_freed_blocks), would
    otherwise stay resident under the variant's call that follows, whose large tensors are mapped
    apart from the heap. At B = 2048, C = 32768 the points' peaks came back to what they were
    with the draw made in one thread (1.44-1.45 -> 1.36 GB fp32, 1.76-1.78 -> 1.66-1.67 GB soft);
    the next walk faults its blocks in again, once (0.1 s of system time a point). False where
    the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    trim = libc.malloc_trim
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True
