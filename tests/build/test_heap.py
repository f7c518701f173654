"""Freed heap memory goes back to the system when asked (glibc's malloc_trim), or on free inside blocks_returned_on_free."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from t2vtrt.build.heap import release_freed_memory


def _rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_freed_heap_blocks_leave_the_process() -> None:
    """400 MB of 100 kB arrays (heap, not mmap), three in four freed between live ones: resident until released."""
    blocks = [np.ones(100_000 // 8) for _ in range(4000)]
    alive = blocks[::4]  # the freed blocks sit between these, where free() alone cannot give pages back
    del blocks
    kept = _rss()
    assert release_freed_memory()
    assert kept - _rss() > 150 << 20
    assert len(alive) == 1000


# Run in a fresh interpreter: blocks the heap can serve from free space it already holds never reach the threshold
# check, and a test process's heap holds whatever the tests before it freed.
FREED_BETWEEN_LIVE_ONES = """
import numpy as np
from t2vtrt.build.heap import blocks_returned_on_free

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def freed(block, count):
    big, small = [], []
    for _ in range(count):
        big.append(np.ones(block // 8))
        small.append(np.ones(100_000 // 8))  # heap blocks that keep the big ones' space from merging into the top
    before = rss()
    del big
    return before - rss()

with blocks_returned_on_free(4 << 20) as active:
    inside = freed(8 << 20, 50)
print(active, inside, freed(8 << 20, 50))
"""


def test_blocks_at_the_threshold_leave_on_free_inside_and_stay_in_the_heap_after() -> None:
    """50 blocks of 8 MB freed between live ones: returned at once inside (4 MB threshold), kept in the heap after (32 MB)."""
    run = subprocess.run([sys.executable, "-c", FREED_BETWEEN_LIVE_ONES], capture_output=True, text=True, check=True)
    active, inside, after = run.stdout.split()
    assert active == "True"
    assert int(inside) > 300 << 20
    assert int(after) < 100 << 20
