"""Inference: puzzles in, answers out. Fixed steps or adaptive halting; the same engine serves `trm solve`,
evaluation and (later) the server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trm.models.trm import TRM
from trm.supervision import think
from trm.tasks.base import Task


@dataclass
class Solution:
    puzzle: np.ndarray
    answer: np.ndarray
    valid: bool
    steps: int
    q_halt: float
    trace: list[np.ndarray]


def solve_puzzles(
    model: TRM,
    task: Task,
    puzzles: Sequence[str],
    steps: int | None = None,
    halt: bool = False,
    trace: bool = False,
    batch_size: int = 256,
    puzzle_identifier: int = 0,
) -> Iterator[Solution]:
    """Parse every puzzle first (so one bad line fails before any work), then solve them in batches."""
    parsed = [task.parse(text) for text in puzzles]
    device = model.y_init.device
    for start in range(0, len(parsed), batch_size):
        chunk = parsed[start : start + batch_size]
        inputs = torch.from_numpy(np.stack([task.encode(p) for p in chunk]).astype(np.int32)).to(device)
        ids = torch.full((len(chunk),), puzzle_identifier, dtype=torch.int32, device=device)
        res = think(model, inputs, ids, steps=steps, halt=halt, trace=trace)
        preds = res.preds.cpu().numpy()
        history = [h.cpu().numpy() for h in res.trace] if res.trace else []
        for i, puzzle in enumerate(chunk):
            answer = task.decode(preds[i])
            yield Solution(
                puzzle=puzzle,
                answer=answer,
                valid=task.is_solution(answer, puzzle),
                steps=int(res.steps[i]),
                q_halt=float(res.q_halt[i]),
                trace=[task.decode(h[i]) for h in history],
            )
