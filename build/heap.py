"""Give freed heap memory back to the system between large ONNX Runtime sessions in one process.

glibc keeps freed allocations below its (self-raising) mmap threshold in the process heap; after a
real-size session is destroyed, gigabytes stay resident and the next session's peak lands on top of
them (the FP16 step at real size: 2.8 GiB kept after the FP32 reference run, docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


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
