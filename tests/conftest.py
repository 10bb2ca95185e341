"""Tests compare numbers against float32 references (the official code's outputs, hand computations), so a
model with dtype "auto" computes in float32 on every test machine, whatever its CPU supports; tests of the
dtype choice itself clear this. `trm.cli.main` flushes denormals process-wide (as the CLI should); each test
starts without that, so hypothesis's float strategies, which check for subnormals, work after CLI tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _float32_on_cpu(monkeypatch):
    monkeypatch.setenv("TRM_CPU_DTYPE", "float32")
    yield
    torch.set_flush_denormal(False)
