"""Sudoku in sizes 4x4 (2x2 boxes), 6x6 (2 rows x 3 columns boxes) and 9x9 (3x3 boxes): parsing, an exact
solver with a difficulty rating, a generator of unique-solution puzzles, validity-preserving augmentation,
rendering and the data-set builder in the official layout.

A grid is a flat uint8 array of size*size cells, 0 for a blank and 1..size for digits.

Tokens are the official TRM ones: token = cell + 1, so 0 is PAD (never written), 1 a blank and 2..size+1
the digits; labels are the full solution's tokens. `VOCAB_SIZE` is 11 for every size (what a 9x9 needs),
so one model config (and one checkpoint) fits all sizes; smaller sizes simply never use the top tokens.

The solver and generator live in `trm.tasks.sudoku_solver` (re-exported here). `rating` counts the solver's
dead ends before the first solution; Sudoku-Extreme's `rating` column is likewise
the backtrack count of a propagating solver (tdoku), so the two measure the same thing, not the same
numbers.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from trm.data import DatasetWriter, write_identifiers, write_json
from trm.tasks.base import download_hf_csv
from trm.tasks.sudoku_solver import (  # noqa: F401 - re-exported: trm.tasks.sudoku is the family's one entry point
    BOX_SHAPES,
    SolveResult,
    SudokuError,
    as_grid,
    box_shape,
    check_givens,
    generate,
    generate_distinct,
    geometry,
    minimal_puzzle,
    random_full_grid,
    rating,
    size_from_length,
    solution_of,
    solve,
)

VOCAB_SIZE = 11  # PAD + blank + 9 digits: the 9x9 vocabulary, shared by every size
BLANKS = ".0_"
IGNORED = " \t\r\n|-+*"  # layout characters of pretty-printed grids, including `render`'s filled-in marker
FILLED_MARK = "*"
_NOTE = re.compile(r"\([^()]*\)")  # `render`'s "(26 givens, ...)" line


# -- parsing and rendering -----------------------------------------------------------------------------------
def parse_puzzle(text: str, size: int | None = None) -> np.ndarray:
    """A grid from text: '.', '0' or '_' are blanks; whitespace, '|', '-', '+', '*' and (parenthesised
    notes) are ignored so a pretty-printed grid, `render`'s output included, pastes in. The size follows
    from the cell count."""
    cells = _parse_cells(text, size)
    check_givens(cells)
    return cells


def _parse_cells(text: str, size: int | None) -> np.ndarray:
    chars = [c for c in _NOTE.sub("", text) if c not in IGNORED]
    if size is None:
        size = size_from_length(len(chars))
    box_shape(size)
    if len(chars) != size * size:
        raise SudokuError(f"puzzle has {len(chars)} cells; a {size}x{size} Sudoku needs {size * size}")
    cells = np.zeros(size * size, dtype=np.uint8)
    for i, c in enumerate(chars):
        if c in BLANKS:
            continue
        if not ("0" <= c <= "9"):
            raise SudokuError(f"unknown character {c!r} at cell {i + 1}")
        if int(c) > size:
            raise SudokuError(f"digit {c} at cell {i + 1} is outside 1..{size} of a {size}x{size} Sudoku")
        cells[i] = int(c)
    return cells


def format_puzzle(cells: np.ndarray) -> str:
    """One line, '.' for blanks: the format `parse_puzzle` and the CLI read."""
    return "".join(str(int(v)) if v else "." for v in cells)


def _grid_text(symbols: Sequence[str], size: int) -> str:
    """Rows of equal-width symbols with '|' between box columns and '-+-' lines between box rows."""
    br, bc = box_shape(size)
    width = len(symbols[0])
    stack_text = [" ".join(symbols[r * size + c : r * size + c + bc]) for r in range(size) for c in range(0, size, bc)]
    sep = "-+-".join("-" * (bc * (width + 1) - 1) for _ in range(size // bc))
    lines = []
    for r in range(size):
        if r and r % br == 0:
            lines.append(sep)
        lines.append(" | ".join(stack_text[r * (size // bc) : (r + 1) * (size // bc)]).rstrip())
    return "\n".join(lines)


def render(cells: np.ndarray, puzzle: np.ndarray | None = None) -> str:
    """A multi-line grid with box separators. With `puzzle`, givens are plain and digits filled in are
    marked '*' (no colour needed, and the text still pastes back into `parse_puzzle`); a given that the
    grid contradicts is marked '!'."""
    cells = as_grid(cells)
    size = size_from_length(len(cells))
    if puzzle is None:
        return _grid_text([str(int(v)) if v else "." for v in cells], size)
    puzzle = as_grid(puzzle)
    if len(puzzle) != len(cells):
        raise SudokuError(f"grid has {len(cells)} cells but the puzzle {len(puzzle)}")
    symbols = []
    for v, g in zip(cells.tolist(), puzzle.tolist(), strict=True):
        digit = str(v) if v else "."
        symbols.append(digit + (" " if g == v else "!" if g else FILLED_MARK if v else " "))
    given = int(np.count_nonzero(puzzle))
    filled = int(np.count_nonzero(cells[puzzle == 0]))
    note = f"({given} givens, {filled} filled in marked {FILLED_MARK}"
    changed = int(np.count_nonzero((puzzle != 0) & (cells != puzzle)))
    note += f", {changed} given{'s' * (changed != 1)} changed marked !)" if changed else ")"
    return _grid_text(symbols, size) + "\n" + note


def render_diff(pred: np.ndarray, solution: np.ndarray) -> str:
    """The prediction as a grid, each cell that differs from `solution` marked 'x' after the digit."""
    pred, solution = as_grid(pred), as_grid(solution)
    if len(pred) != len(solution):
        raise SudokuError(f"prediction has {len(pred)} cells but the solution {len(solution)}")
    size = size_from_length(len(pred))
    wrong = pred != solution
    symbols = [(str(v) if v else ".") + ("x" if w else " ") for v, w in zip(pred.tolist(), wrong.tolist(), strict=True)]
    return _grid_text(symbols, size) + f"\n({int(wrong.sum())} of {size * size} cells wrong, marked x)"


def _valid_rows(solutions: np.ndarray, puzzles: np.ndarray | None, size: int) -> np.ndarray:
    """Vectorised validity of many solutions [N, size*size] (and agreement with puzzles): bool [N]."""
    solutions = np.asarray(solutions, dtype=np.int64)
    ok = ((solutions >= 1) & (solutions <= size)).all(axis=1)
    masks = np.left_shift(1, np.clip(solutions, 1, size) - 1)
    seen = np.bitwise_or.reduce(masks[:, geometry(size).unit_cells], axis=2)  # [N, units]
    ok &= (seen == (1 << size) - 1).all(axis=1)  # size cells cover size digits: a permutation
    if puzzles is not None:
        puzzles = np.asarray(puzzles, dtype=np.int64)
        ok &= ((puzzles == 0) | (puzzles == solutions)).all(axis=1)
    return ok


def is_valid_solution(solution: np.ndarray, puzzle: np.ndarray | None = None) -> bool:
    """Complete, each row/column/box a permutation of 1..size, and (with `puzzle`) true to the givens."""
    solution = np.asarray(solution).reshape(-1)
    try:
        size = size_from_length(len(solution))
    except SudokuError:
        return False
    if puzzle is not None:
        puzzle = np.asarray(puzzle).reshape(-1)
        if len(puzzle) != len(solution):
            return False
        puzzle = puzzle[None]
    return bool(_valid_rows(solution[None], puzzle, size)[0])


# -- augmentation --------------------------------------------------------------------------------------------
def augment(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random validity-preserving transform of a puzzle and its solution (official Sudoku-Extreme
    recipe, generalised): digit relabelling, transpose with p=0.5 (square boxes only: transposing a 6x6
    turns its 2x3 boxes into 3x2 ones), band order, row order within each band, stack order, column order
    within each stack."""
    puzzle, solution = as_grid(puzzle), as_grid(solution)
    size = size_from_length(len(puzzle))
    br, bc = box_shape(size)
    digits = np.concatenate([[0], rng.permutation(size) + 1]).astype(np.uint8)  # blank stays blank
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
_CSV_HEADER = ["source", "question", "answer", "rating"]
_CSV_CHUNK = 100_000  # rows checked per vectorised batch


def _csv_row(path: Path, line: int, row: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """One row checked cell by cell; every problem names the line."""
    if len(row) < 4:
        raise SudokuError(f"{path}: line {line}: expected 4 columns (source,question,answer,rating), got {len(row)}")
    grids = []
    for column, text in (("question", row[1]), ("answer", row[2])):
        try:
            grids.append(_parse_cells(text, None))
        except SudokuError as err:
            raise SudokuError(f"{path}: line {line}: {column}: {err}") from None
    puzzle, answer = grids
    try:
        score = int(row[3])
    except ValueError:
        raise SudokuError(f"{path}: line {line}: rating {row[3]!r} is not an integer") from None
    if not is_valid_solution(answer, puzzle):
        raise SudokuError(f"{path}: line {line}: the answer does not solve the question")
    return puzzle, answer, score


def _check_csv_chunk(path: Path, chunk: list[tuple[int, list[str]]]) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Rows of the common shape (81-character '.'/digit question, digit answer) are checked in one
    vectorised pass; anything else goes through `_csv_row`, which names the problem and its line."""
    fast = [k for k, (_, row) in enumerate(chunk) if len(row) >= 4 and len(row[1]) == 81 and len(row[2]) == 81]
    accepted: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    if fast:
        q = np.frombuffer("".join(chunk[k][1][1] for k in fast).encode("latin-1", "replace"), np.uint8)
        a = np.frombuffer("".join(chunk[k][1][2] for k in fast).encode("latin-1", "replace"), np.uint8)
        q, a = q.reshape(-1, 81), a.reshape(-1, 81)
        q_ok = ((q == ord(".")) | ((q >= ord("0")) & (q <= ord("9")))).all(axis=1)
        puzzles = np.where(q == ord("."), 0, q.astype(np.int16) - ord("0")).clip(0, 9).astype(np.uint8)
        answers = (a.astype(np.int16) - ord("0")).clip(0, 10).astype(np.uint8)
        ok = q_ok & _valid_rows(answers, puzzles, 9)
        for j in np.flatnonzero(ok).tolist():
            line, row = chunk[fast[j]]
            try:
                score = int(row[3])
            except ValueError:
                raise SudokuError(f"{path}: line {line}: rating {row[3]!r} is not an integer") from None
            accepted[fast[j]] = (puzzles[j].copy(), answers[j].copy(), score)
    out = []
    for k, (line, row) in enumerate(chunk):
        out.append(accepted[k] if k in accepted else _csv_row(path, line, row))
    return out


def read_csv(
    path: Path,
    min_rating: int | None = None,
    subsample: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Sudoku-Extreme's CSV (`source,question,answer,rating`, '.' blanks) as (puzzle, solution, rating).

    Every row is validated (the answer must be a valid solution of the question; a bad row raises naming
    its line), then rows below `min_rating` are dropped and `subsample` of the rest drawn with `rng`
    (default seed 0), in file order."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise SudokuError(f"{path}: cannot read ({err.strerror})") from None
    rows: list[tuple[np.ndarray, np.ndarray, int]] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:4]] != _CSV_HEADER:
                raise SudokuError(f"{path}: line 1: expected the header source,question,answer,rating")
            chunk: list[tuple[int, list[str]]] = []
            for row in reader:
                if row:
                    chunk.append((reader.line_num, row))
                if len(chunk) >= _CSV_CHUNK:
                    rows.extend(r for r in _check_csv_chunk(path, chunk) if min_rating is None or r[2] >= min_rating)
                    chunk = []
            rows.extend(r for r in _check_csv_chunk(path, chunk) if min_rating is None or r[2] >= min_rating)
        except (csv.Error, UnicodeDecodeError) as err:
            raise SudokuError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
    if subsample is not None and subsample < len(rows):
        rng = rng if rng is not None else np.random.default_rng(0)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), subsample, replace=False).tolist())]
    return rows


def read_puzzle_list(path: Path) -> list[str]:
    """Puzzle strings, one per line (its first whitespace-separated token); `#` comments and blank lines are
    skipped. Parsing is left to the caller so it can name the line of a bad puzzle."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise SudokuError(f"{path}: cannot read ({reason})") from None
    return split_puzzles(lines)


def split_puzzles(lines: Sequence[str]) -> list[str]:
    """The first word of every line that is neither blank nor a `#` comment."""
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def download_sudoku_extreme(split: str, cache_dir: Path | None = None) -> Path:
    """`train.csv` or `test.csv` of the Hugging Face data set sapientinc/sudoku-extreme (hub-cached)."""
    return download_hf_csv("sapientinc/sudoku-extreme", split, SudokuError, cache_dir)


# -- data sets -----------------------------------------------------------------------------------------------
def encode(cells: np.ndarray) -> np.ndarray:
    """Official tokens: cell + 1 (1 blank, 2.. digits; 0 is PAD)."""
    return np.asarray(cells, dtype=np.uint8) + 1


def decode(tokens: np.ndarray, size: int) -> np.ndarray:
    """Tokens back to cells; PAD and out-of-range predictions become blanks / are clipped to 0..size."""
    return np.clip(np.asarray(tokens, dtype=np.int64) - 1, 0, size).astype(np.uint8)


def _checked(puzzle: np.ndarray, solution: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not is_valid_solution(solution, puzzle):
        raise SudokuError(f"{what}: the solution does not solve the puzzle")
    return encode(puzzle)[None], encode(solution)[None]


def build_dataset(
    out_dir: Path,
    train: Sequence[tuple[np.ndarray, np.ndarray]],
    test: Sequence[tuple[np.ndarray, np.ndarray]],
    aug: int = 0,
    seed: int = 0,
    progress: Callable[[int], None] | bool | None = None,
) -> dict:
    """Write the official layout: each training puzzle is a group holding the original plus `aug` augmented
    copies, one example each, all with the blank identifier 0 (official Sudoku: num_puzzle_identifiers 1).
    The test split has one group per puzzle and no augmentation. Every example is checked before it is
    written. Also writes identifiers.json and task.json ({"task": "sudoku", "size": ...}).

    `progress`: a callable gets the number of groups written; None shows a bar for splits of 1,000 or more
    groups; False is silent. Returns {"out", "size", "train": counts, "test": counts}."""
    out_dir = Path(out_dir)
    if aug < 0:
        raise SudokuError(f"aug must be >= 0, got {aug}")
    lengths = {len(pair[0]) for pair in (*train, *test)} | {len(pair[1]) for pair in (*train, *test)}
    if not lengths:
        raise SudokuError("no puzzles to write")
    if len(lengths) != 1:
        raise SudokuError(f"puzzles of several sizes in one data set: {sorted(lengths)} cells")
    seq_len = lengths.pop()
    size = size_from_length(seq_len)
    rng = np.random.default_rng(seed)
    summary: dict = {"out": str(out_dir), "size": size}
    for split, pairs, n_aug in (("train", train, aug), ("test", test, 0)):
        bar = None
        if progress is None and len(pairs) >= 1000:
            from trm.progress import progress

            bar = progress(total=len(pairs), desc=f"writing {split}", unit="group")
        with DatasetWriter(out_dir, split, seq_len) as writer:
            for k, pair in enumerate(pairs):
                puzzle, solution = as_grid(pair[0]), as_grid(pair[1])
                group = [(0, *_checked(puzzle, solution, f"{split} puzzle {k + 1}"))]
                for _ in range(n_aug):
                    p, s = augment(puzzle, solution, rng)
                    group.append((0, *_checked(p, s, f"augmentation of {split} puzzle {k + 1}")))
                writer.add_group(group)
                if bar is not None:
                    bar.update(1)
                elif callable(progress):
                    progress(1)
            meta = writer.close(vocab_size=VOCAB_SIZE, num_puzzle_identifiers=1, pad_id=0, ignore_label_id=0)
        if bar is not None:
            bar.close()
        summary[split] = {
            "groups": meta.total_groups,
            "puzzles": meta.total_puzzles,
            "examples": len(pairs) * (n_aug + 1),
        }
    write_identifiers(out_dir, ["<blank>"])
    write_json(out_dir / "task.json", {"task": "sudoku", "size": size})
    return summary


class SudokuTask:
    """The Sudoku task of one size, as the CLI and inference engine see it (trm.tasks.base.Task)."""

    name = "sudoku"
    colours = ("#DDDDDD", *["#FFFFFF"] * 9)  # blank cells grey
    symbols = " 123456789"
    checkable = True

    def __init__(self, size: int):
        box_shape(size)
        self.size = size

    def split(self, text: str) -> list[str]:
        """One puzzle per line (first word); `#` comments and blank lines skipped."""
        return split_puzzles(text.splitlines())

    def parse(self, text: str) -> np.ndarray:
        return parse_puzzle(text, self.size)

    def encode(self, puzzle: np.ndarray) -> np.ndarray:
        return encode(puzzle)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return decode(tokens, self.size)

    def is_solution(self, answer: np.ndarray, puzzle: np.ndarray) -> bool:
        return is_valid_solution(answer, puzzle)

    def check_tokens(self, preds: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Vectorised: each predicted grid [B, L] satisfies every constraint and keeps its input's givens."""
        preds, inputs = np.asarray(preds, dtype=np.int64) - 1, np.asarray(inputs, dtype=np.int64) - 1
        return _valid_rows(preds, inputs, self.size)

    def format(self, grid: np.ndarray) -> str:
        return format_puzzle(grid)

    def render(self, grid: np.ndarray, puzzle: np.ndarray | None = None) -> str:
        return render(grid, puzzle)

    def render_diff(self, pred: np.ndarray, truth: np.ndarray, question: np.ndarray | None = None) -> str:
        return render_diff(pred, truth)
