"""Keep the resident memory of a process that sleeps 59 s of every minute close to what it holds.

Each report allocates and frees a few MB (collector threads, smartctl JSON, validation, the Kafka
batch). glibc keeps freed memory mapped, one pool per thread that ever allocated, so without help
the agent's RSS settles at the high-water mark of its busiest minute. Three knobs, measured with
benchmarks/agent_footprint.py (about 2 MB of a ~45 MB agent): one malloc arena instead of one per
thread, start-up objects frozen out of the cyclic GC (they live as long as the process; a full
collection of them costs ~0.1 s of CPU), and the heap trimmed after each report.

Only glibc has these knobs; elsewhere (Windows, macOS, musl) the calls do nothing.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

M_ARENA_MAX = -8  # glibc <malloc.h>


def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def single_malloc_arena() -> None:
    """Call before any thread starts: threads then share the main arena and its free memory."""
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, 1)


def freeze_startup_objects() -> None:
    """Collect start-up garbage once, then keep the survivors (modules, schemas) out of later collections."""
    gc.collect()
    gc.freeze()


def release_free_memory() -> None:
    """Free this round's cyclic garbage (young generations: cheap) and hand free heap pages back to the OS."""
    gc.collect(1)
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
