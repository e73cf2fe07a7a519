"""One OpenMP thread for scikit-learn's compiled loops.

On a shared 2-core machine, OpenMP threads that spin while other processes run make tree
fitting several times slower than one thread, and a stream worker's small predictions pay
for waking them.
"""

from __future__ import annotations

import functools
from typing import Any

from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]


@functools.cache
def _threadpools() -> ThreadpoolController:
    """Found once: scanning the loaded libraries costs ~1 ms, too much per scoring batch."""
    return ThreadpoolController()


def single_thread() -> Any:
    """A context in which OpenMP runs one thread."""
    return _threadpools().limit(limits=1, user_api="openmp")
