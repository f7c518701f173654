"""Give freed heap memory back to the system between large ONNX Runtime sessions in one process, and during runs
that allocate and free many weight-sized buffers.

glibc keeps freed allocations below its (self-raising) mmap threshold in the process heap; after a
real-size session is destroyed, gigabytes stay resident and the next session's peak lands on top of
them (the FP16 step at real size: 2.8 GiB kept after the FP32 reference run, docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
# Where glibc's self-raising threshold stops on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): the setting a long-running
# process that has freed large blocks ends up with, so the one set on leaving blocks_returned_on_free.
GLIBC_MMAP_THRESHOLD_MAX = 32 << 20


@lru_cache(maxsize=1)
def _libc() -> Any:
    """The C library, or None where it is not glibc (malloc_trim is a glibc call)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the system (glibc malloc_trim); False where that is not available."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


@contextmanager
def blocks_returned_on_free(threshold: int = 4 << 20) -> Iterator[bool]:
    """Within: each allocation of `threshold` bytes or more that the heap's free space cannot hold is mapped on its
    own and leaves the process when freed.

    Why: a run that dequantizes most weights (the sweep's) frees weight-sized buffers between live ones; in the heap
    they stay resident and the next ones land beside them, gigabytes above what is live at real size (the sweep's
    figures: docs/benchmarks.md), at the cost of fresh pages for each such buffer (slower runs). Yields whether it
    took effect (glibc only).
    """
    libc = _libc()
    if libc is None or not libc.mallopt(M_MMAP_THRESHOLD, threshold):  # glibc (what _libc accepts) has mallopt
        yield False
        return
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX)
