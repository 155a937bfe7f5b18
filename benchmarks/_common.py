"""Shared helpers of the benchmark scripts: timing, peak memory, tables."""

import ctypes
import os
import platform
import time

import numpy as np


def best_and_median(times):
    return float(np.min(times)), float(np.median(times))


def timed(fn):
    """Run ``fn()`` once; return (seconds, result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _status_kib(field, pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _descendants(pid):
    """Process ids of all descendants of ``pid`` (joblib/loky workers)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        found += children
        frontier = children
    return found


def cpu_seconds():
    """CPU time (user + system) of this process and its live descendants.

    Unlike wall time it does not grow when other programs share the cores, so
    ``cpu(n_jobs=1) / cpu(n_jobs=k)`` close to 1 shows that the workers add no
    overhead: with k idle cores the wall time would drop k-fold.
    """
    total = 0
    for pid in [os.getpid()] + _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(fn, children=False):
    """Peak resident memory added while ``fn()`` runs, in MiB, or None.

    Linux only: resets the high-water mark of this process (and, with
    ``children``, of its worker processes) through ``clear_refs``, so the
    peak is that of this call whatever ran before; freed heap memory is first
    returned to the system so that it is not silently reused.  Covers every
    allocator (NumPy, PyTorch, BLAS workspaces).  With ``children`` the sum of
    the per-process peaks is returned (an upper bound of the joint peak);
    workers must already be running (warm them up first).
    """
    pids = ["self"] + (_descendants(os.getpid()) if children else [])
    try:
        _malloc_trim()
        before = 0
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            before += _status_kib("VmRSS", pid)
    except (OSError, KeyError):
        return None
    fn()
    try:
        return (sum(_status_kib("VmHWM", pid) for pid in pids) - before) / 1024
    except (OSError, KeyError):
        return None


def machine():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
