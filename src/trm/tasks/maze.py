"""Mazes (the Maze-Hard task): parsing, BFS shortest paths, a checker that accepts any shortest path, a seeded
generator, dihedral augmentation, rendering, the Maze-Hard CSV reader and the data-set builder in the official
layout.

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
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from trm.data import DatasetWriter, write_identifiers, write_json
from trm.errors import TRMError
from trm.tasks import grids
from trm.tasks.base import download_hf_csv

CHARSET = "# SGo"
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = 6  # PAD + the five characters
OPEN_ALIAS = "."  # accepted for ' ' by `parse_maze`, and written by `MazeTask.format` (one shell-safe token)
HF_REPO = "sapientinc/maze-30x30-hard-1k"
HARD_SIZE, HARD_MIN_PATH = 30, 110

_CODE = np.zeros(256, dtype=np.uint8)  # byte -> code, 0 = not a maze character
for _k, _ch in enumerate(CHARSET):
    _CODE[ord(_ch)] = _k + 1
_CODE[ord(OPEN_ALIAS)] = OPEN
_CHARS = np.frombuffer(("?" + CHARSET).encode(), dtype=np.uint8)  # code -> byte, '?' for anything unknown


class MazeError(TRMError):
    """A malformed or unsolvable maze, or a bad maze data file (a ValueError, shown as one line)."""


# -- grids ---------------------------------------------------------------------------------------------------
def size_from_length(n: int) -> int:
    """The side of a square maze with `n` cells."""
    size = math.isqrt(n)
    if n < 4 or size * size != n:
        raise MazeError(f"maze has {n} cells; a square N x N maze (N >= 2) needs a square number such as 900")
    return size


def as_grid(cells: np.ndarray | Sequence) -> np.ndarray:
    """A square uint8 grid [N, N] of codes 1..5 from a flat or square array (raises MazeError otherwise)."""
    arr = np.asarray(cells)
    if arr.ndim == 1:
        size = size_from_length(len(arr))
        arr = arr.reshape(size, size)
    elif arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise MazeError(f"a maze is a square grid, got shape {arr.shape}")
    else:
        size_from_length(arr.size)
    if arr.dtype.kind not in "uib":
        raise MazeError(f"maze cells must be integer codes 1..5, got {arr.dtype}")
    if arr.size and (int(arr.min()) < WALL or int(arr.max()) > PATH):
        raise MazeError(f"maze cells must be codes 1..5 ({CHARSET!r}), got {int(arr.min())}..{int(arr.max())}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _where(grid: np.ndarray, code: int) -> list[tuple[int, int]]:
    return [(int(r), int(c)) for r, c in zip(*np.nonzero(grid == code), strict=True)]


def endpoints(grid: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(S, G) as (row, column); raises MazeError unless there is exactly one of each."""
    found = []
    for code, name in ((START, "start 'S'"), (GOAL, "goal 'G'")):
        cells = _where(grid, code)
        if not cells:
            raise MazeError(f"maze has no {name}")
        if len(cells) > 1:
            (r1, c1), (r2, c2) = cells[:2]
            raise MazeError(
                f"maze has {len(cells)} cells {name} (rows {r1 + 1} and {r2 + 1}, columns {c1 + 1} and {c2 + 1}); "
                "it needs exactly one"
            )
        found.append(cells[0])
    return found[0], found[1]


def question_of(grid: np.ndarray) -> np.ndarray:
    """The question of a maze: path marks 'o' turned back into open cells."""
    grid = as_grid(grid).copy()
    grid[grid == PATH] = OPEN
    return grid


def check_maze(grid: np.ndarray) -> np.ndarray:
    """The grid, after checking that it has one S, one G and a path between them (raises MazeError)."""
    grid = as_grid(grid)
    if shortest_path(grid) is None:
        (sr, sc), (gr, gc) = endpoints(grid)
        raise MazeError(f"no path from S (row {sr + 1}, column {sc + 1}) to G (row {gr + 1}, column {gc + 1})")
    return grid


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


# -- shortest paths ------------------------------------------------------------------------------------------
def _bfs(passable: np.ndarray, source: tuple[int, int]) -> np.ndarray:
    """4-neighbour BFS distances [N, N] from `source` over `passable` cells; -1 where unreachable."""
    n = passable.shape[0]
    w = n + 2  # a wall border makes neighbours plain index offsets
    free = np.zeros((w, w), dtype=bool)
    free[1:-1, 1:-1] = passable
    free_flat = free.reshape(-1).tolist()
    dist = [-1] * (w * w)
    s = (source[0] + 1) * w + source[1] + 1
    dist[s] = 0
    frontier = [s]
    d = 0
    steps = (1, -1, w, -w)
    while frontier:
        d += 1
        nxt = []
        for i in frontier:
            for step in steps:
                j = i + step
                if free_flat[j] and dist[j] < 0:
                    dist[j] = d
                    nxt.append(j)
        frontier = nxt
    return np.asarray(dist, dtype=np.int32).reshape(w, w)[1:-1, 1:-1]


def distances(grid: np.ndarray) -> np.ndarray:
    """BFS distances [N, N] from S through every non-wall cell ('o' counts as open); -1 where unreachable."""
    grid = as_grid(grid)
    s, _ = endpoints(grid)
    return _bfs(grid != WALL, s)


def shortest_path(grid: np.ndarray) -> list[tuple[int, int]] | None:
    """A shortest 4-neighbour path from S to G as (row, column) cells, S and G included (so len - 1 moves);
    None when G cannot be reached. Walls block; 'o' marks count as open. Raises MazeError unless the maze has
    exactly one S and one G."""
    grid = as_grid(grid)
    s, g = endpoints(grid)
    dist = _bfs(grid != WALL, s)
    if dist[g] < 0:
        return None
    n = grid.shape[0]
    path = [g]
    r, c = g
    while (r, c) != s:  # walk back downhill, neighbours in a fixed order: deterministic
        d = dist[r, c]
        for dr, dc in ((-1, 0), (0, -1), (0, 1), (1, 0)):
            rr, cc = r + dr, c + dc
            if 0 <= rr < n and 0 <= cc < n and dist[rr, cc] == d - 1:
                r, c = rr, cc
                break
        path.append((r, c))
    return path[::-1]


def label(grid: np.ndarray) -> np.ndarray:
    """The answer: the question with the cells of one shortest path (S and G excluded) marked 'o'."""
    q = question_of(grid)
    path = shortest_path(q)
    if path is None:
        raise MazeError("no path from S to G")
    out = q.copy()
    for cell in path[1:-1]:
        out[cell] = PATH
    return out


def is_valid_shortest_path(pred: np.ndarray, question: np.ndarray) -> bool:
    """True when `pred` is the question with open cells marked 'o' such that the marks plus S and G form a
    simple 4-neighbour path from S to G whose length is the BFS shortest length. Any one of several
    shortest paths counts. 'o' cells in `question` are read as open."""
    try:
        pred, q = as_grid(pred), question_of(question)
        (sr, sc), (gr, gc) = endpoints(q)
    except MazeError:
        return False
    if pred.shape != q.shape:
        return False
    marks = pred == PATH
    if not np.array_equal(np.where(marks, OPEN, pred), q) or (q[marks] != OPEN).any():
        return False
    on = marks.copy()
    on[sr, sc] = on[gr, gc] = True
    padded = np.pad(on, 1)
    degree = (padded[:-2, 1:-1].astype(np.int8) + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) * on
    if degree[sr, sc] != 1 or degree[gr, gc] != 1 or (degree[marks] != 2).any():
        return False
    reach = _bfs(on, (sr, sc))  # degrees 1, 2, ..., 2, 1 and connected: a simple path from S to G
    if (reach[on] < 0).any():
        return False
    best = _bfs(q != WALL, (sr, sc))[gr, gc]
    return int(best) == int(on.sum()) - 1


def score(preds: Sequence[np.ndarray], questions: Sequence[np.ndarray], answers: Sequence[np.ndarray]) -> dict:
    """Exact accuracy (the official metric: every cell equals the reference answer) and the share of
    predictions that are a valid shortest path (counts other shortest paths too; never lower)."""
    if not len(preds) == len(questions) == len(answers):
        raise MazeError(f"{len(preds)} predictions, {len(questions)} questions and {len(answers)} answers")
    if not len(preds):
        raise MazeError("nothing to score")
    exact = valid = 0
    for p, q, a in zip(preds, questions, answers, strict=True):
        p_arr, a_arr = np.asarray(p).reshape(-1), np.asarray(a).reshape(-1)
        exact += bool(p_arr.shape == a_arr.shape and np.array_equal(p_arr, a_arr))
        valid += is_valid_shortest_path(p, q)
    return {"exact_accuracy": exact / len(preds), "valid_shortest_path": valid / len(preds)}


# -- generation and augmentation ----------------------------------------------------------------------------
def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """The official dihedral transform t (see `trm.tasks.grids.dihedral`) of a square maze; flat grids stay
    flat. Shortest paths map to shortest paths, so a labelled maze stays labelled."""
    arr = np.asarray(grid)
    flat = arr.ndim == 1
    if flat:
        size = size_from_length(len(arr))
        arr = arr.reshape(size, size)
    if t not in range(8):
        raise MazeError(f"dihedral transform {t} outside 0..7")
    out = grids.dihedral(arr, t)
    return out.reshape(-1) if flat else out


def _carve(size: int, rng: np.random.Generator, loops: float) -> np.ndarray:
    """A random maze without S and G: a depth-first (recursive backtracker) spanning tree on the lattice of
    even cells of an odd canvas, a fraction `loops` of the remaining inner walls knocked out so there are
    several routes, cropped to `size` and turned by a random dihedral transform (so the cropped edge of an
    even size is not always at the bottom right)."""
    m = size if size % 2 else size + 1
    k = (m + 1) // 2  # lattice cells per side
    grid = np.full((m, m), WALL, dtype=np.uint8)
    grid[0::2, 0::2] = OPEN
    visited = [False] * (k * k)
    rand = rng.random(2 * k * k).tolist()
    start = int(rng.integers(k * k))
    visited[start] = True
    stack = [start]
    draw = 0
    while stack:
        cell = stack[-1]
        r, c = divmod(cell, k)
        options = []
        if r > 0 and not visited[cell - k]:
            options.append(cell - k)
        if r < k - 1 and not visited[cell + k]:
            options.append(cell + k)
        if c > 0 and not visited[cell - 1]:
            options.append(cell - 1)
        if c < k - 1 and not visited[cell + 1]:
            options.append(cell + 1)
        if not options:
            stack.pop()
            continue
        nxt = options[int(rand[draw] * len(options))]
        draw += 1
        visited[nxt] = True
        nr, nc = divmod(nxt, k)
        grid[r + nr, c + nc] = OPEN  # the wall between the two lattice cells (canvas coordinates 2r, 2nr)
        stack.append(nxt)
    if loops > 0:
        between = np.zeros((m, m), dtype=bool)
        between[0::2, 1::2] = True
        between[1::2, 0::2] = True
        knock = between & (grid == WALL) & (rng.random((m, m)) < loops)
        grid[knock] = OPEN
    return dihedral(grid[:size, :size], int(rng.integers(8)))


def generate(
    count: int,
    size: int,
    rng: np.random.Generator,
    min_path: int = 0,
    progress: Callable[[int], None] | None = None,
    loops: float = 0.1,
    max_tries: int = 1000,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """`count` random mazes as (question, answer, path length in moves), each with a shortest path of at least
    `min_path` moves (Maze-Hard: 30x30, min_path 110); deterministic for the rng's state.

    Each maze is carved by `_carve`; S is an open cell drawn at random, G is drawn among the cells at BFS
    distance >= max(min_path, 1) from S (up to 4 S per maze, then a new maze; MazeError after `max_tries`
    mazes in a row without one). Every maze is solvable and every answer is checked with
    `is_valid_shortest_path`. `progress(1)` is called per accepted maze."""
    if size < 3:
        raise MazeError(f"maze size must be at least 3, got {size}")
    if not 0 <= loops <= 1:
        raise MazeError(f"loops must be in 0..1, got {loops}")
    if min_path >= size * size:
        raise MazeError(f"no {size}x{size} maze has a shortest path of {min_path} moves")
    out: list[tuple[np.ndarray, np.ndarray, int]] = []
    tries = 0
    while len(out) < count:
        if tries >= max_tries:
            raise MazeError(
                f"no {size}x{size} maze with a shortest path >= {min_path} moves in {max_tries} tries; lower min_path"
            )
        tries += 1
        grid = _carve(size, rng, loops)
        open_cells = np.flatnonzero(grid.reshape(-1) == OPEN)
        for _ in range(4):
            s = divmod(int(open_cells[rng.integers(len(open_cells))]), size)
            dist = _bfs(grid == OPEN, s).reshape(-1)
            far = np.flatnonzero(dist >= max(min_path, 1))
            if len(far):
                break
        else:
            continue
        g = divmod(int(far[rng.integers(len(far))]), size)
        question = grid.copy()
        question[s], question[g] = START, GOAL
        answer = label(question)
        length = int(dist[g[0] * size + g[1]])
        if not is_valid_shortest_path(answer, question) or int(np.count_nonzero(answer == PATH)) != length - 1:
            raise MazeError("internal: generated an answer that is not a shortest path")  # pragma: no cover
        out.append((question, answer, length))
        tries = 0
        if progress is not None:
            progress(1)
    return out


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
            from tqdm import tqdm

            bar = tqdm(total=len(pairs), desc=f"writing {split}", unit="group")
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
