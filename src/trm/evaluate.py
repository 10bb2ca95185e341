"""Evaluation: run a model over a split and report the official metrics of each example's final step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from trm.data import PuzzleDataset, test_batches
from trm.errors import CheckpointError
from trm.inference.engine import Answer, Checker, Engine, InferenceConfig, Request
from trm.supervision import ThinkResult, supervision_loss
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
    inference: InferenceConfig | None = None,
    max_examples: int | None = None,
    loss_type: str = "stablemax",
    save_outputs: bool = False,
    progress: Callable[[int], None] | None = None,
    on_batch: Callable[[dict[str, torch.Tensor], ThinkResult, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    blank_identifiers: bool = False,
    checker: Checker | None = None,
) -> EvalResult:
    """Metrics are means over examples: accuracy (per token), exact_accuracy (whole answer), q_halt_accuracy,
    steps (of the chosen trajectory), compute (supervision steps over all trajectories), lm_loss,
    q_halt_loss. The examples run through the inference engine (`inference`: halting policy, step cap,
    samples; fixed N_sup steps by default) in a pool of `batch_size` rows (under torch.distributed each rank
    takes its slice of every chunk, in a pool of its share, and the metrics are summed over ranks). With
    `save_outputs`, also the final logits, halting logits, predictions and steps of every example in data
    set order (of this rank's rows). `on_batch(batch, result, n_real)` sees every pool-full of finished
    examples (task evaluators such as ARC voting hook in here; examples finish in any order,
    `batch["position"]` says where each one is). `blank_identifiers` feeds the model the blank puzzle
    identifier (0) instead of each example's own, to measure what the learned identity contributes (hooks
    still see the true identifiers). `checker` is the task's answer checker, for the policies and selection
    that use it."""
    check_fits(model, ds)
    local = -(-batch_size // world_size)  # each rank's pool: its share of every chunk, as before the engine
    engine = Engine(model, replace(inference or InferenceConfig(), batch_size=local, keep_logits=True), checker)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    keys = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "compute", "lm_loss", "q_halt_loss")
    sums = dict.fromkeys(keys, 0.0)  # every rank reduces the same keys, also one that got no rows
    outputs: dict[str, list[np.ndarray]] = {"order": [], "logits": [], "q_halt_logits": [], "preds": [], "steps": []}
    total = 0

    def requests() -> Iterator[Request]:
        position = 0
        for batch, n_real in test_batches(ds, batch_size, max_examples, rank, world_size):
            for i in range(n_real):
                ident = int(batch["puzzle_identifiers"][i])
                row = (position, ident, batch["labels"][i])
                yield Request(batch["inputs"][i].numpy(), 0 if blank_identifiers else ident, row)
                position += 1

    def flush(done: list[Answer]) -> None:
        nonlocal total
        n = len(done)
        data = {
            "inputs": torch.from_numpy(np.stack([a.request.inputs for a in done])).to(device),
            "labels": torch.stack([a.request.key[2] for a in done]).to(device),
            "puzzle_identifiers": torch.tensor([a.request.key[1] for a in done], dtype=torch.int32, device=device),
            "position": torch.tensor([a.request.key[0] for a in done]),  # in this rank's rows of the split
        }
        logits = torch.stack([a.chosen.logits for a in done])
        res = ThinkResult(
            logits,
            torch.from_numpy(np.stack([a.preds for a in done])).to(device),
            torch.tensor([a.chosen.q_halt for a in done], device=device),
            torch.tensor([a.chosen.q_continue for a in done], device=device),
            torch.tensor([a.steps for a in done], dtype=torch.int32, device=device),
        )
        losses = supervision_loss(res.logits, data["labels"], res.q_halt, loss_type)
        token_acc = losses.correct.sum(-1) / losses.counts.clamp_min(1)
        for key, value in (
            ("accuracy", token_acc.sum()),
            ("exact_accuracy", losses.seq_correct.sum()),
            ("q_halt_accuracy", ((res.q_halt >= 0) == losses.seq_correct).sum()),
            ("steps", res.steps.sum()),
            ("compute", sum(a.compute for a in done)),
            ("lm_loss", losses.lm),
            ("q_halt_loss", losses.q_halt),
        ):
            sums[key] += float(value)
        total += n
        if on_batch is not None:
            on_batch(data, res, n)
        if save_outputs:
            outputs["order"].append(np.array([a.request.key[0] for a in done]))
            outputs["logits"].append(res.logits.float().cpu().numpy())
            outputs["q_halt_logits"].append(res.q_halt.cpu().numpy())
            outputs["preds"].append(res.preds.cpu().numpy().astype(np.uint8))
            outputs["steps"].append(res.steps.cpu().numpy())
        if progress is not None:
            progress(n)

    try:
        done: list[Answer] = []
        for answer in engine.run(requests()):
            done.append(answer)
            if len(done) == local:
                flush(done)
                done = []
        if done:
            flush(done)
    finally:
        model.train(was_training)
    if world_size > 1:
        keys = sorted(sums)
        packed = torch.tensor([sums[k] for k in keys] + [total], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(packed)
        sums, total = dict(zip(keys, packed[:-1].tolist(), strict=True)), int(packed[-1])
    metrics = {k: v / max(total, 1) for k, v in sums.items()}
    metrics["count"] = float(total)
    arrays: dict[str, np.ndarray] = {}
    if outputs["order"]:
        order = np.argsort(np.concatenate(outputs.pop("order")), kind="stable")
        arrays = {k: np.concatenate(v)[order] for k, v in outputs.items()}
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
