"""Optimisation as in the official code: AdamATan2 for the dense weights, sparse sign-SGD for the puzzle
embeddings, linear warm-up then cosine, and an EMA of the dense weights.

AdamATan2 is written here in plain PyTorch (the official one is a CUDA-only extension; the PyPI
`adam-atan2-pytorch` package uses a = 1.27 and rejects lr = 0, so it is not a drop-in).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class AdamATan2(torch.optim.Optimizer):
    """p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t)).

    atan2 replaces m / (sqrt(v) + eps): no epsilon, and every update is bounded by lr * pi/2 / (1 - b1^t).
    Parameters without a gradient are skipped (no decay either).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
    ):
        if lr < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad AdamATan2 hyper-parameters lr={lr} betas={betas} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch API
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, wd = group["lr"], group["weight_decay"]
            b1, b2 = group["betas"]
            grads, ms, vs = [], [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                grads.append(p.grad.float())
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            # Parameters of one group share their step count (they start together), so t is one number.
            t = self.state[params[0]]["step"]
            if lr * wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(1 - b2**t))
            updates = [torch.atan2(m, d) for m, d in zip(ms, denom, strict=True)]
            torch._foreach_add_(params, updates, alpha=-lr / (1 - b1**t))
        return loss


class SignSGDEmbedding:
    """Sign-SGD with decoupled weight decay on the rows of the puzzle-embedding table seen in the batch:
    w <- w (1 - lr wd) - lr sign(sum of the row's gradients). Untouched rows are neither updated nor
    decayed. Under torch.distributed, ids and gradients are all-gathered first so ranks stay identical."""

    def __init__(self, embedding: nn.Module, lr: float = 1e-4, weight_decay: float = 0.1):
        self.embedding, self.lr, self.weight_decay = embedding, lr, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        last = self.embedding.last
        if last is None or last[1].grad is None:
            return
        ids, grad = last[0], last[1].grad
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids, grad = _all_gather_cat(ids), _all_gather_cat(grad)
        unique, inverse = torch.unique(ids, return_inverse=True)
        summed = torch.zeros(len(unique), grad.shape[-1], dtype=grad.dtype, device=grad.device)
        summed.index_add_(0, inverse, grad)
        table = self.embedding.weight
        rows = table[unique] * (1 - self.lr * self.weight_decay) - self.lr * summed.sign().to(table.dtype)
        table[unique] = rows

    def zero_grad(self) -> None:
        self.embedding.last = None

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr, self.weight_decay = state["lr"], state["weight_decay"]


def _all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Linear warm-up from 0, then cosine from base_lr down to min_ratio * base_lr (official; step counts
    from 1 at the first optimizer step). min_ratio = 1 gives a constant rate after warm-up."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of the trainable parameters: s <- mu s + (1 - mu) p after every step.

    Buffers (the puzzle-embedding table, the fixed initial states) are not averaged, as in the official code.
    """

    def __init__(self, model: nn.Module, rate: float = 0.999):
        self.rate = rate
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        named = dict(model.named_parameters())
        return [named[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadow = [self.shadow[n] for n in self.names]
        torch._foreach_lerp_(shadow, [p.detach() for p in self._params(model)], 1 - self.rate)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, n in zip(self._params(model), self.names, strict=True):
            p.copy_(self.shadow[n])

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """Evaluate or save with the EMA weights; the raw weights come back afterwards, even on errors."""
        raw = [p.detach().clone() for p in self._params(model)]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self._params(model), raw, strict=True):
                    p.copy_(r)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.names) - state.keys()
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for n in self.names:
            self.shadow[n].copy_(state[n])
