"""Evaluation: run a model over a split and report the official metrics of each example's final step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from trm.data import PuzzleDataset, test_batches
from trm.errors import CheckpointError
from trm.supervision import ThinkResult, supervision_loss, think
from trm.tasks.base import Task


@dataclass
class EvalResult:
    metrics: dict[str, float]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def check_fits(model: nn.Module, ds: PuzzleDataset) -> None:
    """A checkpoint must match the data's sequence length, vocabulary and puzzle identifiers."""
    cfg, meta = model.config, ds.metadata
    for name, have, need in (
        ("seq_len", cfg.seq_len, meta.seq_len),
        ("vocab_size", cfg.vocab_size, meta.vocab_size),
    ):
        if have != need:
            raise CheckpointError(
                f"the model has {name} {have} but the data set has {need}: it was trained on other data"
            )
    if cfg.puzzle_emb_ndim and meta.num_puzzle_identifiers > cfg.num_puzzle_identifiers:
        raise CheckpointError(
            f"the model has {cfg.num_puzzle_identifiers} puzzle-embedding rows but the data set uses "
            f"{meta.num_puzzle_identifiers} puzzle identifiers"
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    ds: PuzzleDataset,
    batch_size: int = 256,
    steps: int | None = None,
    halt: bool = False,
    max_examples: int | None = None,
    loss_type: str = "stablemax",
    save_outputs: bool = False,
    progress: Callable[[int], None] | None = None,
    on_batch: Callable[[dict[str, torch.Tensor], ThinkResult, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    blank_identifiers: bool = False,
) -> EvalResult:
    """Metrics are means over examples: accuracy (per token), exact_accuracy (whole answer), q_halt_accuracy,
    steps, lm_loss, q_halt_loss. With `save_outputs`, also the final logits, halting logits and predictions
    of every example in data set order (of this rank's rows). `on_batch(batch, result, n_real)` sees every
    batch (task evaluators such as ARC voting hook in here). Under torch.distributed each rank evaluates its
    slice of every batch and the metrics are summed over ranks. `blank_identifiers` feeds the model the blank
    puzzle identifier (0) instead of each example's own, to measure what the learned identity contributes
    (hooks still see the true identifiers)."""
    check_fits(model, ds)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    outputs: dict[str, list[np.ndarray]] = {"logits": [], "q_halt_logits": [], "preds": [], "steps": []}
    total = 0
    try:
        for batch, n_real in test_batches(ds, batch_size, max_examples, rank, world_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            ids = torch.zeros_like(batch["puzzle_identifiers"]) if blank_identifiers else batch["puzzle_identifiers"]
            res = think(model, batch["inputs"], ids, steps=steps, halt=halt)
            labels = batch["labels"][:n_real]
            losses = supervision_loss(res.logits[:n_real], labels, res.q_halt[:n_real], loss_type)
            token_acc = losses.correct.sum(-1) / losses.counts.clamp_min(1)
            for key, value in (
                ("accuracy", token_acc.sum()),
                ("exact_accuracy", losses.seq_correct.sum()),
                ("q_halt_accuracy", ((res.q_halt[:n_real] >= 0) == losses.seq_correct).sum()),
                ("steps", res.steps[:n_real].sum()),
                ("lm_loss", losses.lm),
                ("q_halt_loss", losses.q_halt),
            ):
                sums[key] = sums.get(key, 0.0) + float(value)
            total += n_real
            if on_batch is not None:
                on_batch(batch, res, n_real)
            if save_outputs:
                outputs["logits"].append(res.logits[:n_real].float().cpu().numpy())
                outputs["q_halt_logits"].append(res.q_halt[:n_real].cpu().numpy())
                outputs["preds"].append(res.preds[:n_real].cpu().numpy().astype(np.uint8))
                outputs["steps"].append(res.steps[:n_real].cpu().numpy())
            if progress is not None:
                progress(n_real)
    finally:
        model.train(was_training)
    if world_size > 1:
        keys = sorted(sums)
        packed = torch.tensor([sums[k] for k in keys] + [total], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(packed)
        sums, total = dict(zip(keys, packed[:-1].tolist(), strict=True)), int(packed[-1])
    metrics = {k: v / max(total, 1) for k, v in sums.items()}
    metrics["count"] = float(total)
    arrays = {k: np.concatenate(v) for k, v in outputs.items() if v}
    return EvalResult(metrics, arrays)


class SolutionCounter:
    """An `evaluate(on_batch=...)` hook counting predictions that the task's own checker accepts (Sudoku: a
    valid solution of the puzzle; maze: a valid shortest path, of which there may be several). Exact accuracy
    compares with one reference answer; this metric accepts every correct one."""

    def __init__(self, task: Task):
        self.task, self.valid, self.total = task, 0, 0

    def __call__(self, batch: dict[str, torch.Tensor], res: ThinkResult, n_real: int) -> None:
        inputs, preds = batch["inputs"][:n_real].cpu().numpy(), res.preds[:n_real].cpu().numpy()
        for x, p in zip(inputs, preds, strict=True):
            self.valid += bool(self.task.is_solution(self.task.decode(p), self.task.decode(x)))
        self.total += n_real

    def metrics(self) -> dict[str, float]:
        return {"valid_solution": self.valid / max(self.total, 1)}
