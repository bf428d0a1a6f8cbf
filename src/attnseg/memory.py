"""Memory a process gives back: glibc keeps freed heap pages for reuse, and a model run at a new input size
leaves them fragmented (eager PyTorch grew ~25 MB per new size and never shrank; with the pages given back
after a size change it stays flat). `after_run(shape)` is called by whatever runs a model on a stream of sizes."""
from __future__ import annotations

import ctypes
import gc
import threading


def release_freed_memory(collect: bool = False) -> None:
    """Return freed heap pages to the system (glibc's malloc_trim; a no-op where there is none)."""
    if collect:
        gc.collect()
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


_LIBC = []


def _libc():
    if not _LIBC:
        _LIBC.append(ctypes.CDLL("libc.so.6"))
    return _LIBC[0]


class SizeWatch:
    """Calls release_freed_memory when a run's input shape differs from the previous run's: a stream of one
    size pays nothing, a stream of changing sizes keeps its memory flat (a trim takes about a millisecond)."""

    def __init__(self):
        self._last = None
        self._lock = threading.Lock()

    def after_run(self, shape) -> None:
        shape = tuple(shape)
        with self._lock:
            changed, self._last = self._last is not None and shape != self._last, shape
        if changed:
            release_freed_memory()
