"""Process-wide settings the `trm` command makes for speed on the CPU; importing the library changes none."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    glibc serves every block above its mmap threshold (32 MB at most) with fresh pages and unmaps them on free,
    so each training step's activations fault in again and are zeroed by the kernel: half the CPU time of a
    float32 sudoku-mlp step went to the kernel on our 2-core machine. With mmap and trimming off, freed blocks
    stay in the heap and the next step reuses them (BENCHMARKS.md section 9). The price: the process keeps its
    peak memory until it exits. `TRM_MALLOC=system` leaves glibc's defaults; other C libraries are left alone.
    Returns whether the setting was made.
    """
    if os.environ.get("TRM_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    # -1 turns trimming off entirely (mallopt(3)); 0 mmapped blocks sends every allocation to the heap.
    return bool(mallopt(_M_TRIM_THRESHOLD, -1)) and bool(mallopt(_M_MMAP_MAX, 0))


def tune_process() -> None:
    """What `trm` sets before a command runs."""
    # Denormal floats slow every CPU op they touch (trm's float32 training step ran 10% slower than with them
    # flushed, BENCHMARKS.md section 2); flushing them to zero changes results only below 1e-38.
    torch.set_flush_denormal(True)
    keep_freed_memory()
