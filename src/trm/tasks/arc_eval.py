"""The ARC evaluator: undo each augmented prediction, vote over the augmentations of every test input, score
pass@K and write the Kaggle submission.

Per prediction row: crop the grid out of the 30x30 canvas, undo the row's augmentation (read from its
puzzle name: inverse dihedral, then inverse colour map), find the test pair by the hash of the un-augmented
input, and record (prediction hash, sigmoid(q_halt)). Per test pair the candidates are ranked by vote count,
then by mean halting confidence (the official rule); pass@K asks whether the true output is among the top
K. A task scores the fraction of its test pairs that pass (official), or 1 only if all pass
(`all_or_nothing`, as HRM's notebook). Tasks without any prediction score 0 but still count.

Unlike the official evaluator, votes are kept per evaluation: pooling several checkpoints is an explicit
choice (`Votes.merge`, `trm eval --ensemble`). Under torch.distributed each rank collects its rows and
`gather` brings the votes to rank 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trm.data import DataError, read_identifiers, write_json
from trm.supervision import ThinkResult
from trm.tasks import arc

PASS_KS = (1, 2, 5, 10, 100, 1000)


@dataclass
class Votes:
    """Candidate outputs per (task, test-input hash): a list of (output hash, halting confidence)."""

    grids: dict[str, np.ndarray] = field(default_factory=dict)  # output hash -> grid
    ballots: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)

    def add(self, name: str, input_tokens: np.ndarray, pred_tokens: np.ndarray, confidence: float) -> None:
        """One prediction row of the puzzle called `name` (an identifier name, maybe augmented)."""
        self._add(*arc.split_name(name), input_tokens, pred_tokens, confidence)

    def _add(self, task: str, aug: arc.Aug, input_tokens: np.ndarray, pred_tokens: np.ndarray, q: float) -> None:
        input_hash = arc.grid_hash(aug.invert(arc.crop(input_tokens)))
        pred = aug.invert(arc.crop(pred_tokens))
        pred_hash = arc.grid_hash(pred)
        self.grids.setdefault(pred_hash, pred)
        self.ballots.setdefault(task, {}).setdefault(input_hash, []).append((pred_hash, float(q)))

    def add_batch(
        self,
        names: Sequence[str],
        identifiers: np.ndarray,
        inputs: np.ndarray,
        preds: np.ndarray,
        q_halt_logits: np.ndarray,
        blank_id: int = 0,
    ) -> None:
        confidence = 1 / (1 + np.exp(-np.asarray(q_halt_logits, dtype=np.float64)))
        parsed: dict[int, tuple[str, arc.Aug]] = {}  # each identifier's name is parsed once per batch
        for ident, x, y, q in zip(identifiers.tolist(), inputs, preds, confidence, strict=True):
            if ident == blank_id:  # padding rows
                continue
            if ident not in parsed:
                if not 0 <= ident < len(names):
                    raise DataError(f"puzzle identifier {ident} has no name in identifiers.json ({len(names)} names)")
                parsed[ident] = arc.split_name(names[ident])
            self._add(*parsed[ident], x, y, q)

    def merge(self, other: Votes) -> Votes:
        for h, g in other.grids.items():
            self.grids.setdefault(h, g)
        for task, by_input in other.ballots.items():
            for input_hash, ballots in by_input.items():
                self.ballots.setdefault(task, {}).setdefault(input_hash, []).extend(ballots)
        return self

    def ranked(self, task: str, input_grid: np.ndarray) -> list[tuple[str, int, float]]:
        """Candidates for one test input, best first: (output hash, votes, mean confidence)."""
        tally: dict[str, list[float]] = {}
        for h, q in self.ballots.get(task, {}).get(arc.grid_hash(input_grid), []):
            entry = tally.setdefault(h, [0, 0.0])
            entry[0] += 1
            entry[1] += q
        stats = [(h, int(n), s / n) for h, (n, s) in tally.items()]
        return sorted(stats, key=lambda c: (c[1], c[2]), reverse=True)  # stable: first seen wins a full tie

    def top(self, task: str, input_grid: np.ndarray, k: int) -> list[str]:
        """Hashes of the `k` best candidates that are real grids: attempts skip empty (0x0) predictions,
        which no ARC answer is (pass@K keeps them in the ranking, as official)."""
        return [h for h, _, _ in self.ranked(task, input_grid) if self.grids[h].size][:k]

    def attempts(self, task: str, input_grid: np.ndarray, k: int = 2) -> list[np.ndarray]:
        """The `k` attempts to submit: the best candidates, the first repeated when fewer exist, [[0]] when
        there is none (Kaggle wants every attempt)."""
        best = [self.grids[h] for h in self.top(task, input_grid, k)] or [np.zeros((1, 1), dtype=np.uint8)]
        return best + [best[0]] * (k - len(best))


def gather(votes: Votes) -> Votes | None:
    """All ranks' votes merged on rank 0 (None elsewhere); the votes themselves without torch.distributed."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return votes
    world = torch.distributed.get_world_size()
    rank = torch.distributed.get_rank()
    parts: list | None = [None] * world if rank == 0 else None
    torch.distributed.gather_object(votes, parts, dst=0)
    if rank != 0:
        return None
    merged = Votes()
    for part in parts or []:
        merged.merge(part)
    return merged


@dataclass
class ArcScore:
    pass_at: dict[int, float]  # K -> mean task score
    submission: dict[str, list[dict[str, list[list[int]]]]]  # Kaggle format
    solved: dict[str, list[bool]]  # task -> per test pair, correct at pass@attempts
    tasks: int

    def metrics(self) -> dict[str, float]:
        return {f"ARC/pass@{k}": v for k, v in self.pass_at.items()}


def score(
    votes: Votes,
    test_tasks: dict[str, arc.ArcTask],
    pass_ks: Sequence[int] = PASS_KS,
    attempts: int = 2,
    all_or_nothing: bool = False,
) -> ArcScore:
    """Vote, score pass@K over `test_tasks` (with solutions) and build the submission (`attempts` grids
    per test input, empty predictions skipped; the best one repeated when fewer candidates exist, [[0]] when
    there is none)."""
    totals = dict.fromkeys(pass_ks, 0.0)
    submission: dict[str, list[dict[str, list[list[int]]]]] = {}
    solved: dict[str, list[bool]] = {}
    for name, task in test_tasks.items():
        hits: dict[int, list[bool]] = {k: [] for k in pass_ks}
        entries, in_attempts = [], []
        for x, y in task.test:
            ranked = votes.ranked(name, x)
            truth = arc.grid_hash(y) if y is not None else None
            position = next((i for i, c in enumerate(ranked) if c[0] == truth), None)
            for k in pass_ks:
                hits[k].append(position is not None and position < k)
            in_attempts.append(truth in votes.top(name, x, attempts))
            entries.append({f"attempt_{i + 1}": g.tolist() for i, g in enumerate(votes.attempts(name, x, attempts))})
        submission[name] = entries
        solved[name] = in_attempts
        for k in pass_ks:
            totals[k] += float(all(hits[k])) if all_or_nothing else sum(hits[k]) / len(hits[k])
    n = max(len(test_tasks), 1)
    return ArcScore({k: v / n for k, v in totals.items()}, submission, solved, len(test_tasks))


def write_submission(path: Path, submission: dict) -> None:
    """The Kaggle `submission.json` (task -> list over test inputs of {"attempt_1": grid, "attempt_2": grid})."""
    write_json(path, submission)


class VoteCollector:
    """An `evaluate(on_batch=...)` hook that turns every batch's predictions into votes; `result` gathers
    them (rank 0) and scores them against the data set's test tasks."""

    def __init__(self, root: Path, votes: Votes | None = None):
        self.names = read_identifiers(root)
        self.tasks = arc.read_test_puzzles(root)
        self.votes = votes if votes is not None else Votes()

    @classmethod
    def for_data(cls, root: Path) -> VoteCollector | None:
        """A collector for an ARC data set (one with test_puzzles.json), else None."""
        return cls(root) if (Path(root) / "test_puzzles.json").is_file() else None

    def __call__(self, batch: dict[str, torch.Tensor], res: ThinkResult, n_real: int) -> None:
        self.votes.add_batch(
            self.names,
            batch["puzzle_identifiers"][:n_real].cpu().numpy(),
            batch["inputs"][:n_real].cpu().numpy(),
            res.preds[:n_real].cpu().numpy(),
            res.q_halt[:n_real].float().cpu().numpy(),
        )

    def result(self, **kwargs) -> ArcScore | None:
        """The score on rank 0 (None on other ranks); kwargs go to `score`."""
        votes = gather(self.votes)
        return None if votes is None else score(votes, self.tasks, **kwargs)
