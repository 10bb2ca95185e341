"""The random streams of an official training run, recorded step by step so that `official_lockstep.py
--replay` can feed them to trm's step: `learn_official.py --record-streams FILE` writes them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch


class StreamRecorder:
    """What the official run's random streams gave it, step by step: the batch from its loader and the ACT
    exploration draws of its model's line `(torch.rand_like(q) < p) * torch.randint_like(steps, 2, N_sup + 1)`,
    captured by wrapping those two functions (nothing else in a training step calls them)."""

    def __init__(self, prob: float, seed: int):
        self.prob, self.seed = prob, seed
        self.batches: list[dict[str, torch.Tensor]] = []
        self.min_steps: list[torch.Tensor] = []
        self._draws: list[torch.Tensor] = []

    @contextlib.contextmanager
    def step(self, batch: dict[str, torch.Tensor]) -> Iterator[None]:
        rand_like, randint_like = torch.rand_like, torch.randint_like

        def keep(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            def wrapped(*a: Any, **k: Any) -> torch.Tensor:
                out = fn(*a, **k)
                self._draws.append(out.detach().cpu().clone())
                return out

            return wrapped

        torch.rand_like, torch.randint_like = keep(rand_like), keep(randint_like)
        try:
            yield
        finally:
            torch.rand_like, torch.randint_like = rand_like, randint_like
        if len(self._draws) != 2:
            raise SystemExit(f"expected one exploration draw per step, saw {len(self._draws)} random calls")
        r, k = self._draws
        self._draws = []
        self.batches.append({key: v.clone() for key, v in batch.items()})
        self.min_steps.append(((r < self.prob) * k).to(torch.int32))

    def save(self, path: str | os.PathLike) -> None:
        if not self.batches:
            raise SystemExit("no training step ran: no streams to record")
        keys = self.batches[0].keys()
        streams = {key: torch.stack([b[key] for b in self.batches]) for key in keys}
        torch.save({**streams, "min_steps": torch.stack(self.min_steps), "prob": self.prob, "seed": self.seed}, path)
