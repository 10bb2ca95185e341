"""Optimisation as in the official code: AdamATan2 for the dense weights, sparse sign-SGD for the puzzle
embeddings, linear warm-up then cosine, and an EMA of the dense weights.

AdamATan2 is written here in plain PyTorch, so it runs on any device. The official one (imoneoi `adam-atan2`,
PyPI 0.0.3) is a CUDA-only extension; its 0.0.2 release briefly moved the 1/(1 - b1^t) factor inside the
atan2, 0.0.3 reverted that, and we follow 0.0.3. The PyPI `adam-atan2-pytorch` package (lucidrains) keeps the
factor inside the atan2, uses a = 1.27 and rejects lr = 0, so it is not a drop-in replacement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types (as the official kernel's opmath type), the tensor's own dtype otherwise."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


class AdamATan2(torch.optim.Optimizer):
    """p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t)).

    atan2 replaces m / (sqrt(v) + eps): no epsilon, and every update is bounded by lr * pi/2 / (1 - b1^t).
    Parameters without a gradient are skipped (no decay, no moment update, their step count stays put).
    State per parameter: `step` (int), `exp_avg`, `exp_avg_sq` (fp32 for fp16/bf16 parameters, whose
    update is also computed in fp32 and rounded once). lr = 0 leaves the parameters as they are (the moments
    still advance, as in the official kernel).
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
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch API
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = float(group["lr"]), float(group["weight_decay"])
            b1, b2 = group["betas"]
            # Bucket by (device, dtype, step) so each bucket is one set of fused foreach kernels with one t.
            buckets: dict[tuple[torch.device, torch.dtype, int], tuple[list, list, list, list]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                mdt = _math_dtype(p.dtype)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=mdt, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=mdt, memory_format=torch.preserve_format)
                for key in ("exp_avg", "exp_avg_sq"):  # Optimizer.load_state_dict casts state to p.dtype
                    if state[key].dtype != mdt:
                        state[key] = state[key].to(mdt)
                t = int(state["step"]) + 1  # int() also accepts a tensor step from a foreign checkpoint
                state["step"] = t
                ps, gs, ms, vs = buckets.setdefault((p.device, p.dtype, t), ([], [], [], []))
                ps.append(p)
                gs.append(p.grad if p.grad.dtype == mdt else p.grad.to(mdt))
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            for (_, dtype, t), (ps, gs, ms, vs) in buckets.items():
                _adam_atan2_update(ps, gs, ms, vs, t, lr, wd, b1, b2, dtype)
        return loss


def _adam_atan2_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    t: int,
    lr: float,
    wd: float,
    b1: float,
    b2: float,
    dtype: torch.dtype,
) -> None:
    work = [p.to(torch.float32) for p in params] if dtype in _LOW_PRECISION else params
    if lr * wd != 0:
        torch._foreach_mul_(work, 1 - lr * wd)
    # Same arithmetic as the official kernel: both moments by lerp.
    torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - b2)
    if lr != 0:
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, math.sqrt(1 - b2**t))
        for m, d in zip(exp_avgs, denom, strict=True):
            torch.atan2(m, d, out=d)  # no foreach atan2; in place into the scratch list
        torch._foreach_add_(work, denom, alpha=-lr / (1 - b1**t))
    if work is not params:
        for p, w in zip(params, work, strict=True):
            p.copy_(w)


class SignSGDEmbedding:
    """Sign-SGD with decoupled weight decay on the rows of the puzzle-embedding table seen in the batch:
    w <- w (1 - lr wd) - lr sign(sum of the row's gradients). Untouched rows are neither updated nor
    decayed. Under torch.distributed (world size > 1), ids and gradients are all-gathered first so every rank
    applies the same update to its copy of the table.

    Works with any module that has a `weight` table [num_ids, dim] and sets `last = (ids [B], local [B, dim])`
    in its training forward, `local` being a leaf tensor whose `.grad` the backward pass fills.
    """

    def __init__(self, embedding: nn.Module, lr: float = 1e-4, weight_decay: float = 0.1):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"bad SignSGDEmbedding hyper-parameters lr={lr} weight_decay={weight_decay}")
        self.embedding, self.lr, self.weight_decay = embedding, lr, weight_decay
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def collect(self) -> None:
        """Keep the last forward's rows and gradients for the next `step` (gradient accumulation: call after
        each micro-batch's backward)."""
        last = getattr(self.embedding, "last", None)
        if last is not None and last[1].grad is not None:
            ids = last[0].reshape(-1)
            self._pending.append((ids, last[1].grad.reshape(ids.shape[0], -1)))
            last[1].grad = None  # the leaf may be reused by the next forward: its next gradient starts afresh
        self.embedding.last = None

    @torch.no_grad()
    def step(self) -> None:
        self.collect()
        if not self._pending:
            return
        ids = torch.cat([i for i, _ in self._pending])
        grad = torch.cat([g for _, g in self._pending])
        self._pending = []
        table = self.embedding.weight
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids, grad = _all_gather_cat(ids), _all_gather_cat(grad)
        unique, inverse = torch.unique(ids.long(), return_inverse=True)
        summed = torch.zeros(len(unique), grad.shape[-1], dtype=grad.dtype, device=grad.device)
        summed.index_add_(0, inverse, grad)
        rows = table.index_select(0, unique)
        if self.lr * self.weight_decay != 0:
            rows.mul_(1 - self.lr * self.weight_decay)
        rows.sub_(summed.sign().to(rows.dtype), alpha=self.lr)
        table.index_copy_(0, unique, rows)

    def zero_grad(self) -> None:
        self.embedding.last = None
        self._pending = []

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr, self.weight_decay = float(state["lr"]), float(state["weight_decay"])


def _all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def cosine_scale(progress: float, min_ratio: float = 1.0) -> float:
    """Cosine from 1 at progress 0 down to min_ratio at progress 1 (progress clamped to [0, 1])."""
    progress = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Linear warm-up from 0, then cosine from base_lr down to min_ratio * base_lr (official; step counts
    from 1 at the first optimizer step, progress is clamped to [0, 1]). min_ratio = 1 gives a constant rate
    after warm-up, the official default."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    return base_lr * cosine_scale((step - warmup_steps) / max(1, total_steps - warmup_steps), min_ratio)


def _canonical(name: str) -> str:
    """Parameter name without the `_orig_mod.` a torch.compile wrapper adds, so EMA works on either."""
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


class EMA:
    """Exponential moving average of the trainable parameters: s <- mu s + (1 - mu) p after every step,
    initialised from the current weights (no bias correction), as the official EMAHelper.

    Only parameters with requires_grad are averaged; buffers (the puzzle-embedding table, fixed initial
    states) are not. The shadow is kept in fp32 for fp16/bf16 parameters (a 0.001 step would vanish in bf16).
    State is keyed by parameter name.
    """

    def __init__(self, model: nn.Module, rate: float = 0.999):
        if not 0 <= rate <= 1:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.shadow: dict[str, torch.Tensor] = {
            _canonical(n): p.detach().to(_math_dtype(p.dtype), copy=True)
            for n, p in model.named_parameters()
            if p.requires_grad
        }
        self.names = list(self.shadow)

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        named = {_canonical(n): p for n, p in model.named_parameters()}
        missing = [n for n in self.names if n not in named]
        if missing:
            raise KeyError(f"model lacks EMA parameters {missing[:3]}")
        return [named[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if not self.names:
            return
        shadow = [self.shadow[n] for n in self.names]
        params = [
            p.detach() if p.dtype == s.dtype else p.detach().to(s.dtype)
            for p, s in zip(self._params(model), shadow, strict=True)
        ]
        torch._foreach_lerp_(shadow, params, 1 - self.rate)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, n in zip(self._params(model), self.names, strict=True):
            p.copy_(self.shadow[n])

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """Evaluate or save with the EMA weights; the raw weights come back afterwards, even on errors."""
        params = self._params(model)
        raw = [p.detach().clone() for p in params]
        try:
            self.copy_to(model)
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(params, raw, strict=True):
                    p.copy_(r)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = {_canonical(k): v for k, v in state.items()}
        missing = set(self.names) - state.keys()
        unexpected = state.keys() - set(self.names)
        if missing or unexpected:
            raise KeyError(f"EMA state mismatch: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        for n in self.names:
            self.shadow[n].copy_(state[n])
