"""Optimizers, schedule and EMA against independent float64 computations."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trm.optim import EMA, AdamATan2, SignSGDEmbedding, lr_at

B1, B2 = 0.9, 0.95


def reference_adam_atan2(p, grads, lr, b1, b2, wd):
    """The official update (imoneoi adam-atan2 0.0.3, a = b = 1) written out in numpy float64."""
    p, m, v = p.astype(np.float64), np.zeros_like(p, np.float64), np.zeros_like(p, np.float64)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - b2**t))
    return p


def run_adam(init, grads, lr, wd, steps):
    params = [nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    opt = AdamATan2(params, lr=lr, betas=(B1, B2), weight_decay=wd)
    for step in range(steps):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g[step].copy())
        opt.step()
    return params, opt


# -- AdamATan2 -----------------------------------------------------------------------------------------------


def test_adam_atan2_matches_the_formula():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    # gradients of very different scales, some exactly zero (atan2(0, 0) = 0)
    grads = [[(rng.normal(size=s) * 10.0 ** rng.integers(-3, 3)).astype(np.float32) for _ in range(8)] for s in shapes]
    grads[1][0][:] = 0
    params, opt = run_adam(init, grads, lr=0.01, wd=0.5, steps=8)
    for p, x, g in zip(params, init, grads, strict=True):
        np.testing.assert_allclose(
            p.detach().numpy(), reference_adam_atan2(x, g, 0.01, B1, B2, 0.5), rtol=1e-5, atol=1e-6
        )
    assert all(opt.state[p]["step"] == 8 for p in params)
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in params)


def test_adam_atan2_update_is_bounded_after_decay():
    torch.manual_seed(0)
    lr, wd = 0.1, 0.3
    a = nn.Parameter(torch.randn(1000))
    opt = AdamATan2([a], lr=lr, weight_decay=wd)
    for t in range(1, 6):
        before = a.detach().clone()
        a.grad = torch.randn(1000) * 10.0 ** (3 * (t % 2))
        opt.step()
        delta = a.detach() - before * (1 - lr * wd)
        bound = lr * math.pi / 2 / (1 - B1**t)
        assert delta.abs().max().item() <= bound * (1 + 1e-6)
    # the bound is reached: a single huge gradient at step 1 moves every weight by lr * 10 * atan(0.1 / sqrt(0.05/0.05))
    b = nn.Parameter(torch.zeros(3))
    opt_b = AdamATan2([b], lr=lr, weight_decay=0.0)
    b.grad = torch.tensor([1e6, -1e-6, 3.0])
    opt_b.step()
    expected = -lr / (1 - B1) * math.atan2(1 - B1, math.sqrt(1 - B2) / math.sqrt(1 - B2))
    torch.testing.assert_close(b.detach(), torch.tensor([expected, -expected, expected]))


def test_adam_atan2_skips_missing_grads_and_keeps_per_parameter_steps():
    rng = np.random.default_rng(1)
    init = [rng.normal(size=(4,)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)]
    grads = [[rng.normal(size=x.shape).astype(np.float32) for _ in range(5)] for x in init]
    a, b = (nn.Parameter(torch.from_numpy(x.copy())) for x in init)
    opt = AdamATan2([a, b], lr=0.02, weight_decay=0.2)
    for step in range(5):
        a.grad = torch.from_numpy(grads[0][step].copy())
        b.grad = torch.from_numpy(grads[1][step].copy()) if step >= 2 else None
        opt.step()
        if step < 2:  # no grad: neither updated nor decayed
            assert torch.equal(b.detach(), torch.from_numpy(init[1]))
    assert opt.state[a]["step"] == 5 and opt.state[b]["step"] == 3
    np.testing.assert_allclose(
        a.detach().numpy(), reference_adam_atan2(init[0], grads[0], 0.02, B1, B2, 0.2), rtol=1e-5
    )
    # b's own step count starts at 1 when it first gets a gradient
    np.testing.assert_allclose(
        b.detach().numpy(), reference_adam_atan2(init[1], grads[1][2:], 0.02, B1, B2, 0.2), rtol=1e-5
    )


def test_adam_atan2_lr_zero_changes_nothing():
    p = nn.Parameter(torch.randn(4))
    before = p.detach().clone()
    opt = AdamATan2([p], lr=0.0, weight_decay=1.0)
    for _ in range(3):
        p.grad = torch.randn(4)
        opt.step()
    assert torch.equal(p.detach(), before)
    with pytest.raises(ValueError):
        AdamATan2([p], lr=-1.0)


def test_adam_atan2_bf16_params_use_fp32_math():
    torch.manual_seed(0)
    init = torch.randn(64).bfloat16()
    p16, p32 = nn.Parameter(init.clone()), nn.Parameter(init.float())
    o16 = AdamATan2([p16], lr=0.01, weight_decay=0.1)
    o32 = AdamATan2([p32], lr=0.01, weight_decay=0.1)
    g = torch.randn(64)
    p16.grad, p32.grad = g.bfloat16(), g.bfloat16().float()
    o16.step()
    o32.step()
    assert p16.dtype == torch.bfloat16 and o16.state[p16]["exp_avg"].dtype == torch.float32
    # one fp32 computation rounded once to bf16
    assert torch.equal(p16.detach(), p32.detach().bfloat16())


def test_adam_atan2_state_dict_round_trip_resumes_exactly():
    rng = np.random.default_rng(2)
    init = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(7,)).astype(np.float32)]
    grads = [[rng.normal(size=x.shape).astype(np.float32) for _ in range(6)] for x in init]
    full, _ = run_adam(init, grads, lr=0.01, wd=0.1, steps=6)
    half, opt = run_adam(init, grads, lr=0.01, wd=0.1, steps=3)
    params = [nn.Parameter(p.detach().clone()) for p in half]
    resumed = AdamATan2(params, lr=0.01, weight_decay=0.1)
    resumed.load_state_dict(opt.state_dict())
    for step in range(3, 6):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g[step].copy())
        resumed.step()
    for a, b in zip(full, params, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_adam_atan2_param_groups_and_multiple_dtypes():
    w = nn.Parameter(torch.ones(3))
    h = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = AdamATan2([{"params": [w], "lr": 0.1}, {"params": [h], "lr": 0.0, "weight_decay": 0.0}], weight_decay=0.5)
    w.grad, h.grad = torch.ones(3), torch.ones(3, dtype=torch.float64)
    opt.step()
    expected = 1 * (1 - 0.1 * 0.5) - 0.1 / (1 - B1) * math.atan2(1 - B1, 1.0)
    torch.testing.assert_close(w.detach(), torch.full((3,), expected))
    assert torch.equal(h.detach(), torch.ones(3, dtype=torch.float64))
    assert opt.state[h]["exp_avg"].dtype == torch.float64


def test_lucidrains_package_is_not_a_drop_in():
    """adam-atan2-pytorch (a = b = 1) keeps 1/(1 - b1^t) inside the atan2: different while t is small, the same
    once the bias correction is ~1 (here by starting both from the same late-step state)."""
    lib = pytest.importorskip("adam_atan2_pytorch")
    torch.manual_seed(0)
    init, g = torch.randn(16), torch.randn(16)
    ours, theirs = nn.Parameter(init.clone()), nn.Parameter(init.clone())
    o = AdamATan2([ours], lr=0.01, weight_decay=0.0)
    l = lib.AdamAtan2([theirs], lr=0.01, betas=(B1, B2), weight_decay=0.0, a=1.0, b=1.0)
    ours.grad, theirs.grad = g.clone(), g.clone()
    o.step()
    l.step()
    # step 1: ours moves by lr * 10 * atan(0.1) ~ 0.997 lr, theirs by lr * atan2(g, |g|) = lr * pi / 4
    torch.testing.assert_close((init - ours.detach()).abs(), torch.full((16,), 0.01 / (1 - B1) * math.atan(1 - B1)))
    torch.testing.assert_close((init - theirs.detach()).abs(), torch.full((16,), 0.01 * math.pi / 4))
    # late step with identical moments: bias corrections are 1 - 1e-23 and the two updates agree
    m, v = torch.randn(16) * 0.1, torch.rand(16) * 0.01
    o.state[ours].update(step=499, exp_avg=m.clone(), exp_avg_sq=v.clone())
    l.state[theirs].update(steps=499, exp_avg=m.clone(), exp_avg_sq=v.clone())
    with torch.no_grad():
        theirs.copy_(ours)
    o.step()
    l.step()
    torch.testing.assert_close(ours.detach(), theirs.detach())


# -- sparse sign-SGD -----------------------------------------------------------------------------------------


class FakeEmbedding(nn.Module):
    """Stand-in for trm.models.layers.PuzzleEmbedding: `weight` buffer and `last = (ids, local leaf)`."""

    def __init__(self, rows: int, dim: int, fill: float = 1.0):
        super().__init__()
        self.register_buffer("weight", torch.full((rows, dim), fill))
        self.last = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = self.weight[ids].detach().requires_grad_(True)
        self.last = (ids, local)
        return local


def test_sign_sgd_sums_duplicates_and_leaves_other_rows_alone():
    emb = FakeEmbedding(5, 3)
    with torch.no_grad():
        emb.weight.copy_(torch.arange(15.0).reshape(5, 3))
    original = emb.weight.clone()
    ids = torch.tensor([1, 3, 1, 4], dtype=torch.int32)
    local = emb(ids)
    local.grad = torch.tensor([[1.0, -3.0, 2.0], [0.0, 5.0, -1.0], [-2.0, 1.0, -2.0], [0.0, 0.0, 0.0]])
    opt = SignSGDEmbedding(emb, lr=0.1, weight_decay=0.5)
    opt.step()
    d = 1 - 0.1 * 0.5
    expected = original.clone()
    # row 1: grads summed to (-1, -2, 0) -> sign (-1, -1, 0); a per-sample sign would have given (0, -2, 0)
    expected[1] = original[1] * d - 0.1 * torch.tensor([-1.0, -1.0, 0.0])
    expected[3] = original[3] * d - 0.1 * torch.tensor([0.0, 1.0, -1.0])
    expected[4] = original[4] * d  # zero gradient: sign 0, decay only
    torch.testing.assert_close(emb.weight, expected)
    assert torch.equal(emb.weight[0], original[0]) and torch.equal(emb.weight[2], original[2])  # not decayed


def test_sign_sgd_via_autograd_and_zero_grad():
    emb = FakeEmbedding(4, 2, fill=0.0)
    ids = torch.tensor([2, 2, 0])
    out = emb(ids)
    (out * torch.tensor([[1.0, -1.0], [1.0, 3.0], [-2.0, 0.0]])).sum().backward()
    opt = SignSGDEmbedding(emb, lr=0.5, weight_decay=1.0)
    opt.step()
    torch.testing.assert_close(emb.weight, torch.tensor([[0.5, 0.0], [0.0, 0.0], [-0.5, -0.5], [0.0, 0.0]]))
    opt.zero_grad()
    assert emb.last is None
    opt.step()  # nothing to do
    emb(ids)  # forward without backward: local.grad is None -> no-op
    before = emb.weight.clone()
    opt.step()
    assert torch.equal(emb.weight, before)


def test_sign_sgd_lr_is_settable_and_state_round_trips():
    emb = FakeEmbedding(2, 1, fill=2.0)
    opt = SignSGDEmbedding(emb, lr=1.0, weight_decay=0.25)
    opt.lr = 0.0
    local = emb(torch.tensor([0]))
    local.grad = torch.ones(1, 1)
    opt.step()
    assert torch.equal(emb.weight, torch.full((2, 1), 2.0))  # lr 0: no update, no decay
    other = SignSGDEmbedding(emb)
    other.load_state_dict(opt.state_dict())
    assert (other.lr, other.weight_decay) == (0.0, 0.25)


def _dist_worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        emb = FakeEmbedding(4, 2, fill=0.0)
        ids = torch.tensor([[0, 1], [1, 2]][rank])
        local = emb(ids)
        local.grad = torch.tensor([[[1.0, 1.0], [1.0, -1.0]], [[-3.0, 0.0], [1.0, 1.0]]][rank])
        SignSGDEmbedding(emb, lr=1.0, weight_decay=0.0).step()
        results[rank] = emb.weight.clone()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_sign_sgd_all_gathers_across_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_dist_worker, args=(2, port, results), nprocs=2, join=True)
        out = dict(results)
    # row 1 is seen on both ranks: (1, -1) + (-3, 0) -> sign (-1, -1); every rank applies the same update
    expected = -torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    for rank in range(2):
        torch.testing.assert_close(out[rank], expected)


# -- schedule ------------------------------------------------------------------------------------------------


def test_lr_schedule():
    assert [lr_at(s, 1.0, 4, 100) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lr_at(10, 1.0, 10, 100) == 1.0  # end of warm-up
    assert lr_at(10, 1.0, 10, 100, min_ratio=0.1) == pytest.approx(1.0)
    assert all(lr_at(s, 3e-4, 10, 100) == 3e-4 for s in (10, 50, 100, 10_000))  # min_ratio 1: constant
    assert lr_at(55, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # cosine midpoint
    quarter = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(32.5, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(quarter)
    assert lr_at(100, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(0.2)
    assert lr_at(500, 2.0, 10, 100, min_ratio=0.1) == pytest.approx(0.2)  # progress clamped at 1
    assert lr_at(1, 1.0, 0, 1, min_ratio=0.0) == pytest.approx(0.0)  # no warm-up, total == warm-up: no div by 0
    assert lr_at(0, 1.0, 0, 0) == 1.0


# -- EMA -----------------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.register_buffer("table", torch.zeros(4, 2))


def test_ema_closed_form_and_buffers_untouched():
    torch.manual_seed(0)
    model, mu = Tiny(), 0.9
    start = {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}
    ema = EMA(model, rate=mu)
    assert set(ema.state_dict()) == {"lin.weight", "lin.bias"}  # no frozen param, no buffer
    history = []
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
            model.table.normal_()
        history.append({n: p.detach().double().numpy().copy() for n, p in model.named_parameters()})
        ema.update(model)
    k = len(history)
    for name in ("lin.weight", "lin.bias"):
        closed = mu**k * start[name] + (1 - mu) * sum(mu ** (k - i) * h[name] for i, h in enumerate(history, 1))
        np.testing.assert_allclose(ema.shadow[name].numpy(), closed, rtol=1e-5, atol=1e-6)


def test_ema_swapped_restores_raw_weights_even_on_error_and_round_trips():
    torch.manual_seed(0)
    model = Tiny()
    ema = EMA(model, rate=0.5)
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    ema.update(model)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError), ema.swapped(model):
        assert torch.equal(model.lin.weight, ema.shadow["lin.weight"])
        raise RuntimeError("evaluation failed")
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k])
    with ema.swapped(model):
        torch.testing.assert_close(model.lin.weight, raw["lin.weight"] - 0.5)
    assert torch.equal(model.lin.weight, raw["lin.weight"])
    ema.copy_to(model)
    assert torch.equal(model.lin.bias, ema.shadow["lin.bias"])

    other = EMA(Tiny(), rate=0.5)
    other.load_state_dict({k: v.clone() for k, v in ema.state_dict().items()})
    for k, v in ema.state_dict().items():
        assert torch.equal(other.shadow[k], v)
    with pytest.raises(KeyError):
        other.load_state_dict({"lin.weight": ema.shadow["lin.weight"]})


def test_ema_bf16_shadow_is_fp32_and_compiled_names_match():
    model = nn.Linear(4, 4, bias=False).bfloat16()
    ema = EMA(model, rate=0.999)
    assert ema.shadow["weight"].dtype == torch.float32
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # a 0.001 step that bf16 alone could not represent
    assert not torch.equal(ema.shadow["weight"].bfloat16().float(), ema.shadow["weight"])

    class Wrapped(nn.Module):  # names like a torch.compile wrapper: "_orig_mod.weight"
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    ema.update(Wrapped(model))
    ema.copy_to(Wrapped(model))
    EMA(Wrapped(model)).load_state_dict(ema.state_dict())
