"""The official on-disk data layout, memory-mapped reading, and seeded, resumable sampling.

Layout (identical to the official builders', so data sets load in either code base):

    <root>/identifiers.json                        identifier id -> name, "<blank>" at 0
    <root>/<split>/dataset.json                    metadata (DatasetMetadata)
    <root>/<split>/all__inputs.npy, all__labels.npy            uint8 [examples, seq_len]
    <root>/<split>/all__puzzle_identifiers.npy                 int32 [puzzles]
    <root>/<split>/all__puzzle_indices.npy                     int32 [puzzles + 1], CSR: puzzle -> examples
    <root>/<split>/all__group_indices.npy                      int32 [groups + 1],  CSR: group -> puzzles

A group is one original puzzle with its augmentations; a puzzle is one (augmented) task with one
identifier; an example is one input/label pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from trm.errors import TRMError

IGNORE_LABEL = -100
SET_NAME = "all"
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


class DataError(TRMError):
    """A missing, corrupt or inconsistent data set."""


class DatasetMetadata(BaseModel):
    """Exactly the official `dataset.json` fields."""

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]


class DatasetWriter:
    """Streams one split to disk. Arrays go to temporary names and are renamed at `close`, so a crash never
    leaves a half-written split that looks valid; nothing else in the directory is touched."""

    def __init__(self, out_dir: Path, split: str, seq_len: int):
        self.dir = Path(out_dir) / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seq_len = seq_len
        self.inputs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.puzzle_ids: list[int] = []
        self.puzzle_indices = [0]
        self.group_indices = [0]

    def add_group(self, puzzles: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> None:
        if not puzzles:
            raise DataError("a group needs at least one puzzle")
        for identifier, inputs, labels in puzzles:
            inputs, labels = np.atleast_2d(inputs), np.atleast_2d(labels)
            if inputs.shape != labels.shape or inputs.shape[1] != self.seq_len:
                raise DataError(
                    f"example shape {inputs.shape}/{labels.shape} does not fit seq_len {self.seq_len}"
                )
            for arr in (inputs, labels):
                if arr.min() < 0 or arr.max() > 255:
                    raise DataError("token ids must be in 0..255")
            self.inputs.append(inputs.astype(np.uint8))
            self.labels.append(labels.astype(np.uint8))
            self.puzzle_ids.append(int(identifier))
            self.puzzle_indices.append(self.puzzle_indices[-1] + len(inputs))
        self.group_indices.append(len(self.puzzle_ids))

    def close(
        self,
        *,
        vocab_size: int,
        num_puzzle_identifiers: int,
        pad_id: int = 0,
        ignore_label_id: int | None = 0,
        blank_identifier_id: int = 0,
    ) -> DatasetMetadata:
        n_puzzles = len(self.puzzle_ids)
        empty = np.zeros((0, self.seq_len), np.uint8)
        arrays = {
            "inputs": np.concatenate(self.inputs) if self.inputs else empty,
            "labels": np.concatenate(self.labels) if self.labels else empty,
            "puzzle_identifiers": np.asarray(self.puzzle_ids, dtype=np.int32),
            "puzzle_indices": np.asarray(self.puzzle_indices, dtype=np.int32),
            "group_indices": np.asarray(self.group_indices, dtype=np.int32),
        }
        meta = DatasetMetadata(
            pad_id=pad_id,
            ignore_label_id=ignore_label_id,
            blank_identifier_id=blank_identifier_id,
            vocab_size=vocab_size,
            seq_len=self.seq_len,
            num_puzzle_identifiers=num_puzzle_identifiers,
            total_groups=len(self.group_indices) - 1,
            mean_puzzle_examples=len(arrays["inputs"]) / max(n_puzzles, 1),
            total_puzzles=n_puzzles,
            sets=[SET_NAME],
        )
        for name, arr in arrays.items():
            tmp = self.dir / f"{SET_NAME}__{name}.tmp.npy"
            np.save(tmp, arr)
            tmp.replace(self.dir / f"{SET_NAME}__{name}.npy")
        tmp = self.dir / "dataset.json.tmp"
        tmp.write_text(meta.model_dump_json())
        tmp.replace(self.dir / "dataset.json")
        return meta


def write_identifiers(out_dir: Path, names: list[str]) -> None:
    path = Path(out_dir) / "identifiers.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(names))


def read_identifiers(root: Path) -> list[str]:
    path = Path(root) / "identifiers.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read identifiers ({err})") from None


class PuzzleDataset:
    """One split, memory-mapped."""

    def __init__(self, root: Path, split: str):
        self.root, self.split = Path(root), split
        directory = self.root / split
        meta_path = directory / "dataset.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: no dataset.json; build a data set with `trm data ...`")
        try:
            self.metadata = DatasetMetadata.model_validate_json(meta_path.read_text())
        except (ValidationError, ValueError) as err:
            raise DataError(f"{meta_path}: malformed metadata ({str(err).splitlines()[0]})") from None
        set_name = self.metadata.sets[0] if self.metadata.sets else SET_NAME
        arrays = {}
        for name in FIELDS:
            path = directory / f"{set_name}__{name}.npy"
            try:
                arrays[name] = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise DataError(f"{path}: missing") from None
            except (ValueError, OSError, EOFError) as err:
                raise DataError(f"{path}: corrupt array ({err})") from None
        self.inputs, self.labels = arrays["inputs"], arrays["labels"]
        self.puzzle_identifiers = np.asarray(arrays["puzzle_identifiers"])
        self.puzzle_indices = np.asarray(arrays["puzzle_indices"])
        self.group_indices = np.asarray(arrays["group_indices"])
        self.validate()

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1

    def _fail(self, what: str) -> DataError:
        return DataError(f"{self.root / self.split}: {what}")

    def validate(self) -> None:
        """Cheap consistency checks (token ranges are checked on a sample, the rest fully)."""
        m = self.metadata
        if (
            self.inputs.ndim != 2
            or self.inputs.shape != self.labels.shape
            or self.inputs.shape[1] != m.seq_len
        ):
            raise self._fail(
                f"inputs {self.inputs.shape} / labels {self.labels.shape} do not match seq_len {m.seq_len}"
            )
        pi, gi = self.puzzle_indices, self.group_indices
        if len(pi) != len(self.puzzle_identifiers) + 1 or pi[0] != 0 or pi[-1] != len(self.inputs):
            raise self._fail("all__puzzle_indices.npy does not span the examples")
        if len(gi) < 1 or gi[0] != 0 or gi[-1] != len(self.puzzle_identifiers):
            raise self._fail("all__group_indices.npy does not span the puzzles")
        if np.any(np.diff(pi) < 0) or np.any(np.diff(gi) < 0):
            raise self._fail("offsets go backwards in puzzle_indices or group_indices")
        ids = self.puzzle_identifiers
        if len(ids) and (ids.min() < 0 or ids.max() >= m.num_puzzle_identifiers):
            raise self._fail(f"puzzle identifiers outside 0..{m.num_puzzle_identifiers - 1}")
        sample = slice(0, min(len(self.inputs), 100_000))
        for name, arr in (("inputs", self.inputs), ("labels", self.labels)):
            if len(arr) and int(np.max(arr[sample])) >= m.vocab_size:
                raise self._fail(f"{name} hold token ids >= vocab_size {m.vocab_size}")

    def example_puzzle_ids(self) -> np.ndarray:
        """The identifier of every example."""
        counts = np.diff(self.puzzle_indices)
        return np.repeat(self.puzzle_identifiers, counts).astype(np.int32)


def load_split(root: Path, split: str) -> PuzzleDataset:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such data set directory")
    return PuzzleDataset(root, split)


def collate(
    inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray, batch_size: int, meta: DatasetMetadata
) -> dict[str, torch.Tensor]:
    """int32 tensors; ignored labels -> -100; a short batch padded to `batch_size` with PAD rows."""
    n = len(inputs)
    out_inputs = np.full((batch_size, meta.seq_len), meta.pad_id, dtype=np.int32)
    out_labels = np.full((batch_size, meta.seq_len), IGNORE_LABEL, dtype=np.int32)
    out_ids = np.full((batch_size,), meta.blank_identifier_id, dtype=np.int32)
    out_inputs[:n] = inputs
    out_labels[:n] = labels
    if meta.ignore_label_id is not None:
        out_labels[:n][np.asarray(labels) == meta.ignore_label_id] = IGNORE_LABEL
    out_ids[:n] = puzzle_ids
    return {
        "inputs": torch.from_numpy(out_inputs),
        "labels": torch.from_numpy(out_labels),
        "puzzle_identifiers": torch.from_numpy(out_ids),
    }


class TrainSampler:
    """Official training sampling, seeded and resumable.

    Each epoch visits the groups in a random order; for each group it picks one puzzle (augmentation) at
    random and takes its examples in random order, filling batches of exactly `batch_size` rows; a puzzle's
    examples that overflow a batch are dropped (official). Unlike the official sampler, which drops the last
    partial batch, the stream runs on into the next epoch, so small data sets waste nothing. All randomness
    comes from Philox keyed by (seed, epoch), so the position (epoch, group cursor) is the whole state.
    """

    def __init__(self, ds: PuzzleDataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise DataError(f"global batch size {batch_size} is not divisible by world size {world_size}")
        self.ds, self.batch_size, self.seed = ds, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._epoch, self._cursor = 0, 0
        self._plan_epoch: int | None = None

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Group order and, per visited group, the chosen puzzle (both fixed by seed and epoch)."""
        if self._plan_epoch != epoch:
            rng = np.random.Generator(np.random.Philox(key=[self.seed % 2**64, epoch]))
            order = rng.permutation(self.ds.num_groups)
            gi = self.ds.group_indices
            sizes = gi[order + 1] - gi[order]
            puzzles = gi[order] + (rng.random(len(order)) * sizes).astype(np.int64)
            self._plan_cache = (order, puzzles)
            self._plan_epoch = epoch
        return self._plan_cache

    def _example_rows(self, epoch: int, cursor: int, puzzle: int) -> np.ndarray:
        start, end = self.ds.puzzle_indices[puzzle], self.ds.puzzle_indices[puzzle + 1]
        if end - start <= 1:
            return np.arange(start, end)
        rng = np.random.Generator(np.random.Philox(key=[self.seed % 2**64, (epoch << 32) | cursor]))
        return start + rng.permutation(end - start)

    def next_rows(self) -> np.ndarray:
        """Example rows of the next global batch (advances the position)."""
        rows: list[np.ndarray] = []
        filled = 0
        while filled < self.batch_size:
            _, puzzles = self._plan(self._epoch)
            if self._cursor >= len(puzzles):
                self._epoch, self._cursor = self._epoch + 1, 0
                continue
            ex = self._example_rows(self._epoch, self._cursor, int(puzzles[self._cursor]))
            take = ex[: self.batch_size - filled]
            rows.append(take)
            filled += len(take)
            self._cursor += 1
        return np.concatenate(rows)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        ids = self.ds.example_puzzle_ids()
        local = self.batch_size // self.world_size
        while True:
            rows = self.next_rows()[self.rank * local : (self.rank + 1) * local]
            order = np.argsort(rows, kind="stable")  # sorted reads are faster on a memory map
            inv = np.empty_like(order)
            inv[order] = np.arange(len(order))
            sorted_rows = rows[order]
            yield collate(
                self.ds.inputs[sorted_rows][inv],
                self.ds.labels[sorted_rows][inv],
                ids[rows],
                local,
                self.ds.metadata,
            )

    @property
    def epoch(self) -> float:
        return self._epoch + self._cursor / max(self.ds.num_groups, 1)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "cursor": self._cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._epoch, self._cursor = int(state["epoch"]), int(state["cursor"])


def test_batches(
    ds: PuzzleDataset, batch_size: int, max_examples: int | None = None, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Every example once, in order, in padded batches; yields (batch, number of real rows). Under
    world_size > 1 each rank takes its contiguous slice of every global batch."""
    total = min(ds.num_examples, max_examples or ds.num_examples)
    ids = ds.example_puzzle_ids()
    local = -(-batch_size // world_size)
    for start in range(0, total, batch_size):
        end = min(start + batch_size, total)
        lo, hi = min(start + rank * local, end), min(start + (rank + 1) * local, end)
        yield collate(ds.inputs[lo:hi], ds.labels[lo:hi], ids[lo:hi], local, ds.metadata), hi - lo


test_batches.__test__ = False  # not a pytest test, despite the name
