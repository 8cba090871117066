"""Large blocks from fresh pages: glibc's malloc told not to keep them in its heaps.

glibc serves a block of more than M_MMAP_THRESHOLD bytes with pages of its own and gives them
back on free, but it raises that threshold to the size of any such block freed (up to 32 MB),
so a model process that frees a few megabyte-sized tensors soon serves all of them from heaps
that keep their pages after the tensors are gone. On the demo that kept 400 to 500 MB resident
(`benchmarks/README.md`, bench_kv_cache). A fixed threshold stops the raising. It is a
process-wide setting, made once when the first local model's engine starts; with another libc
it is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
THRESHOLD = 1 << 20  # 1 MB: the engine's buffers and a batch's logits, not a layer's small tensors


@functools.cache
def large_blocks_from_fresh_pages() -> bool:
    """Fix glibc's mmap threshold at THRESHOLD; False where the C library has no mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
