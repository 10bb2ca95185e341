"""Inference: puzzles in, answers out, through the continuous-batching engine (`trm.inference.engine`) with a
halting policy (`trm.inference.halting`). The same engine serves `trm solve`, `trm eval` and ARC voting, and
takes a stream of puzzles arriving at any time (`Engine.submit` / `Engine.step`).

Three lines from a checkpoint to answers:

    from trm.inference import Solver
    solver = Solver.load("runs/demo/run", policy="adaptive")
    for s in solver.solve(["1....2..3...4.....5...6...1.........", ...]): print(s.answer, s.valid, s.steps)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trm.inference.engine import Answer, Engine, InferenceConfig, Request
from trm.inference.halting import DEFAULT_POLICY, parse_policy, policy_for
from trm.tasks.base import Task

__all__ = [
    "DEFAULT_POLICY",
    "Engine",
    "InferenceConfig",
    "Request",
    "Solution",
    "Solver",
    "parse_policy",
    "policy_for",
]


@dataclass
class Solution:
    puzzle: np.ndarray
    answer: np.ndarray
    valid: bool
    steps: int  # supervision steps of the chosen trajectory
    compute: int  # supervision steps over all trajectories
    confidence: float  # sigmoid(q_halt) of the chosen trajectory's last step
    trace: list[np.ndarray]  # decoded answers after every step (with trace)
    q_trace: list[float]  # halting probability after every step (with trace)


def checker_for(task: Task):
    """The engine's batched checker for a task that can check answers without the solution, else None."""
    return task.check_tokens if getattr(task, "checkable", False) else None


def solve_puzzles(
    model: nn.Module,
    task: Task,
    puzzles: Sequence[str],
    config: InferenceConfig | None = None,
    puzzle_identifier: int = 0,
) -> Iterator[Solution]:
    """Parse every puzzle first (so one bad line fails before any work), then solve them all in the engine's
    pool; yields in input order."""
    parsed = [task.parse(text) for text in puzzles]
    engine = Engine(model, config, checker_for(task))
    requests = (Request(task.encode(p), puzzle_identifier) for p in parsed)
    waiting: dict[int, Answer] = {}
    nxt = 0
    for ans in engine.run(requests):
        waiting[ans.index] = ans
        while nxt in waiting:
            yield _solution(task, parsed[nxt], waiting.pop(nxt))
            nxt += 1


def _solution(task: Task, puzzle: np.ndarray, ans: Answer) -> Solution:
    answer = task.decode(ans.preds)
    t = ans.chosen
    return Solution(
        puzzle=puzzle,
        answer=answer,
        valid=ans.valid if ans.valid is not None else bool(task.is_solution(answer, puzzle)),
        steps=ans.steps,
        compute=ans.compute,
        confidence=ans.confidence,
        trace=[task.decode(p) for p in t.trace or []],
        q_trace=list(t.q_trace or []),
    )


class Solver:
    """A model, its task and an inference config: the object a user (or the server) keeps."""

    def __init__(self, model: nn.Module, task: Task, config: InferenceConfig | None = None):
        self.model, self.task, self.config = model.eval(), task, config or InferenceConfig()
        Engine(self.model, self.config, checker_for(task))  # a bad config fails now, not at the first puzzle

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "auto", **options) -> Solver:
        """A checkpoint directory (or run directory: its newest checkpoint); `options` are InferenceConfig
        fields (policy="adaptive", max_steps=32, samples=8, noise=0.2, select="vote", ...)."""
        from trm.models.base import load_checkpoint, pick_device
        from trm.tasks import task_for

        model, path = load_checkpoint(Path(checkpoint), pick_device(device))
        return cls(model, task_for(path, model.config), InferenceConfig(**options))

    @torch.no_grad()
    def solve(self, puzzles: Sequence[str] | str) -> list[Solution]:
        return list(
            solve_puzzles(self.model, self.task, [puzzles] if isinstance(puzzles, str) else puzzles, self.config)
        )
