"""Optimizers, schedule and EMA against independent float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trm.optim import EMA, AdamATan2, SignSGDEmbedding, lr_at


def reference_adam_atan2(p, grads, lr, b1, b2, wd):
    """The official update written out in numpy float64."""
    p, m, v = p.astype(np.float64), np.zeros_like(p, np.float64), np.zeros_like(p, np.float64)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - b2**t))
    return p


def test_adam_atan2_matches_the_formula():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32) for _ in range(6)] for s in shapes]
    params = [nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    opt = AdamATan2(params, lr=0.01, betas=(0.9, 0.95), weight_decay=0.5)
    for step in range(6):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g[step])
        opt.step()
    for p, x, g in zip(params, init, grads, strict=True):
        np.testing.assert_allclose(
            p.detach().numpy(), reference_adam_atan2(x, g, 0.01, 0.9, 0.95, 0.5), rtol=1e-5, atol=1e-6
        )


def test_adam_atan2_update_is_bounded_and_skips_missing_grads():
    a, b = nn.Parameter(torch.zeros(1000)), nn.Parameter(torch.ones(3))
    opt = AdamATan2([a, b], lr=0.1, weight_decay=0.0)
    a.grad = torch.randn(1000) * 1e6
    opt.step()
    assert a.abs().max().item() <= 0.1 * math.pi / 2 / (1 - 0.9) + 1e-6
    assert torch.equal(b.detach(), torch.ones(3))  # no grad: neither updated nor decayed


def test_adam_atan2_lr_zero_changes_nothing():
    p = nn.Parameter(torch.randn(4))
    before = p.detach().clone()
    opt = AdamATan2([p], lr=0.0, weight_decay=1.0)
    p.grad = torch.randn(4)
    opt.step()
    assert torch.equal(p.detach(), before)


class FakeEmbedding(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(rows, dim))
        self.last = None


def test_sign_sgd_sums_duplicates_and_leaves_other_rows_alone():
    emb = FakeEmbedding(4, 2)
    ids = torch.tensor([1, 1, 3])
    local = emb.weight[ids].clone().requires_grad_()
    local.grad = torch.tensor([[1.0, -3.0], [-2.0, 1.0], [0.0, 5.0]])
    emb.last = (ids, local)
    opt = SignSGDEmbedding(emb, lr=0.1, weight_decay=0.5)
    opt.step()
    decayed = 1 - 0.1 * 0.5
    # row 1: grads summed to (-1, -2) -> sign (-1, -1); row 3: (0, 5) -> sign (0, 1)
    torch.testing.assert_close(emb.weight[1], torch.tensor([decayed + 0.1, decayed + 0.1]))
    torch.testing.assert_close(emb.weight[3], torch.tensor([decayed, decayed - 0.1]))
    assert torch.equal(emb.weight[0], torch.ones(2)) and torch.equal(emb.weight[2], torch.ones(2))
    opt.zero_grad()
    assert emb.last is None
    opt.step()  # nothing to do


def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 100) == 0.0
    assert lr_at(5, 1.0, 10, 100) == 0.5
    assert lr_at(10, 1.0, 10, 100) == 1.0
    assert lr_at(90, 1.0, 10, 100) == 1.0  # min_ratio 1: constant after warm-up (official default)
    assert lr_at(55, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert lr_at(100, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(0.2)
    assert lr_at(500, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(0.2)


def test_ema_closed_form_buffers_untouched_and_swap_restores():
    model = nn.Linear(2, 1, bias=False)
    model.register_buffer("table", torch.zeros(2))
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, rate=0.9)
    values = [1.0, 2.0, 4.0]
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
            model.table.fill_(v)
        ema.update(model)
    expected = 0.0
    for v in values:
        expected = 0.9 * expected + 0.1 * v
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(expected)
    assert "table" not in ema.state_dict()
    with pytest.raises(RuntimeError), ema.swapped(model):
        assert model.weight[0, 0].item() == pytest.approx(expected)
        raise RuntimeError("evaluation failed")
    assert model.weight[0, 0].item() == 4.0  # raw weights are back
    other = EMA(model, rate=0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
