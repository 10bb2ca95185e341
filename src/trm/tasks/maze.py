"""Mazes (the Maze-Hard task): parsing, rendering, the Maze-Hard CSV reader and the data-set builder in the
official layout; the paths, the checker and the generator live in `trm.tasks.maze_paths` (re-exported here).

A maze is a square N x N uint8 grid of the official codes, which are also the tokens (charset "# SGo"):
1 '#' wall, 2 ' ' open, 3 'S' start, 4 'G' goal, 5 'o' path; 0 is PAD (never written). `VOCAB_SIZE` is 6. A
question holds exactly one S and one G and no 'o'; its answer is the question with the cells of one shortest
4-neighbour path from S to G (S and G excluded) marked 'o'. Maze-Hard (HF sapientinc/maze-30x30-hard-1k) is
30x30 with shortest paths longer than 110 steps; its official builder would apply the 8 dihedral transforms
with `aug` but its README command does not pass the flag, so its data is not augmented.

Path lengths are counted in moves: a path of L moves has L - 1 'o' cells.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from trm.data import DatasetWriter, write_identifiers, write_json
from trm.tasks.base import download_hf_csv
from trm.tasks.maze_paths import (  # noqa: F401 - re-exported: trm.tasks.maze is the family's one entry point
    CHARSET,
    GOAL,
    OPEN,
    PAD,
    PATH,
    START,
    WALL,
    MazeError,
    as_grid,
    check_maze,
    dihedral,
    distances,
    endpoints,
    generate,
    is_valid_shortest_path,
    label,
    question_of,
    score,
    shortest_path,
    size_from_length,
)

VOCAB_SIZE = 6  # PAD + the five characters
OPEN_ALIAS = "."  # accepted for ' ' by `parse_maze`, and written by `MazeTask.format` (one shell-safe token)
HF_REPO = "sapientinc/maze-30x30-hard-1k"
HARD_SIZE, HARD_MIN_PATH = 30, 110

_CODE = np.zeros(256, dtype=np.uint8)  # byte -> code, 0 = not a maze character
for _k, _ch in enumerate(CHARSET):
    _CODE[ord(_ch)] = _k + 1
_CODE[ord(OPEN_ALIAS)] = OPEN
_CHARS = np.frombuffer(("?" + CHARSET).encode(), dtype=np.uint8)  # code -> byte, '?' for anything unknown


# -- parsing and rendering -----------------------------------------------------------------------------------
def _codes(text: str, size: int, row: int | None) -> np.ndarray:
    """Codes of one line of maze characters; a bad character is named with its row and column."""
    raw = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    codes = _CODE[np.minimum(raw, 255)]
    codes[raw > 255] = 0
    bad = np.flatnonzero(codes == 0)
    if len(bad):
        i = int(bad[0])
        r, c = (row, i) if row is not None else divmod(i, size)
        raise MazeError(
            f"unknown character {text[i]!r} at row {r + 1}, column {c + 1}; a maze uses {CHARSET!r} "
            f"('#' wall, ' ' or '{OPEN_ALIAS}' open, S start, G goal, o path)"
        )
    return codes


def parse_maze(text: str, size: int | None = None, check: bool = True) -> np.ndarray:
    """A grid from text: one line of N*N characters, or N lines of N characters (lines that an editor
    shortened by stripping trailing spaces are padded back with open cells; lines starting with '(' are
    notes, such as `render`'s, and skipped, as are empty lines before and after the maze). Characters:
    '#' wall, ' ' (or '.') open, 'S', 'G', 'o' path. With `check` (default) the maze must have exactly one
    S and one G joined by a path."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    lines = [ln for ln in lines if not ln.startswith("(")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise MazeError("empty maze")
    if len(lines) == 1:
        n = len(lines[0])
        if size is None:
            size = size_from_length(n)
        elif n != size * size:
            raise MazeError(f"maze has {n} cells; a {size}x{size} maze needs {size * size}")
        grid = _codes(lines[0], size, None).reshape(size, size)
    else:
        if size is None:
            size = len(lines)
        if len(lines) != size:
            raise MazeError(f"maze has {len(lines)} rows; a {size}x{size} maze needs {size}")
        rows = []
        for r, ln in enumerate(lines):
            if len(ln) > size:
                raise MazeError(f"row {r + 1} of the maze has {len(ln)} cells; a {size}x{size} maze needs {size}")
            rows.append(_codes(ln.ljust(size), size, r))
        grid = np.stack(rows)
    size_from_length(grid.size)
    return check_maze(grid) if check else as_grid(grid)


def format_maze(grid: np.ndarray, open_char: str = " ") -> str:
    """One line of N*N characters (the Maze-Hard CSV format); `open_char='.'` gives a shell-safe token."""
    text = _CHARS[as_grid(grid).reshape(-1)].tobytes().decode()
    return text if open_char == " " else text.replace(" ", open_char)


def _rows(grid: np.ndarray) -> list[str]:
    return [_CHARS[row].tobytes().decode() for row in grid]


def describe(grid: np.ndarray, question: np.ndarray | None = None) -> str:
    """A one-line note on a grid: its path marks, and (with `question`) whether they are a shortest path."""
    grid = as_grid(grid)
    marks = int(np.count_nonzero(grid == PATH))
    if question is None:
        return f"({marks} path cells marked o)"
    q = question_of(question)
    best = shortest_path(q)
    shortest = "no path" if best is None else f"shortest path {len(best) - 1} moves"
    verdict = "a valid shortest path" if is_valid_shortest_path(grid, q) else "NOT a valid shortest path"
    return f"({marks} path cells marked o, {verdict}; {shortest})"


def render(grid: np.ndarray, question: np.ndarray | None = None) -> str:
    """The maze as N lines of its characters, then a note in parentheses (with `question`: whether the
    marked cells form a shortest path). The text pastes back into `parse_maze`."""
    grid = as_grid(grid)
    return "\n".join(_rows(grid)) + "\n" + describe(grid, question)


def render_diff(pred: np.ndarray, truth: np.ndarray) -> str:
    """The prediction, each cell that differs from `truth` followed by 'x' (two characters per cell), and a
    note that also says whether the prediction is a shortest path all the same (a maze may have several)."""
    pred, truth = as_grid(pred), as_grid(truth)
    if pred.shape != truth.shape:
        raise MazeError(
            f"prediction is {pred.shape[0]}x{pred.shape[1]} but the answer {truth.shape[0]}x{truth.shape[1]}"
        )
    wrong = pred != truth
    lines = []
    for row, bad in zip(_rows(pred), wrong, strict=True):
        lines.append("".join(ch + ("x" if w else " ") for ch, w in zip(row, bad.tolist(), strict=True)).rstrip())
    valid = is_valid_shortest_path(pred, question_of(truth))
    note = f"({int(wrong.sum())} of {pred.size} cells differ from the answer, marked x; "
    note += "a valid shortest path)" if valid else "not a valid shortest path)"
    return "\n".join(lines) + "\n" + note


# -- sources -------------------------------------------------------------------------------------------------
_CSV_HEADER = ["source", "question", "answer", "rating"]


def _rating(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def read_csv(
    path: Path, subsample: int | None = None, rng: np.random.Generator | None = None
) -> list[tuple[np.ndarray, np.ndarray, int | float]]:
    """Maze-Hard's CSV (`source,question,answer,rating`, each maze one line of N*N characters of "# SGo") as
    (question, answer, rating). Every row is checked: the question has one S, one G, no 'o' and a path, the
    answer is a valid shortest path of it, all mazes have one size; a bad row raises MazeError naming its
    line. `subsample` rows are then drawn with `rng` (default seed 0), in file order."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as err:
        raise MazeError(f"{path}: cannot read ({err.strerror})") from None
    rows: list[tuple[np.ndarray, np.ndarray, int | float]] = []
    size = None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:4]] != _CSV_HEADER:
                raise MazeError(f"{path}: line 1: expected the header source,question,answer,rating")
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                if len(row) < 4:
                    raise MazeError(f"{path}: line {line}: expected 4 columns (source,question,answer,rating)")
                if "\n" in row[1] or "\n" in row[2]:
                    raise MazeError(f"{path}: line {line}: mazes must be one line of characters")
                grids = []
                for column, text in (("question", row[1]), ("answer", row[2])):
                    try:
                        grids.append(parse_maze(text, size, check=False))
                    except MazeError as err:
                        raise MazeError(f"{path}: line {line}: {column}: {err}") from None
                question, answer = grids
                if size is None:
                    size = question.shape[0]
                if (question == PATH).any():
                    raise MazeError(f"{path}: line {line}: question: has path marks 'o'")
                try:
                    check_maze(question)
                except MazeError as err:
                    raise MazeError(f"{path}: line {line}: question: {err}") from None
                if not is_valid_shortest_path(answer, question):
                    raise MazeError(f"{path}: line {line}: the answer is not a shortest path of the question")
                try:
                    rating = _rating(row[3])
                except ValueError:
                    raise MazeError(f"{path}: line {line}: rating {row[3]!r} is not a number") from None
                rows.append((question, answer, rating))
        except (csv.Error, UnicodeDecodeError) as err:
            raise MazeError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
    if subsample is not None and subsample < len(rows):
        rng = rng if rng is not None else np.random.default_rng(0)
        rows = [rows[i] for i in sorted(rng.choice(len(rows), subsample, replace=False).tolist())]
    return rows


def download_maze_hard(split: str, cache_dir: Path | None = None) -> Path:
    """`train.csv` or `test.csv` of the Hugging Face data set sapientinc/maze-30x30-hard-1k (hub-cached)."""
    return download_hf_csv(HF_REPO, split, MazeError, cache_dir)


# -- data sets -----------------------------------------------------------------------------------------------
def encode(grid: np.ndarray) -> np.ndarray:
    """Official tokens [N*N]: the codes themselves (1..5; 0 is PAD)."""
    return as_grid(grid).reshape(-1).copy()


def decode(tokens: np.ndarray, size: int) -> np.ndarray:
    """Tokens back to a grid [size, size]; PAD and out-of-range predictions are clipped to 1..5."""
    tokens = np.asarray(tokens).reshape(-1)
    if len(tokens) != size * size:
        raise MazeError(f"{len(tokens)} tokens; a {size}x{size} maze needs {size * size}")
    return np.clip(tokens.astype(np.int64), WALL, PATH).astype(np.uint8).reshape(size, size)


def _pair(pair: Sequence[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        question, answer = as_grid(pair[0]), as_grid(pair[1])
    except MazeError as err:
        raise MazeError(f"{what}: {err}") from None
    if not is_valid_shortest_path(answer, question):
        raise MazeError(f"{what}: the answer is not a shortest path of the question")
    return question, answer


def build_dataset(
    out_dir: Path,
    train: Sequence[Sequence[np.ndarray]],
    test: Sequence[Sequence[np.ndarray]],
    aug: bool = False,
    progress: Callable[[int], None] | bool | None = None,
) -> dict:
    """Write the official layout: one group per training maze; with `aug` the group holds every distinct
    dihedral version of it (8, fewer for a symmetric maze), one single-example puzzle each, the original
    first; without it just the original. The test split is never augmented. All puzzles use the blank
    identifier 0 (num_puzzle_identifiers 1), seq_len N*N, vocab 6. Every example is checked to be a valid
    shortest path before it is written. Also writes identifiers.json and task.json ({"task": "maze",
    "size": N}). `train` and `test` hold (question, answer, ...) tuples, such as `generate`'s or
    `read_csv`'s.

    `progress`: a callable gets the number of groups written; None shows a bar for splits of 1,000 or more
    groups; False is silent. Returns {"out", "size", "train": counts, "test": counts}."""
    out_dir = Path(out_dir)
    sizes = {np.asarray(p[k]).size for p in (*train, *test) for k in (0, 1)}
    if not sizes:
        raise MazeError("no mazes to write")
    if len(sizes) != 1:
        raise MazeError(f"mazes of several sizes in one data set: {sorted(sizes)} cells")
    seq_len = sizes.pop()
    size = size_from_length(seq_len)
    summary: dict = {"out": str(out_dir), "size": size}
    for split, pairs, augment in (("train", train, aug), ("test", test, False)):
        bar = None
        if progress is None and len(pairs) >= 1000:
            from trm.progress import progress

            bar = progress(total=len(pairs), desc=f"writing {split}", unit="group")
        examples = 0
        with DatasetWriter(out_dir, split, seq_len) as writer:
            for k, pair in enumerate(pairs):
                question, answer = _pair(pair, f"{split} maze {k + 1}")
                group, seen = [], set()
                for t in range(8 if augment else 1):
                    q, a = dihedral(question, t), dihedral(answer, t)
                    key = q.tobytes() + a.tobytes()
                    if key in seen:
                        continue
                    seen.add(key)
                    if not is_valid_shortest_path(a, q):  # pragma: no cover - dihedral maps paths to paths
                        raise MazeError(f"transform {t} of {split} maze {k + 1}: not a shortest path")
                    group.append((0, encode(q)[None], encode(a)[None]))
                writer.add_group(group)
                examples += len(group)
                if bar is not None:
                    bar.update(1)
                elif callable(progress):
                    progress(1)
            meta = writer.close(vocab_size=VOCAB_SIZE, num_puzzle_identifiers=1, pad_id=PAD, ignore_label_id=PAD)
        if bar is not None:
            bar.close()
        summary[split] = {"groups": meta.total_groups, "puzzles": meta.total_puzzles, "examples": examples}
    write_identifiers(out_dir, ["<blank>"])
    write_json(out_dir / "task.json", {"task": "maze", "size": size})
    return summary


class MazeTask:
    """The maze task of one size, as the CLI and inference engine see it (trm.tasks.base.Task)."""

    name = "maze"
    colours = ("#FFFFFF", "#333333", "#FFFFFF", "#2ECC40", "#FF4136", "#0074D9")  # by code: PAD # ' ' S G o
    symbols = None
    checkable = True

    def __init__(self, size: int):
        if size < 2:
            raise MazeError(f"maze size must be at least 2, got {size}")
        self.size = size

    def split(self, text: str) -> list[str]:
        """Blank-line separated mazes; a block of one-line mazes (each of size*size cells) is several."""
        out: list[str] = []
        for block in text.replace("\r", "").split("\n\n"):
            lines = [ln for ln in block.split("\n") if ln.strip() and not ln.lstrip().startswith("#")]
            if lines and all(len(ln) == self.size * self.size for ln in lines):
                out.extend(lines)
            elif lines:
                out.append("\n".join(lines))
        return out

    def parse(self, text: str) -> np.ndarray:
        """A question: path marks 'o' in the text are read as open cells."""
        return question_of(parse_maze(text, self.size))

    def encode(self, puzzle: np.ndarray) -> np.ndarray:
        return encode(puzzle)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return decode(tokens, self.size)

    def is_solution(self, answer: np.ndarray, puzzle: np.ndarray) -> bool:
        return is_valid_shortest_path(answer, puzzle)

    def check_tokens(self, preds: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Each predicted maze [B, L] marks a shortest S-to-G path of its input maze."""
        return np.array(
            [is_valid_shortest_path(self.decode(p), self.decode(x)) for p, x in zip(preds, inputs, strict=True)],
            dtype=bool,
        )

    def format(self, grid: np.ndarray) -> str:
        """One shell-safe line: open cells as '.' (which `parse` reads back)."""
        return format_maze(grid, open_char=OPEN_ALIAS)

    def render(self, grid: np.ndarray, puzzle: np.ndarray | None = None) -> str:
        return render(grid, puzzle)

    def render_diff(self, pred: np.ndarray, truth: np.ndarray, question: np.ndarray | None = None) -> str:
        return render_diff(pred, truth)
