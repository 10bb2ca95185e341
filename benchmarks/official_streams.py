"""The random streams of an official training run, recorded step by step so that `official_lockstep.py
--replay` can feed them to trm's step: `learn_official.py --record-streams FILE` writes them.

    python benchmarks/official_streams.py STREAMS DATA [--N-sup 8]   # their statistics beside trm's
"""

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


def compare(streams: dict[str, Any], data: str, seed: int, n_sup: int) -> None:
    """Print the statistics of the recorded streams beside those of trm's for the same seed, steps and batch:
    whether each epoch visits every group once, how often each group comes, the exploration rate and the
    distribution of the minimum step counts."""
    from pathlib import Path

    import numpy as np

    from trm.data.layout import PuzzleDataset
    from trm.data.sampling import TrainSampler
    from trm.supervision import exploration_min_steps

    ds = PuzzleDataset(Path(data), "train")
    steps, rows = streams["inputs"].shape[:2]
    key = {r.tobytes() + q.tobytes(): i for i, (r, q) in enumerate(zip(ds.inputs, ds.labels, strict=True))}
    example_group = np.searchsorted(ds.group_indices, np.searchsorted(ds.puzzle_indices, np.arange(ds.num_examples),
                                    side="right") - 1, side="right") - 1  # fmt: skip

    def groups(inputs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        width = inputs.shape[-1]
        flat = zip(inputs.reshape(-1, width).numpy(), labels.reshape(-1, width).numpy(), strict=True)
        return example_group[[key[r.astype(ds.inputs.dtype).tobytes() + q.astype(ds.labels.dtype).tobytes()]
                              for r, q in flat]]  # fmt: skip

    sampler = iter(TrainSampler(ds, rows, seed))
    ours = [next(sampler) for _ in range(steps)]
    sides = {
        "official (recorded)": (groups(streams["inputs"], streams["labels"]), streams["min_steps"].numpy()),
        "trm": (
            groups(torch.stack([b["inputs"] for b in ours]), torch.stack([b["labels"] for b in ours])),
            torch.stack([exploration_min_steps(seed, i, rows, n_sup, streams["prob"]) for i in range(steps)]).numpy(),
        ),
    }
    g = ds.num_groups
    for name, (visits, min_steps) in sides.items():
        epochs = len(visits) // g
        whole = sum(len(set(visits[e * g : (e + 1) * g])) == g for e in range(epochs))
        counts = np.bincount(visits, minlength=g)
        explored = min_steps[min_steps > 0]
        share = np.bincount(explored, minlength=n_sup + 1)[2:] / max(len(explored), 1)
        print(f"{name}: {whole} of {epochs} epochs visit every group once; each group {counts.min()}-{counts.max()} "
              f"times; exploration in {(min_steps > 0).mean():.2%} of the rows; minimum steps 2..{n_sup}: "
              f"{' '.join(f'{x:.3f}' for x in share)}")  # fmt: skip


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="Compare recorded official streams with trm's for the same seed.")
    p.add_argument("streams", help="a file from learn_official.py --record-streams")
    p.add_argument("data", help="the data set the run trained on")
    p.add_argument("--N-sup", type=int, default=8, dest="n_sup")
    args = p.parse_args()
    streams = torch.load(args.streams)
    compare(streams, args.data, int(streams["seed"]), args.n_sup)


if __name__ == "__main__":
    main()
