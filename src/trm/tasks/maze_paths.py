"""Maze grids and their paths: the official codes, S/G endpoints, BFS distances and shortest paths, the
checker that accepts any shortest path, scoring, the dihedral transforms and the seeded generator. Path lengths
are counted in moves: a path of L moves has L - 1 'o' cells. `trm.tasks.maze` re-exports all of it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from trm.data import grids
from trm.errors import TRMError

CHARSET = "# SGo"
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5


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
    """The official dihedral transform t (see `trm.data.grids.dihedral`) of a square maze; flat grids stay
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
