"""How much memory this process holds and the system can still give (Linux ``/proc``; POSIX fallback).

>>> peak_rss_mb() >= rss_mb() > 0
True
"""

from __future__ import annotations

import os

__all__ = ["available_memory", "peak_rss_mb", "rss_mb"]


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB (Linux: VmHWM, which, unlike ``ru_maxrss``, a
    spawned process does not inherit from its parent; NaN where neither is available)."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux; elsewhere the peak)."""
    now = _proc_status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux, macOS), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
