"""The heap a model leaves behind. glibc keeps the pages a run frees for the next one, and runs at many input
sizes leave them fragmented: eager PyTorch on a stream of 200 sizes held ~1.4 GB where one size needs ~0.3 GB
(benchmarks/size_memory.py). A process therefore sets a ceiling on what it keeps resident: after a run, if the
resident set is above `ceiling`, the freed pages are given back to the system (glibc's `malloc_trim`).

Giving pages back costs the next run their page faults (a run at a new size took ~1.8x as long), so a stream
of one size, which stays under the ceiling, pays nothing. The trim never shrinks the heap's top (its padding
argument is larger than any heap): freed pages inside the heap are released with MADV_DONTNEED and stay
mapped, so memory another part of the process may still point to (a signal stack left in freed memory) is
never unmapped. Off glibc (musl, macOS) the ceiling is not enforced.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

# resident memory a process may hold above what it held after its first model run, before freed heap is given
# back; `set_ceiling` changes it for the whole process
DEFAULT_HEADROOM_MB = 512
_KEEP_TOP = 1 << 46  # malloc_trim's pad: keep the heap's top, release only the freed pages inside it

_lock = threading.Lock()
_state = {"ceiling": None, "headroom": DEFAULT_HEADROOM_MB * 2**20, "trims": 0}
_libc = []


def _trim():
    if not _libc:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.append(lib.malloc_trim)
        except (OSError, AttributeError):
            _libc.append(None)
    return _libc[0]


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def set_ceiling(mb: float | None = None, headroom_mb: float | None = None) -> None:
    """The resident memory above which freed heap is given back after a run: `mb` an absolute ceiling, or
    `headroom_mb` above the resident set after the next run (the default: 512 MB above the first run)."""
    with _lock:
        if mb is not None:
            _state["ceiling"] = int(mb * 2**20)
        else:
            _state["ceiling"] = None
            _state["headroom"] = int((DEFAULT_HEADROOM_MB if headroom_mb is None else headroom_mb) * 2**20)


def after_run() -> bool:
    """Called after each model run: gives freed heap back when the process is above its ceiling. True if it
    did."""
    rss = resident_bytes()
    if not rss:
        return False
    with _lock:
        if _state["ceiling"] is None:
            _state["ceiling"] = rss + _state["headroom"]
            return False
        if rss <= _state["ceiling"]:
            return False
        trim = _trim()
        if trim is None:
            return False
        trim(ctypes.c_size_t(_KEEP_TOP))
        _state["trims"] += 1
        return True


def trims() -> int:
    """How many times freed heap has been given back in this process."""
    return _state["trims"]
