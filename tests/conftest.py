"""Tests compare numbers against float32 references (the official code's outputs, hand computations), so a
model with dtype "auto" computes in float32 on every test machine, whatever its CPU supports; tests of the
dtype choice itself clear this. `trm.cli.main` flushes denormals process-wide (as the CLI should); each test
starts without that, so hypothesis's float strategies, which check for subnormals, work after CLI tests."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _float32_on_cpu(monkeypatch):
    monkeypatch.setenv("TRM_CPU_DTYPE", "float32")
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def sudoku4_data(tmp_path_factory) -> Callable[..., Path]:
    """`build(*args)`: a small 4x4 Sudoku data set made by `trm data sudoku --size 4 *args`, built once per
    argument list for the whole session (tests read it; one that damages data works on a copy)."""
    from trm.cli import main

    built: dict[tuple[str, ...], Path] = {}

    def build(*args: str) -> Path:
        if args not in built:
            out = tmp_path_factory.mktemp("data") / "sudoku4"
            assert main(["data", "sudoku", "--out", str(out), "--size", "4", *args]) == 0
            built[args] = out
        return built[args]

    return build
