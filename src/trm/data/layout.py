"""The official on-disk data layout: writing a split, and memory-mapped, validated reading.

Layout (identical to the official builders', so data sets load in either code base):

    <root>/identifiers.json                        identifier id -> name, "<blank>" at 0
    <root>/<split>/dataset.json                    metadata (DatasetMetadata)
    <root>/<split>/all__inputs.npy, all__labels.npy            uint8 [examples, seq_len]
    <root>/<split>/all__puzzle_identifiers.npy                 int32 [puzzles]
    <root>/<split>/all__puzzle_indices.npy                     int32 [puzzles + 1], CSR: puzzle -> examples
    <root>/<split>/all__group_indices.npy                      int32 [groups + 1],  CSR: group -> puzzles

A split may hold `rows_recipe.npz` instead of the two row arrays (`trm data arc --lazy`): the source grids
and, per example, which pair, augmentation and offset make its row; rows are then computed when read. Such
a split is ~70x smaller but only trm reads it.

A group is one original puzzle with its augmentations; a puzzle is one (augmented) task with one
identifier; an example is one input/label pair.

Metadata counts are informational: the official Sudoku and Maze builders write `total_puzzles = total_groups`
and `mean_puzzle_examples = 1` even for augmented data, so the loader checks the arrays against each other
and against `seq_len`, `vocab_size` and `num_puzzle_identifiers`, never against those counts.
"""

from __future__ import annotations

import io
import json
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from trm.data.recipe import ROWS_RECIPE, recipe_rows
from trm.errors import DataError
from trm.integrity import SUMS_NAME, verify_checksums, write_checksums

IGNORE_LABEL = -100
SET_NAME = "all"
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
_HEADER_BYTES = 128  # room reserved for the .npy header of a streamed array (numpy pads 2-d headers to 128)
_SCAN_BYTES = 64 << 20  # token-range check reads this much at a time
_INT32_MAX = np.iinfo(np.int32).max


class DatasetMetadata(BaseModel):
    """Exactly the official `dataset.json` fields (TRM's PuzzleDatasetMetadata)."""

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


# -- writing ---------------------------------------------------------------------------------------------


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    header = buf.getvalue()
    if len(header) != _HEADER_BYTES:  # cannot happen for 2-d shapes; guards the reserved space
        raise DataError(f"internal: .npy header for shape {shape} is {len(header)} bytes, not {_HEADER_BYTES}")
    return header


class DatasetWriter:
    """Streams one split to disk in the official layout (set name "all").

    Example rows go straight to temporary files; the small index arrays stay in memory. `close` writes the
    .npy headers, renames the arrays into place and writes `dataset.json` last, so a crash never leaves a
    half-written split that looks valid (a stale `dataset.json` of the same split is removed before the
    arrays are replaced). Nothing else in `out_dir` is touched. Also usable as a context manager: leaving
    the block with an exception removes the temporary files.
    """

    def __init__(self, out_dir: Path, split: str, seq_len: int, rows: bool = True):
        if seq_len < 1:
            raise DataError(f"seq_len must be positive, got {seq_len}")
        self.dir = Path(out_dir) / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seq_len = int(seq_len)
        self.rows = rows  # False: only the index arrays and metadata (the rows come from a recipe file)
        fields = FIELDS if rows else FIELDS[2:]
        self._tmp = {name: self.dir / f"{SET_NAME}__{name}.npy.tmp" for name in fields}
        self._files = {name: self._tmp[name].open("wb") for name in ("inputs", "labels") if rows}
        for f in self._files.values():
            f.write(b"\0" * _HEADER_BYTES)
        self._puzzle_ids = array("q")
        self._puzzle_indices = array("q", [0])
        self._group_indices = array("q", [0])
        self._max_token = {"inputs": -1, "labels": -1}
        self._closed = False

    @property
    def num_examples(self) -> int:
        return self._puzzle_indices[-1]

    def add_counts(self, puzzles: Sequence[tuple[int, int]]) -> None:
        """One group of a row-less split: a list of (identifier, number of examples)."""
        if self._closed or self.rows:
            raise DataError(f"{self.dir}: add_counts is for an open writer made with rows=False")
        if not puzzles or any(n < 1 or ident < 0 for ident, n in puzzles):
            raise DataError(f"{self.dir}: a group needs puzzles with identifiers >= 0 and examples")
        end = self._puzzle_indices[-1]
        for ident, n in puzzles:
            self._puzzle_ids.append(int(ident))
            end += int(n)
            self._puzzle_indices.append(end)
        self._group_indices.append(len(self._puzzle_ids))

    def add_group(self, puzzles: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """One group: a list of (identifier, inputs [E, seq_len], labels [E, seq_len]) with tokens in 0..255."""
        if self._closed:
            raise DataError(f"{self.dir}: writer already closed")
        if not self.rows:
            raise DataError(f"{self.dir}: this writer stores no rows (rows=False); use add_counts")
        if not puzzles:
            raise DataError(f"{self.dir}: a group needs at least one puzzle")
        ids, counts, ins, labs = [], [], [], []
        for k, (identifier, inputs, labels) in enumerate(puzzles):
            inputs, labels = np.asarray(inputs), np.asarray(labels)
            if inputs.ndim == 1:  # a single example
                inputs, labels = inputs[None], labels[None] if labels.ndim == 1 else labels
            if inputs.ndim != 2 or inputs.shape != labels.shape or inputs.shape[1] != self.seq_len:
                raise DataError(
                    f"{self.dir}: puzzle {k} of group {len(self._group_indices) - 1}: inputs {inputs.shape} / "
                    f"labels {labels.shape} are not [examples, seq_len={self.seq_len}]"
                )
            if len(inputs) == 0:
                raise DataError(f"{self.dir}: puzzle {k} of group {len(self._group_indices) - 1} has no examples")
            for arr in (inputs, labels):
                if arr.dtype.kind not in "uib":
                    raise DataError(f"{self.dir}: token arrays must be integers, got {arr.dtype}")
            if int(identifier) < 0:
                raise DataError(f"{self.dir}: negative puzzle identifier {identifier}")
            ids.append(int(identifier))
            counts.append(len(inputs))
            ins.append(inputs)
            labs.append(labels)
        for name, parts in (("inputs", ins), ("labels", labs)):
            block = np.concatenate(parts) if len(parts) > 1 else parts[0]
            lo, hi = int(block.min()), int(block.max())
            if lo < 0 or hi > 255:
                raise DataError(f"{self.dir}: {name} token ids must be in 0..255, got {lo}..{hi}")
            self._max_token[name] = max(self._max_token[name], hi)
            self._files[name].write(np.ascontiguousarray(block, dtype=np.uint8).tobytes())
        self._puzzle_ids.extend(ids)
        end = self._puzzle_indices[-1]
        for c in counts:
            end += c
            self._puzzle_indices.append(end)
        self._group_indices.append(len(self._puzzle_ids))

    def abort(self) -> None:
        """Drop everything written so far (only this writer's temporary files)."""
        if self._closed:
            return
        self._closed = True
        for f in self._files.values():
            f.close()
        for path in self._tmp.values():
            path.unlink(missing_ok=True)

    def close(
        self,
        *,
        vocab_size: int,
        num_puzzle_identifiers: int,
        pad_id: int = 0,
        ignore_label_id: int | None = 0,
        blank_identifier_id: int = 0,
    ) -> DatasetMetadata:
        if self._closed:
            raise DataError(f"{self.dir}: writer already closed")
        n_examples, n_puzzles = self.num_examples, len(self._puzzle_ids)
        problems = []
        for name, hi in self._max_token.items():
            if hi >= vocab_size:
                problems.append(f"{name} hold token id {hi} >= vocab_size {vocab_size}")
        if n_puzzles and max(self._puzzle_ids) >= num_puzzle_identifiers:
            problems.append(
                f"puzzle identifier {max(self._puzzle_ids)} >= num_puzzle_identifiers {num_puzzle_identifiers}"
            )
        if not 0 <= pad_id < vocab_size:
            problems.append(f"pad_id {pad_id} outside 0..{vocab_size - 1}")
        if not 0 <= blank_identifier_id < num_puzzle_identifiers:
            problems.append(f"blank_identifier_id {blank_identifier_id} outside 0..{num_puzzle_identifiers - 1}")
        if n_examples > _INT32_MAX:
            problems.append(f"{n_examples} examples do not fit the official int32 offsets")
        if problems:
            self.abort()
            raise DataError(f"{self.dir}: " + "; ".join(problems))
        meta = DatasetMetadata(
            pad_id=pad_id,
            ignore_label_id=ignore_label_id,
            blank_identifier_id=blank_identifier_id,
            vocab_size=vocab_size,
            seq_len=self.seq_len,
            num_puzzle_identifiers=num_puzzle_identifiers,
            total_groups=len(self._group_indices) - 1,
            mean_puzzle_examples=n_examples / max(n_puzzles, 1),
            total_puzzles=n_puzzles,
            sets=[SET_NAME],
        )
        try:
            for f in self._files.values():
                f.seek(0)
                f.write(_npy_header(np.dtype(np.uint8), (n_examples, self.seq_len)))
                f.flush()
                os.fsync(f.fileno())
                f.close()
            small = {
                "puzzle_identifiers": self._puzzle_ids,
                "puzzle_indices": self._puzzle_indices,
                "group_indices": self._group_indices,
            }
            for name, values in small.items():
                with self._tmp[name].open("wb") as f:
                    np.save(f, np.asarray(values, dtype=np.int32))
        except BaseException:
            self.abort()
            raise
        self._closed = True
        meta_path = self.dir / "dataset.json"
        meta_path.unlink(missing_ok=True)  # the old split (if any) stops looking valid before it changes
        (self.dir / SUMS_NAME).unlink(missing_ok=True)
        for name, tmp in self._tmp.items():
            tmp.replace(self.dir / f"{SET_NAME}__{name}.npy")
        tmp = self.dir / "dataset.json.tmp"
        tmp.write_text(json.dumps(meta.model_dump()))
        tmp.replace(meta_path)
        stored = [*self.dir.glob(f"{SET_NAME}__*.npy"), meta_path, self.dir / ROWS_RECIPE]
        write_checksums(self.dir, [p for p in stored if p.is_file()])
        return meta

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


def write_json(path: Path, obj: Any) -> None:
    """Write a JSON file atomically (a temporary file renamed into place): readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def write_identifiers(out_dir: Path, names: list[str]) -> None:
    """`identifiers.json`: identifier id -> name, "<blank>" at 0 (official)."""
    write_json(Path(out_dir) / "identifiers.json", list(names))


def read_identifiers(root: Path) -> list[str]:
    path = Path(root) / "identifiers.json"
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: malformed ({err})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: malformed (expected a JSON list of strings)")
    return names


# -- reading ---------------------------------------------------------------------------------------------


def _read_metadata(path: Path) -> DatasetMetadata:
    if not path.is_file():
        raise DataError(f"{path}: no dataset.json; build one with `trm data ...`")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    try:
        return DatasetMetadata.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        hint = ""
        if isinstance(raw, dict) and "total_puzzles" not in raw:
            hint = " (an HRM-built data set? TRM's format also needs total_puzzles)"
        raise DataError(
            f"{path}: malformed metadata, {where}: {first['msg']} ({err.error_count()} problem(s)){hint}"
        ) from None


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except Exception as err:  # numpy raises ValueError, OSError, EOFError, ... for damaged files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: corrupt .npy file ({msg})") from None


class PuzzleDataset:
    """One split, memory-mapped (`np.load(mmap_mode="r")`, as the official loader does).

    `inputs`, `labels`: [examples, seq_len] memory maps (uint8 in the official format);
    `puzzle_identifiers` int32 [puzzles]; `puzzle_indices` int32 [puzzles + 1]; `group_indices` int32
    [groups + 1] (the index arrays are read into memory). Raises DataError for a missing or unreadable
    split; `check=True` (default) also runs `validate()`.
    """

    def __init__(self, root: Path, split: str, *, check: bool = True):
        self.root, self.split = Path(root), split
        self.dir = self.root / split
        self.metadata = _read_metadata(self.dir / "dataset.json")
        sets = self.metadata.sets
        if len(sets) != 1:
            raise DataError(f"{self.dir / 'dataset.json'}: sets {sets}: exactly one set is supported")
        self.set_name = sets[0]
        recipe = self.dir / ROWS_RECIPE
        if recipe.is_file() and not self.path_of("inputs").exists():
            arrays = {name: _load_array(self.path_of(name)) for name in FIELDS[2:]}
            arrays["inputs"], arrays["labels"] = recipe_rows(recipe)
        else:
            arrays = {name: _load_array(self.path_of(name)) for name in FIELDS}
        self.inputs, self.labels = arrays["inputs"], arrays["labels"]
        for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            arr = arrays[name]
            if arr.ndim != 1 or arr.dtype.kind not in "ui":
                raise DataError(f"{self.path_of(name)}: expected a 1-d integer array, got {arr.dtype} {arr.shape}")
            if len(arr) and (int(arr.max()) > _INT32_MAX or int(arr.min()) < -_INT32_MAX):
                raise DataError(f"{self.path_of(name)}: values do not fit int32")
            setattr(self, name, np.array(arr, dtype=np.int32))
        self._example_ids: np.ndarray | None = None
        if check:
            verify_checksums(self.dir, DataError)
            self.validate()

    def path_of(self, name: str) -> Path:
        return self.dir / f"{self.set_name}__{name}.npy"

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    @property
    def num_puzzles(self) -> int:
        return len(self.puzzle_identifiers)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1

    def _fail(self, name: str, what: str) -> DataError:
        return DataError(f"{self.path_of(name) if name in FIELDS else self.dir / name}: {what}")

    def validate(self) -> None:
        """Shapes, dtypes, CSR offsets, identifier and token ranges (all of them; a full read of the data)."""
        m = self.metadata
        if m.seq_len < 1 or m.vocab_size < 1 or m.num_puzzle_identifiers < 1:
            raise self._fail("dataset.json", "seq_len, vocab_size and num_puzzle_identifiers must be positive")
        if not 0 <= m.pad_id < m.vocab_size:
            raise self._fail("dataset.json", f"pad_id {m.pad_id} outside 0..{m.vocab_size - 1}")
        if not 0 <= m.blank_identifier_id < m.num_puzzle_identifiers:
            raise self._fail(
                "dataset.json", f"blank_identifier_id {m.blank_identifier_id} outside 0..{m.num_puzzle_identifiers - 1}"
            )
        for name, arr in (("inputs", self.inputs), ("labels", self.labels)):
            if arr.ndim != 2 or arr.shape[1] != m.seq_len:
                raise self._fail(name, f"shape {arr.shape} is not [examples, seq_len={m.seq_len}]")
            if arr.dtype.kind not in "ui":
                raise self._fail(name, f"dtype {arr.dtype} is not an integer type (official: uint8)")
        if self.labels.shape != self.inputs.shape:
            raise self._fail("labels", f"shape {self.labels.shape} differs from inputs {self.inputs.shape}")
        pi, gi = self.puzzle_indices, self.group_indices
        n_ex, n_pz = self.num_examples, self.num_puzzles
        if len(pi) != n_pz + 1 or pi[0] != 0 or pi[-1] != n_ex:
            raise self._fail(
                "puzzle_indices",
                f"does not span the {n_ex} examples of {n_pz} puzzles (need [0 .. {n_ex}], "
                f"{n_pz + 1} offsets; got {len(pi)} offsets from {pi[0] if len(pi) else '-'} to "
                f"{pi[-1] if len(pi) else '-'})",
            )
        if len(gi) < 1 or gi[0] != 0 or gi[-1] != n_pz:
            raise self._fail("group_indices", f"does not span the {n_pz} puzzles (need offsets from 0 to {n_pz})")
        for name, offsets in (("puzzle_indices", pi), ("group_indices", gi)):
            back = np.flatnonzero(np.diff(offsets) < 0)
            if len(back):
                k = int(back[0])
                raise self._fail(name, f"offsets go backwards at {k} ({offsets[k]} -> {offsets[k + 1]})")
        empty = np.flatnonzero(np.diff(gi) == 0)
        if len(empty):
            raise self._fail("group_indices", f"group {int(empty[0])} has no puzzles")
        ids = self.puzzle_identifiers
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= m.num_puzzle_identifiers):
            raise self._fail(
                "puzzle_identifiers",
                f"identifiers {int(ids.min())}..{int(ids.max())} outside 0..{m.num_puzzle_identifiers - 1} "
                "(num_puzzle_identifiers in dataset.json)",
            )
        chunk = max(1, _SCAN_BYTES // max(1, m.seq_len * self.inputs.itemsize))
        for name, arr in (("inputs", self.inputs), ("labels", self.labels)):
            if hasattr(arr, "max_token"):  # rows computed from a recipe: its own check bounds every token
                if arr.max_token >= m.vocab_size:
                    raise self._fail(ROWS_RECIPE, f"token ids up to {arr.max_token} >= vocab_size {m.vocab_size}")
                continue
            for start in range(0, len(arr), chunk):
                block = arr[start : start + chunk]
                hi, lo = int(block.max()), int(block.min())
                if hi >= m.vocab_size or lo < 0:
                    bad = int(np.flatnonzero(((block >= m.vocab_size) | (block < 0)).any(axis=1))[0]) + start
                    raise self._fail(
                        name,
                        f"token ids {lo}..{hi} outside 0..{m.vocab_size - 1} = vocab_size - 1 (first at example {bad})",
                    )

    def example_puzzle_ids(self) -> np.ndarray:
        """int32 [examples]: the identifier of every example (via puzzle_indices). Cached."""
        if self._example_ids is None:
            counts = np.diff(self.puzzle_indices)
            self._example_ids = np.repeat(self.puzzle_identifiers, counts).astype(np.int32)
        return self._example_ids

    def __repr__(self) -> str:
        return (
            f"PuzzleDataset({str(self.dir)!r}: {self.num_groups} groups, {self.num_puzzles} puzzles, "
            f"{self.num_examples} examples, seq_len {self.metadata.seq_len}, vocab {self.metadata.vocab_size})"
        )


def load_split(root: Path, split: str) -> PuzzleDataset:
    """Open and validate one split; every problem is a one-line DataError naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data set directory")
    return PuzzleDataset(root, split, check=True)
