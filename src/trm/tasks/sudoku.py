"""Sudoku in sizes 4x4 (2x2 boxes), 6x6 (2x3 boxes) and 9x9 (3x3 boxes): parsing, an exact solver with a
difficulty rating, a generator of unique-solution puzzles, validity-preserving augmentation, rendering and
data-set builders in the official layout.

A grid is a flat uint8 array of size*size cells, 0 for a blank and 1..size for digits. Tokens are the
official ones: token = cell + 1 (0 PAD, 1 blank, 2.. digits), with vocab_size 11 for every size so one
model config fits all of them.

The rating is the number of dead ends met by trm's solver (most-constrained cell first); Sudoku-Extreme's
rating is likewise a backtrack count of a solver (tdoku), so the two measure the same thing, not the same
numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from trm.data import DatasetWriter, write_identifiers
from trm.errors import TRMError

VOCAB_SIZE = 11
BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
BLANKS = ".0_"
IGNORED = " \t\r\n|-+"


class SudokuError(TRMError):
    """A malformed, contradictory or non-unique puzzle."""


def box_shape(size: int) -> tuple[int, int]:
    if size not in BOX_SHAPES:
        raise SudokuError(f"unsupported Sudoku size {size}; trm knows 4x4, 6x6 and 9x9")
    return BOX_SHAPES[size]


def size_from_length(n: int) -> int:
    for size in BOX_SHAPES:
        if size * size == n:
            return size
    raise SudokuError(f"puzzle has {n} cells; a Sudoku needs 16 (4x4), 36 (6x6) or 81 (9x9)")


# -- geometry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    size: int
    row: tuple[int, ...]
    col: tuple[int, ...]
    box: tuple[int, ...]
    full: int


@cache
def _geometry(size: int) -> _Geometry:
    br, bc = box_shape(size)
    cells = range(size * size)
    return _Geometry(
        size,
        tuple(i // size for i in cells),
        tuple(i % size for i in cells),
        tuple((i // size) // br * (size // bc) + (i % size) // bc for i in cells),
        (1 << size) - 1,
    )


_POPCOUNT = [bin(m).count("1") for m in range(1 << 9)]
_DIGITS = [[d + 1 for d in range(9) if m >> d & 1] for m in range(1 << 9)]


# -- parsing and rendering -----------------------------------------------------------------------------------
def parse_puzzle(text: str, size: int | None = None) -> np.ndarray:
    """'.', '0' or '_' are blanks; whitespace and | - + are ignored, so a pretty-printed grid pastes in."""
    chars = [c for c in text if c not in IGNORED]
    size = size or size_from_length(len(chars))
    if len(chars) != size * size:
        raise SudokuError(f"puzzle has {len(chars)} cells; a {size}x{size} Sudoku needs {size * size}")
    cells = np.zeros(size * size, dtype=np.uint8)
    for i, c in enumerate(chars):
        if c in BLANKS:
            continue
        if not c.isdigit():
            raise SudokuError(f"unknown character {c!r} at cell {i + 1}")
        if not 1 <= int(c) <= size:
            raise SudokuError(f"digit {c} at cell {i + 1} is outside 1..{size}")
        cells[i] = int(c)
    check_givens(cells)
    return cells


def check_givens(cells: np.ndarray) -> None:
    """Raise if a digit repeats in a row, column or box."""
    size = size_from_length(len(cells))
    geo = _geometry(size)
    for kind, unit in (("row", geo.row), ("column", geo.col), ("box", geo.box)):
        seen: dict[tuple[int, int], int] = {}
        for i, v in enumerate(cells):
            if v:
                key = (unit[i], int(v))
                if key in seen:
                    raise SudokuError(f"contradictory givens: digit {v} twice in {kind} {unit[i] + 1}")
                seen[key] = i


def format_puzzle(cells: np.ndarray) -> str:
    return "".join(str(int(v)) if v else "." for v in cells)


def _grid_text(symbols: Sequence[str], size: int) -> str:
    br, bc = box_shape(size)
    sep = "-+-".join("-" * (2 * bc - 1) for _ in range(size // bc))
    lines = []
    for r in range(size):
        if r and r % br == 0:
            lines.append(" " + sep)
        row = symbols[r * size : (r + 1) * size]
        lines.append(" " + " | ".join(" ".join(row[c : c + bc]) for c in range(0, size, bc)))
    return "\n".join(lines)


def render(cells: np.ndarray, puzzle: np.ndarray | None = None) -> str:
    """A grid with box separators; with `puzzle`, a line saying how many cells were given and filled in."""
    size = size_from_length(len(cells))
    text = _grid_text([str(int(v)) if v else "." for v in cells], size)
    if puzzle is not None:
        given = int(np.count_nonzero(puzzle))
        text += f"\n({given} givens, {size * size - given} cells filled in)"
    return text


def render_diff(pred: np.ndarray, solution: np.ndarray) -> str:
    """The prediction with every wrong cell shown as x."""
    size = size_from_length(len(pred))
    wrong = np.asarray(pred) != np.asarray(solution)
    text = _grid_text(["x" if w else str(int(v)) for v, w in zip(pred, wrong, strict=True)], size)
    return text + f"\n({int(wrong.sum())} wrong cells)"


def is_valid_solution(solution: np.ndarray, puzzle: np.ndarray | None = None) -> bool:
    """Complete, every row/column/box a permutation of 1..size, and agreeing with the givens."""
    solution = np.asarray(solution)
    try:
        size = size_from_length(len(solution))
    except SudokuError:
        return False
    if solution.min() < 1 or solution.max() > size:
        return False
    geo = _geometry(size)
    for unit in (geo.row, geo.col, geo.box):
        for u in range(size):
            if len(set(solution[np.asarray(unit) == u].tolist())) != size:
                return False
    if puzzle is not None:
        given = np.asarray(puzzle) != 0
        if not np.array_equal(np.asarray(puzzle)[given], solution[given]):
            return False
    return True


# -- solver --------------------------------------------------------------------------------------------------
@dataclass
class SolveResult:
    solutions: list[np.ndarray] = field(default_factory=list)
    backtracks: int = 0


def solve(cells: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None) -> SolveResult:
    """Exact backtracking search (most-constrained cell first) for up to `limit` solutions; `rng` randomises
    the order in which digits are tried (used to make random full grids)."""
    size = size_from_length(len(cells))
    geo = _geometry(size)
    grid = [int(v) for v in cells]
    rows, cols, boxes = [0] * size, [0] * size, [0] * size
    for i, v in enumerate(grid):
        if v:
            bit = 1 << (v - 1)
            if rows[geo.row[i]] & bit or cols[geo.col[i]] & bit or boxes[geo.box[i]] & bit:
                return SolveResult()  # contradictory givens: no solution
            rows[geo.row[i]] |= bit
            cols[geo.col[i]] |= bit
            boxes[geo.box[i]] |= bit
    empties = [i for i, v in enumerate(grid) if not v]
    result = SolveResult()
    full, grow, gcol, gbox = geo.full, geo.row, geo.col, geo.box

    def search(n_left: int) -> bool:
        if n_left == 0:
            result.solutions.append(np.asarray(grid, dtype=np.uint8))
            return len(result.solutions) >= limit
        best, best_mask, best_count = -1, 0, 99
        for i in empties:
            if grid[i]:
                continue
            mask = full & ~(rows[grow[i]] | cols[gcol[i]] | boxes[gbox[i]])
            count = _POPCOUNT[mask]
            if count < best_count:
                best, best_mask, best_count = i, mask, count
                if count <= 1:
                    break
        if best_count == 0:
            result.backtracks += 1
            return False
        r, c, b = grow[best], gcol[best], gbox[best]
        digits = _DIGITS[best_mask]
        if rng is not None and len(digits) > 1:
            digits = [digits[k] for k in rng.permutation(len(digits))]
        for d in digits:
            bit = 1 << (d - 1)
            grid[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            if search(n_left - 1):
                return True
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
        grid[best] = 0
        return False

    search(len(empties))
    return result


def rating(cells: np.ndarray) -> int:
    """Difficulty: dead ends met before the first solution is found."""
    return solve(cells, limit=1).backtracks


def solution_of(cells: np.ndarray) -> np.ndarray:
    """The unique solution, or a SudokuError saying why there is none."""
    check_givens(cells)
    found = solve(cells, limit=2).solutions
    if not found:
        raise SudokuError("puzzle has no solution")
    if len(found) > 1:
        raise SudokuError("puzzle has 2 or more solutions")
    return found[0]


# -- generation and augmentation ----------------------------------------------------------------------------
def random_full_grid(size: int, rng: np.random.Generator) -> np.ndarray:
    return solve(np.zeros(size * size, dtype=np.uint8), limit=1, rng=rng).solutions[0]


def minimal_puzzle(solution: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Remove clues in random order while the solution stays unique: every remaining clue is needed."""
    puzzle = solution.copy()
    for i in rng.permutation(len(puzzle)):
        keep = puzzle[i]
        puzzle[i] = 0
        if len(solve(puzzle, limit=2).solutions) > 1:
            puzzle[i] = keep
    return puzzle


def generate(
    count: int,
    size: int,
    rng: np.random.Generator,
    min_rating: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """`count` minimal unique-solution puzzles as (puzzle, solution, rating), deterministic for the rng."""
    box_shape(size)
    out = []
    while len(out) < count:
        solution = random_full_grid(size, rng)
        puzzle = minimal_puzzle(solution, rng)
        score = rating(puzzle)
        if score >= min_rating:
            out.append((puzzle, solution, score))
            if progress is not None:
                progress(1)
    return out


def augment(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digit relabelling, transpose (square boxes only), band/stack and row/column-within-band permutations."""
    size = size_from_length(len(puzzle))
    br, bc = box_shape(size)
    digits = np.concatenate([[0], rng.permutation(size) + 1]).astype(np.uint8)
    transpose = br == bc and rng.random() < 0.5
    rows = np.concatenate([b * br + rng.permutation(br) for b in rng.permutation(size // br)])
    cols = np.concatenate([s * bc + rng.permutation(bc) for s in rng.permutation(size // bc)])

    def apply(cells: np.ndarray) -> np.ndarray:
        g = cells.reshape(size, size)
        if transpose:
            g = g.T
        return digits[g[rows][:, cols].reshape(-1)]

    return apply(puzzle), apply(solution)


# -- sources -------------------------------------------------------------------------------------------------
def read_csv(
    path: Path,
    min_rating: int | None = None,
    subsample: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Sudoku-Extreme CSV: `source,question,answer,rating`; every row is checked."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as err:
        raise SudokuError(f"{path}: cannot read ({err.strerror})") from None
    rows = []
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:4]] != ["source", "question", "answer", "rating"]:
            raise SudokuError(f"{path}: expected the header source,question,answer,rating")
        for line, row in enumerate(reader, start=2):
            if len(row) < 4:
                raise SudokuError(f"{path}: line {line}: expected 4 columns")
            try:
                puzzle, answer, score = parse_puzzle(row[1]), parse_puzzle(row[2]), int(row[3])
            except (SudokuError, ValueError) as err:
                raise SudokuError(f"{path}: line {line}: {err}") from None
            if not is_valid_solution(answer, puzzle):
                raise SudokuError(f"{path}: line {line}: the answer does not solve the question")
            if min_rating is None or score >= min_rating:
                rows.append((puzzle, answer, score))
    if subsample is not None and subsample < len(rows):
        rng = rng or np.random.default_rng(0)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), subsample, replace=False))]
    return rows


def read_puzzle_list(path: Path) -> list[str]:
    """One puzzle per line (first token); `#` comments and blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise SudokuError(f"{path}: cannot read ({err.strerror})") from None
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def download_sudoku_extreme(split: str, cache_dir: Path | None = None) -> Path:
    """Fetch `train.csv` or `test.csv` of the Hugging Face data set sapientinc/sudoku-extreme."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise SudokuError("--hf needs huggingface_hub: pip install 'trm[hf]'") from None
    try:
        return Path(
            hf_hub_download(
                repo_id="sapientinc/sudoku-extreme",
                filename=f"{split}.csv",
                repo_type="dataset",
                cache_dir=cache_dir,
            )
        )
    except Exception as err:  # network, auth and hub errors all mean the same to the user
        raise SudokuError(f"cannot download sapientinc/sudoku-extreme {split}.csv: {err}") from None


# -- data sets -----------------------------------------------------------------------------------------------
def encode(cells: np.ndarray) -> np.ndarray:
    return np.asarray(cells, dtype=np.uint8) + 1


def decode(tokens: np.ndarray, size: int) -> np.ndarray:
    return np.clip(np.asarray(tokens, dtype=np.int64) - 1, 0, size).astype(np.uint8)


def _checked(puzzle: np.ndarray, solution: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not is_valid_solution(solution, puzzle):
        raise SudokuError(f"{what}: the solution does not solve the puzzle")
    return encode(puzzle), encode(solution)


def build_dataset(
    out_dir: Path,
    train: Sequence[tuple[np.ndarray, np.ndarray]],
    test: Sequence[tuple[np.ndarray, np.ndarray]],
    aug: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Each training puzzle is a group: the original plus `aug` augmented copies, one example each, all
    with the blank identifier 0 (official Sudoku). The test split is not augmented."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    sizes = {len(p) for p, _ in [*train, *test]}
    if len(sizes) != 1:
        raise SudokuError(f"puzzles of several sizes in one data set: {sorted(sizes)} cells")
    seq_len = sizes.pop()
    size = size_from_length(seq_len)
    rng = np.random.default_rng(seed)
    summary: dict = {"out": str(out_dir), "size": size}
    for split, pairs, n_aug in (("train", train, aug), ("test", test, 0)):
        writer = DatasetWriter(out_dir, split, seq_len)
        for k, (puzzle, solution) in enumerate(
            tqdm(pairs, desc=f"writing {split}", unit="group", disable=not progress or len(pairs) < 1000)
        ):
            group = [(0, *_checked(puzzle, solution, f"{split} puzzle {k + 1}"))]
            for _ in range(n_aug):
                p, s = augment(puzzle, solution, rng)
                group.append((0, *_checked(p, s, f"augmentation of {split} puzzle {k + 1}")))
            writer.add_group(group)
        meta = writer.close(vocab_size=VOCAB_SIZE, num_puzzle_identifiers=1, ignore_label_id=0)
        summary[split] = {
            "groups": meta.total_groups,
            "puzzles": meta.total_puzzles,
            "examples": int(meta.total_puzzles * meta.mean_puzzle_examples),
        }
    write_identifiers(out_dir, ["<blank>"])
    (out_dir / "task.json").write_text(json.dumps({"task": "sudoku", "size": size}) + "\n")
    return summary


class SudokuTask:
    """The Sudoku task as the CLI and inference engine see it."""

    name = "sudoku"

    def __init__(self, size: int):
        box_shape(size)
        self.size = size

    def parse(self, text: str) -> np.ndarray:
        return parse_puzzle(text, self.size)

    def encode(self, puzzle: np.ndarray) -> np.ndarray:
        return encode(puzzle)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return decode(tokens, self.size)

    def is_solution(self, answer: np.ndarray, puzzle: np.ndarray) -> bool:
        return is_valid_solution(answer, puzzle)

    def format(self, grid: np.ndarray) -> str:
        return format_puzzle(grid)

    def render(self, grid: np.ndarray, puzzle: np.ndarray | None = None) -> str:
        return render(grid, puzzle)
