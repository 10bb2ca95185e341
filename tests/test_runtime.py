"""The process settings `trm` makes before a command: freed memory kept for reuse (glibc), denormals flushed."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

# In a fresh interpreter: make the setting (or not, by TRM_MALLOC), allocate and free 256 MB, and print what the
# setting returned and how much resident memory the free gave back to the kernel, in MB.
PROBE = """
import torch
from trm.runtime import keep_freed_memory
made = keep_freed_memory()
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
x = torch.ones(2**26)  # 256 MB of float32, far above glibc's mmap threshold
before = rss_mb()
del x
print(made, before - rss_mb())
"""


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


def _probe(**env: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not _glibc(), reason="the setting is glibc's (Linux)")
def test_freed_memory_stays_in_the_process_for_the_next_step_unless_told_otherwise():
    made, returned = _probe()
    assert made and returned < 16  # kept: the next training step reuses those pages without faulting them in
    made, returned = _probe(TRM_MALLOC="system")
    assert not made and returned > 200  # glibc's default: the block was unmapped at once


def test_the_cli_flushes_denormals():
    import torch

    from trm.cli import main

    tiny = torch.tensor([1e-40])  # a float32 denormal
    assert main(["info", "--presets"]) == 0
    assert (tiny * 1.0).item() == 0.0  # flushed to zero after a command ran (conftest resets it)
