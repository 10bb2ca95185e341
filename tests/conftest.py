"""Tests compare numbers against float32 references (the official code's outputs, hand computations), so a
model with dtype "auto" computes in float32 on every test machine, whatever its CPU supports; tests of the
dtype choice itself clear this."""

import pytest


@pytest.fixture(autouse=True)
def _float32_on_cpu(monkeypatch):
    monkeypatch.setenv("TRM_CPU_DTYPE", "float32")
