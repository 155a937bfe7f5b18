"""Shared helpers of the benchmark scripts: timing, peak memory, tables."""

import ctypes
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


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(fn):
    """Peak resident memory added while ``fn()`` runs, in MiB, or None.

    Linux only: resets the process's high-water mark (``clear_refs``), so the
    peak is that of this call, whatever ran before; freed heap memory is first
    returned to the system so that it is not silently reused.  Covers every
    allocator (NumPy, PyTorch, BLAS workspaces) of this process, not those of
    worker processes.
    """
    try:
        _malloc_trim()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
    except OSError:
        return None
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def machine():
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
