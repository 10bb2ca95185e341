"""`trm bench`: training-step time and inference throughput of a preset, measured the same way for trm
and (when a checkout is given) the official implementation, interleaved in one process so that machine
noise hits both alike.

A training step = one supervision step forward (T recursion blocks), the loss, backward, the optimizer
steps. Inference = N_sup supervision steps in eval mode, reported as puzzles per second.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trm.config import build_train_config
from trm.models.trm import TRM
from trm.optim import AdamATan2, SignSGDEmbedding
from trm.supervision import DeepSupervision, think


@dataclass
class Workload:
    """A callable for one training step and one for one inference batch."""

    name: str
    train_step: Callable[[], None]
    infer: Callable[[], None]


def sudoku_batch(batch_size: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, vocab, (batch_size, seq_len), generator=g, dtype=torch.int32),
        "labels": torch.randint(2, vocab, (batch_size, seq_len), generator=g, dtype=torch.int32),
        "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32),
    }


def trm_workload(preset: str, batch_size: int, overrides: list[str] = (), infer_steps: int | None = None) -> Workload:
    """`infer_steps` times only that many supervision steps of inference (default N_sup); the per-step cost
    is constant, so throughput scales by N_sup / infer_steps."""
    cfg = build_train_config(preset, list(overrides))
    torch.manual_seed(0)
    model = TRM(cfg.model)
    sup = DeepSupervision(model, cfg.loss_type).train()
    if cfg.compile:
        sup.compile()  # as the trainer does
    opt = AdamATan2(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sparse = (
        SignSGDEmbedding(model.puzzle_emb, cfg.puzzle_emb_lr, cfg.puzzle_emb_weight_decay) if model.puzzle_emb else None
    )
    batch = sudoku_batch(batch_size, cfg.model.seq_len, cfg.model.vocab_size)
    state = {"carry": sup.initial_carry(batch)}

    def train_step() -> None:
        model.train()
        state["carry"], losses, _ = sup(state["carry"], batch)
        (losses.total / batch_size).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sparse is not None:
            sparse.step()
            sparse.zero_grad()

    def infer() -> None:
        model.eval()
        think(model, batch["inputs"], batch["puzzle_identifiers"], steps=infer_steps)

    return Workload("trm", train_step, infer)


def timed(fn: Callable[[], None], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def compare(workloads: list[Workload], repeats: int = 5, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Interleave the workloads round by round; report medians (train: s/step, infer: puzzles/s later)."""
    for w in workloads:
        for _ in range(warmup):
            w.train_step()
            w.infer()
    train_times: dict[str, list[float]] = {w.name: [] for w in workloads}
    infer_times: dict[str, list[float]] = {w.name: [] for w in workloads}
    for _ in range(repeats):
        for w in workloads:
            train_times[w.name] += timed(w.train_step, 1)
        for w in workloads:
            infer_times[w.name] += timed(w.infer, 1)
    return {
        w.name: {
            "train_s": statistics.median(train_times[w.name]),
            "infer_s": statistics.median(infer_times[w.name]),
        }
        for w in workloads
    }
