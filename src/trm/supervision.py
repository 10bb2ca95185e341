"""Deep supervision and adaptive computation time (ACT), the losses, and the metrics.

Training (`DeepSupervision`) follows the official rolling carry: a batch has B slots; each call is one
supervision step (and one optimizer step). Slots whose puzzle halted take the next batch's puzzle and restart
from (y_init, z_init); running slots keep their puzzle and their detached (y, z). A slot halts after N_sup
steps, or earlier when the Q head says the answer is right (q_halt > 0, or q_halt > q_continue with the
HRM-style continue head); with probability `halt_exploration_prob` a slot first draws a minimum number of
steps in [2, N_sup].

Inference (`trm.inference`) runs puzzles through a continuous-batching engine with halting policies; `think`
here is the plain fixed-step path on one batch, its reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trm.data import IGNORE_LABEL

BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers")


# -- losses -------------------------------------------------------------------------------------------------
def _stablemax_s(x: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    return torch.where(x < 0, 1 / (1 - x + eps), x + 1)


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token CE under stablemax, p_i = s(x_i) / sum_j s(x_j), in float64 (official; float32 on MPS, which
    has no float64); 0 where ignored."""
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    s = _stablemax_s(logits.to(dtype))
    logprobs = torch.log(s / s.sum(dim=-1, keepdim=True))
    valid = labels != IGNORE_LABEL
    picked = torch.gather(logprobs, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, 0.0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token softmax CE in float32; 0 where ignored."""
    flat = F.cross_entropy(
        logits.float().flatten(0, -2), labels.long().flatten(), ignore_index=IGNORE_LABEL, reduction="none"
    )
    return flat.view(labels.shape)


LOSSES = {"stablemax": stablemax_cross_entropy, "softmax": softmax_cross_entropy}


@dataclass
class StepLosses:
    """Sums over the batch (the trainer divides by the global batch size, as official)."""

    total: torch.Tensor
    lm: torch.Tensor
    q_halt: torch.Tensor
    q_continue: torch.Tensor
    correct: torch.Tensor  # [B, L] bool, token right and counted
    seq_correct: torch.Tensor  # [B] bool, whole answer right
    counts: torch.Tensor  # [B] labelled tokens


def supervision_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    q_halt: torch.Tensor,
    loss_type: str = "stablemax",
    q_continue: torch.Tensor | None = None,
    q_continue_target: torch.Tensor | None = None,
    row_weight: torch.Tensor | None = None,
) -> StepLosses:
    """Token-mean CE per sequence, summed over the batch, + 0.5 * BCE(q_halt, "sequence exactly right").
    `row_weight` [B] scales each row's part of `total` (the supervision-step weighting); the reported lm
    and q losses stay unweighted."""
    mask = labels != IGNORE_LABEL
    counts = mask.sum(-1)
    divisor = counts.clamp_min(1).unsqueeze(-1)
    lm_rows = (LOSSES[loss_type](logits, labels) / divisor).sum(-1)
    with torch.no_grad():
        correct = mask & (logits.argmax(-1) == labels)
        seq_correct = correct.sum(-1) == counts
    q_rows = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="none")
    if q_continue is not None and q_continue_target is not None:
        q_cont_rows = F.binary_cross_entropy_with_logits(q_continue, q_continue_target, reduction="none")
    else:
        q_cont_rows = torch.zeros_like(q_rows)
    rows = lm_rows + 0.5 * (q_rows + q_cont_rows)
    total = (rows * row_weight).sum() if row_weight is not None else rows.sum()
    return StepLosses(total, lm_rows.sum(), q_rows.sum(), q_cont_rows.sum(), correct, seq_correct, counts)


def step_weights(decay: float, N_sup: int, device: torch.device | None = None) -> torch.Tensor:
    """Weights [N_sup] of the losses at supervision steps 1..N_sup: decay^(s-1), scaled to mean 1 so the
    learning rate keeps its meaning (CGAR's hierarchical supervision weighting; decay 1 = uniform, official).
    Computed on `device`: a copy from the host to a GPU would wait for the GPU at every step."""
    w = decay ** torch.arange(N_sup, dtype=torch.float32, device=device)
    return w * (N_sup / w.sum())


def exploration_min_steps(seed: int, step: int, rows: int, N_sup: int, prob: float) -> torch.Tensor:
    """ACT exploration for one optimizer step: per row of the global batch, the minimum number of supervision
    steps it must take (0: none). Drawn from a generator keyed by (run seed, step), so every rank and every
    micro-batch slices the same draws and halts exactly as one process with the whole batch would."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
    explore = torch.rand(rows, generator=g) < prob
    return torch.where(explore, torch.randint(2, max(N_sup, 2) + 1, (rows,), generator=g), 0).to(torch.int32)


def halting_decision(q_halt: torch.Tensor, q_continue: torch.Tensor, use_continue: bool) -> torch.Tensor:
    """TRM halts when sigmoid(q_halt) > 0.5; HRM when q_halt > q_continue."""
    return q_halt > q_continue if use_continue else q_halt > 0


# -- training: rolling carry -----------------------------------------------------------------------------------
@dataclass
class Carry:
    y: torch.Tensor
    z: torch.Tensor
    steps: torch.Tensor  # [B] int32, supervision steps taken on the current puzzle
    halted: torch.Tensor  # [B] bool
    data: dict[str, torch.Tensor]


class DeepSupervision(nn.Module):
    """Wraps a recursive model with the official ACT training step (one call = one optimizer step)."""

    def __init__(self, model: nn.Module, loss_type: str = "stablemax", supervision_decay: float = 1.0):
        super().__init__()
        self.model, self.loss_type, self.supervision_decay = model, loss_type, supervision_decay
        self.N_sup = model.config.N_sup  # the depth curriculum may lower it for a while

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        """All slots start halted, so the first call loads every row of the first batch."""
        b = batch["inputs"].shape[0]
        y, z = self.model.initial_state(b)
        device = batch["inputs"].device
        return Carry(
            y,
            z,
            torch.zeros(b, dtype=torch.int32, device=device),
            torch.ones(b, dtype=torch.bool, device=device),
            {k: torch.empty_like(batch[k]) for k in BATCH_KEYS},
        )

    def forward(
        self, carry: Carry, batch: dict[str, torch.Tensor], min_steps: torch.Tensor | None = None
    ) -> tuple[Carry, StepLosses, dict[str, torch.Tensor]]:
        """One supervision step of every slot. `min_steps` [B] are the exploration draws (see
        `exploration_min_steps`); without them they are drawn here from the global RNG."""
        cfg, N_sup = self.model.config, self.N_sup
        halted = carry.halted
        y, z = self.model.reset_state(halted, carry.y, carry.z)
        steps = torch.where(halted, 0, carry.steps)
        data = {k: torch.where(halted.view(-1, *[1] * (v.dim() - 1)), batch[k], v) for k, v in carry.data.items()}

        out = self.model(y, z, data["inputs"], data["puzzle_identifiers"])
        steps = steps + 1
        is_last = steps >= N_sup
        new_halted = is_last
        q_target = None
        if self.training and N_sup > 1:
            with torch.no_grad():
                new_halted = is_last | halting_decision(out.q_halt, out.q_continue, cfg.q_continue)
                if min_steps is None:
                    explore = torch.rand_like(out.q_halt) < cfg.halt_exploration_prob
                    min_steps = explore * torch.randint_like(steps, low=2, high=N_sup + 1)
                new_halted = new_halted & (steps >= min_steps)
                if cfg.q_continue:
                    # Q-learning target for "continue": the value of the next step, bootstrapped (HRM).
                    nxt = self.model(out.y, out.z, data["inputs"], data["puzzle_identifiers"])
                    q_target = torch.sigmoid(
                        torch.where(is_last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue))
                    )

        losses = supervision_loss(
            out.logits,
            data["labels"],
            out.q_halt,
            self.loss_type,
            out.q_continue if cfg.q_continue else None,
            q_target,
            self._row_weight(steps, N_sup),
        )
        metrics = step_metrics(losses, out.q_halt, steps, new_halted)
        new_carry = Carry(out.y, out.z, steps, new_halted, data)
        return new_carry, losses, metrics

    def _row_weight(self, steps: torch.Tensor, N_sup: int) -> torch.Tensor | None:
        if self.supervision_decay == 1.0:
            return None
        w = step_weights(self.supervision_decay, N_sup, steps.device)
        return w[(steps - 1).clamp(0, N_sup - 1).long()]


def step_metrics(
    losses: StepLosses, q_halt: torch.Tensor, steps: torch.Tensor, halted: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Official metric sums, counted over the rows that halt at this step (and have labels)."""
    with torch.no_grad():
        valid = halted & (losses.counts > 0)
        token_acc = losses.correct.sum(-1) / losses.counts.clamp_min(1)
        return {
            "count": valid.sum(),
            "accuracy": torch.where(valid, token_acc, 0).sum(),
            "exact_accuracy": (valid & losses.seq_correct).sum(),
            "q_halt_accuracy": (valid & ((q_halt >= 0) == losses.seq_correct)).sum(),
            "steps": torch.where(valid, steps, 0).sum(),
            "lm_loss": losses.lm.detach(),
            "q_halt_loss": losses.q_halt.detach(),
            "q_continue_loss": losses.q_continue.detach(),
        }


# -- evaluation and inference --------------------------------------------------------------------------------
@dataclass
class ThinkResult:
    logits: torch.Tensor  # [B, L, vocab] at each row's last step
    preds: torch.Tensor  # [B, L]
    q_halt: torch.Tensor  # [B]
    q_continue: torch.Tensor  # [B]
    steps: torch.Tensor  # [B] supervision steps used


@torch.no_grad()
def think(
    model: nn.Module, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, steps: int | None = None
) -> ThinkResult:
    """The fixed-step path on one batch: `steps` supervision steps (default N_sup) from (y_init, z_init), the
    outputs of the last. The inference engine (`trm.inference`) gives the same answers with halting off and
    adds halting policies, refilling and sampling; this stays as its reference and for benchmarks."""
    steps = steps or model.config.N_sup
    y, z = model.initial_state(inputs.shape[0])
    for _ in range(steps):
        out = model(y, z, inputs, puzzle_identifiers)
        y, z = out.y, out.z
    used = torch.full((inputs.shape[0],), steps, dtype=torch.int32, device=inputs.device)
    return ThinkResult(out.logits, out.logits.argmax(-1), out.q_halt, out.q_continue, used)
