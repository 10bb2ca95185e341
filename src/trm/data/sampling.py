"""Batches: the official collate, the seeded and resumable training sampler, and in-order test batches;
each sliced by rank for data-parallel runs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from trm.data.layout import IGNORE_LABEL, DatasetMetadata, PuzzleDataset
from trm.errors import DataError


def collate(
    inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray, batch_size: int, meta: DatasetMetadata
) -> dict[str, torch.Tensor]:
    """Official collate: int32 tensors; labels equal to `ignore_label_id` -> -100 (unless it is None); a
    short batch is padded to `batch_size` rows with inputs = pad_id, labels = -100, identifier = blank."""
    n = len(inputs)
    if n > batch_size or len(labels) != n or len(puzzle_ids) != n:
        raise ValueError(f"collate: {len(inputs)}/{len(labels)}/{len(puzzle_ids)} rows for batch size {batch_size}")
    out_inputs = np.full((batch_size, meta.seq_len), meta.pad_id, dtype=np.int32)
    out_labels = np.full((batch_size, meta.seq_len), IGNORE_LABEL, dtype=np.int32)
    out_ids = np.full((batch_size,), meta.blank_identifier_id, dtype=np.int32)
    out_inputs[:n] = inputs
    real = out_labels[:n]
    real[:] = labels
    if meta.ignore_label_id is not None:
        real[real == meta.ignore_label_id] = IGNORE_LABEL
    out_ids[:n] = puzzle_ids
    return {
        "inputs": torch.from_numpy(out_inputs),
        "labels": torch.from_numpy(out_labels),
        "puzzle_identifiers": torch.from_numpy(out_ids),
    }


class _EpochPlan:
    """One epoch's walk: example rows in visiting order and, per visited group, where its rows start."""

    __slots__ = ("rows", "ids", "cum")

    def __init__(self, rows: np.ndarray, ids: np.ndarray, cum: np.ndarray):
        self.rows, self.ids, self.cum = rows, ids, cum


class TrainSampler:
    """Official training sampling, seeded and resumable.

    Each epoch visits all groups in a random order; for each group it picks one puzzle (augmentation)
    uniformly at random and takes that puzzle's examples in random order, filling global batches of exactly
    `batch_size` rows; examples of a puzzle that overflow the current batch are dropped (official), and the
    next batch starts with the next group. Unlike the official sampler, which drops the last partial batch of
    an iteration, the stream runs on into the next epoch's permutation, so small data sets waste nothing.

    Everything random comes from Philox keyed by (seed, epoch), so a batch always starts at a group
    boundary and (epoch, group cursor) is the whole state. Each rank yields rows
    [rank*B/ws, (rank+1)*B/ws) of the global batch.
    """

    def __init__(self, ds: PuzzleDataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or world_size < 1 or batch_size % world_size:
            raise DataError(f"global batch size {batch_size} is not a positive multiple of world size {world_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} outside 0..{world_size - 1}")
        if ds.num_examples == 0 or ds.num_groups == 0:
            raise DataError(f"{ds.dir}: no training examples")
        self.ds, self.batch_size, self.seed = ds, int(batch_size), int(seed)
        self.rank, self.world_size = rank, world_size
        self._epoch, self._cursor = 0, 0
        self._plans: dict[int, _EpochPlan] = {}
        self._gi = ds.group_indices.astype(np.int64)
        self._pi = ds.puzzle_indices.astype(np.int64)

    def _plan(self, epoch: int) -> _EpochPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            if len(self._plans) >= 2:
                self._plans.pop(min(self._plans))
            plan = self._plans[epoch] = self._build_plan(epoch)
        return plan

    def _build_plan(self, epoch: int) -> _EpochPlan:
        key = np.array([self.seed % 2**64, epoch % 2**64], dtype=np.uint64)
        rng = np.random.Generator(np.random.Philox(key=key))
        gi, pi = self._gi, self._pi
        order = rng.permutation(self.ds.num_groups)
        puzzles = rng.integers(gi[order], gi[order + 1])  # one augmentation per group, uniformly
        starts = pi[puzzles]
        counts = pi[puzzles + 1] - starts
        cum = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(counts, out=cum[1:])
        total = int(cum[-1])
        rows = np.repeat(starts - cum[:-1], counts) + np.arange(total, dtype=np.int64)
        if total and int(counts.max()) > 1:  # shuffle the examples inside each visited puzzle
            segment = np.repeat(np.arange(len(order), dtype=np.int64), counts)
            keys = (segment << 32) | rng.integers(0, 2**32, size=total, dtype=np.int64)
            rows = rows[np.argsort(keys, kind="stable")]
        ids = np.repeat(self.ds.puzzle_identifiers[puzzles], counts)
        return _EpochPlan(rows, ids, cum)

    def next_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(example rows, puzzle identifiers) of the next global batch; advances the position."""
        rows, ids = [], []
        need = self.batch_size
        while need:
            plan = self._plan(self._epoch)
            pos = int(plan.cum[self._cursor])
            avail = len(plan.rows) - pos
            if avail > need:
                rows.append(plan.rows[pos : pos + need])
                ids.append(plan.ids[pos : pos + need])
                # next batch starts at the first group not yet begun; the rest of a cut puzzle is dropped
                self._cursor = int(np.searchsorted(plan.cum, pos + need, side="left"))
                need = 0
            else:
                rows.append(plan.rows[pos:])
                ids.append(plan.ids[pos:])
                need -= avail
                self._epoch, self._cursor = self._epoch + 1, 0
        if len(rows) == 1:
            return rows[0], ids[0]
        return np.concatenate(rows), np.concatenate(ids)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        local = self.batch_size // self.world_size
        lo, hi = self.rank * local, (self.rank + 1) * local
        meta = self.ds.metadata
        while True:
            rows, ids = self.next_rows()
            rows, ids = rows[lo:hi], ids[lo:hi]
            yield collate(self.ds.inputs[rows], self.ds.labels[rows], ids, local, meta)

    @property
    def epoch(self) -> float:
        """Fractional epochs consumed (groups visited / groups)."""
        return self._epoch + self._cursor / self.ds.num_groups

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "cursor": self._cursor, "seed": self.seed, "num_groups": self.ds.num_groups}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position (and the seed it was taken under, so the stream continues exactly)."""
        groups = int(state.get("num_groups", self.ds.num_groups))
        if groups != self.ds.num_groups:
            raise DataError(
                f"{self.ds.dir}: sampler state is for a data set with {groups} groups, this one has "
                f"{self.ds.num_groups}"
            )
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor <= groups:
            raise DataError(f"{self.ds.dir}: invalid sampler state {state}")
        self.seed = int(state.get("seed", self.seed))
        self._epoch, self._cursor = epoch, cursor
        self._plans.clear()


def test_batches(
    ds: PuzzleDataset, batch_size: int, max_examples: int | None = None, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Every example once, in order (the first `max_examples` if given), in chunks of `batch_size`, each
    padded; yields (batch, number of real rows). Under world_size > 1 each rank takes its contiguous slice
    of every global chunk (local batch = ceil(batch_size / world_size))."""
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"test_batches: batch size {batch_size}, rank {rank} of {world_size}")
    total = ds.num_examples if max_examples is None else max(0, min(ds.num_examples, max_examples))
    ids = ds.example_puzzle_ids()
    local = -(-batch_size // world_size)
    for start in range(0, total, batch_size):
        end = min(start + batch_size, total)
        lo, hi = min(start + rank * local, end), min(start + (rank + 1) * local, end)
        yield collate(ds.inputs[lo:hi], ds.labels[lo:hi], ids[lo:hi], local, ds.metadata), hi - lo


test_batches.__test__ = False  # not a pytest test, despite the name
