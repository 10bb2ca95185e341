"""Sudoku's grid geometry (sizes, units, peers), the exact solver with its difficulty rating, and the generator
of unique-solution puzzles. The solver keeps a candidate bitmask per cell, propagates naked and hidden singles
after every assignment and guesses in the cell with the fewest candidates; `rating` counts its dead ends
(guesses whose propagation hit a contradiction) before the first solution."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from trm.errors import TRMError

BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (box rows, box columns)


class SudokuError(TRMError):
    """A malformed, contradictory, unsolvable or non-unique puzzle (a ValueError, shown as one line)."""


def box_shape(size: int) -> tuple[int, int]:
    """(rows, columns) of one box."""
    if size not in BOX_SHAPES:
        raise SudokuError(f"unsupported Sudoku size {size}; trm knows 4x4, 6x6 and 9x9")
    return BOX_SHAPES[size]


def size_from_length(n: int) -> int:
    """The size whose grid has `n` cells."""
    for size in BOX_SHAPES:
        if size * size == n:
            return size
    raise SudokuError(f"puzzle has {n} cells; a Sudoku needs 16 (4x4), 36 (6x6) or 81 (9x9)")


# -- geometry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    size: int
    full: int  # the candidate mask with every digit
    units: tuple[tuple[int, ...], ...]  # the size rows, then the size columns, then the size boxes
    peers: tuple[tuple[int, ...], ...]  # per cell: the other cells of its row, column and box
    unit_cells: np.ndarray  # units as an int array [3 * size, size], for vectorised checks


@cache
def geometry(size: int) -> Geometry:
    br, bc = box_shape(size)
    rows = [tuple(r * size + c for c in range(size)) for r in range(size)]
    cols = [tuple(r * size + c for r in range(size)) for c in range(size)]
    boxes = [
        tuple((r0 + r) * size + c0 + c for r in range(br) for c in range(bc))
        for r0 in range(0, size, br)
        for c0 in range(0, size, bc)
    ]
    units = (*rows, *cols, *boxes)
    peers = tuple(tuple(sorted({p for unit in units if i in unit for p in unit} - {i})) for i in range(size * size))
    return Geometry(size, (1 << size) - 1, units, peers, np.asarray(units, dtype=np.intp))


_POPCOUNT = [bin(m).count("1") for m in range(1 << 9)]
_BITS = [[1 << d for d in range(9) if m >> d & 1] for m in range(1 << 9)]  # mask -> its single-digit masks


def as_grid(cells: np.ndarray | Sequence[int]) -> np.ndarray:
    """A flat uint8 grid of a supported size (raises SudokuError otherwise)."""
    cells = np.asarray(cells).reshape(-1)
    size = size_from_length(len(cells))
    if len(cells) and (cells.min() < 0 or cells.max() > size):
        raise SudokuError(f"cell values must be in 0..{size}, got {int(cells.min())}..{int(cells.max())}")
    return cells.astype(np.uint8)


def check_givens(cells: np.ndarray) -> None:
    """Raise if a digit repeats in a row, column or box (such a puzzle can have no solution)."""
    cells = as_grid(cells)
    size = size_from_length(len(cells))
    units = geometry(size).units
    for k, unit in enumerate(units):
        seen = 0
        for i in unit:
            v = int(cells[i])
            if v:
                if seen >> v & 1:
                    kind = ("row", "column", "box")[k // size]
                    raise SudokuError(f"contradictory givens: digit {v} twice in {kind} {k % size + 1}")
                seen |= 1 << v


# -- solver --------------------------------------------------------------------------------------------------
@dataclass
class SolveResult:
    """Up to `limit` solutions, and the dead ends met on the way (the difficulty)."""

    solutions: list[np.ndarray] = field(default_factory=list)
    backtracks: int = 0


def _propagate(cand: list[int], stack: list[int], geo: Geometry) -> bool:
    """Eliminate each newly fixed cell's digit from its peers (naked singles), then place digits that fit
    only one cell of a unit (hidden singles), until nothing changes. False on a contradiction."""
    peers, units, full = geo.peers, geo.units, geo.full
    while True:
        while stack:
            i = stack.pop()
            bit = cand[i]
            for p in peers[i]:
                m = cand[p]
                if m & bit:
                    m ^= bit
                    if not m:
                        return False
                    cand[p] = m
                    if not m & (m - 1):
                        stack.append(p)
        for unit in units:
            once = twice = 0
            for c in unit:
                m = cand[c]
                twice |= once & m
                once |= m
            if once != full:
                return False  # a digit fits nowhere in this unit
            hidden = once & ~twice
            if hidden:
                for c in unit:
                    m = cand[c]
                    h = m & hidden
                    if h and h != m:
                        if h & (h - 1):
                            return False  # two digits can only go in this one cell
                        cand[c] = h
                        stack.append(c)
        if not stack:
            return True


def _candidates(cells: np.ndarray, geo: Geometry) -> list[int] | None:
    """Propagated candidate masks of a grid, or None when the givens already contradict."""
    cand = [geo.full] * len(cells)
    stack = []
    for i, v in enumerate(cells.tolist()):
        if v:
            cand[i] = 1 << (v - 1)
            stack.append(i)
    return cand if _propagate(cand, stack, geo) else None


def _search(cand: list[int], geo: Geometry, limit: int, result: SolveResult, rng: np.random.Generator | None) -> bool:
    """Depth-first search from propagated candidates; True once `limit` solutions are found."""
    best, best_count = -1, 99
    for i, m in enumerate(cand):
        if m & (m - 1):
            count = _POPCOUNT[m]
            if count < best_count:
                best, best_count = i, count
                if count == 2:
                    break
    if best < 0:
        result.solutions.append(np.array([m.bit_length() for m in cand], dtype=np.uint8))
        return len(result.solutions) >= limit
    choices = _BITS[cand[best]]
    if rng is not None:
        choices = [choices[k] for k in rng.permutation(len(choices))]
    for bit in choices:
        child = cand.copy()
        child[best] = bit
        if _propagate(child, [best], geo):
            if _search(child, geo, limit, result, rng):
                return True
        else:
            result.backtracks += 1
    return False


def solve(cells: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None) -> SolveResult:
    """Exact search for up to `limit` solutions (2 tells unique from ambiguous). `rng` shuffles the order in
    which digits are tried, which turns the search on an empty grid into a random full grid. Contradictory
    givens give no solutions."""
    cells = as_grid(cells)
    geo = geometry(size_from_length(len(cells)))
    result = SolveResult()
    cand = _candidates(cells, geo)
    if cand is not None and limit > 0:
        _search(cand, geo, limit, result, rng)
    return result


def rating(cells: np.ndarray) -> int:
    """Difficulty: the solver's dead ends before the first solution (0 = solved by singles alone); the
    analogue of Sudoku-Extreme's rating."""
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


# -- generation -------------------------------------------------------------------------------------------
def random_full_grid(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random solved grid: the solver on an empty grid with shuffled digit order."""
    return solve(np.zeros(size * size, dtype=np.uint8), limit=1, rng=rng).solutions[0]


def minimal_puzzle(solution: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Remove clues in random order while the solution stays unique, so every remaining clue is needed.

    Clue i may go iff no solution of the weaker puzzle differs from `solution` at i: any other solution must
    differ there, so one search with that digit excluded decides it (cheaper than counting to 2)."""
    solution = as_grid(solution)
    geo = geometry(size_from_length(len(solution)))
    puzzle = solution.copy()
    for i in rng.permutation(len(puzzle)).tolist():
        puzzle[i] = 0
        cand = _candidates(puzzle, geo)
        assert cand is not None  # the givens agree with a full solution
        other = cand[i] & ~(1 << (int(solution[i]) - 1))
        if other:
            cand[i] = other
            probe = SolveResult()
            if _propagate(cand, [] if other & (other - 1) else [i], geo):
                _search(cand, geo, 1, probe, None)
            if probe.solutions:
                puzzle[i] = solution[i]  # another solution appears: the clue stays
    return puzzle


def generate(
    count: int,
    size: int,
    rng: np.random.Generator,
    min_rating: int = 0,
    progress: Callable[[int], None] | None = None,
    givens: int | None = None,
    max_tries: int = 1000,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """`count` unique-solution puzzles as (puzzle, solution, rating), each with rating >= min_rating;
    deterministic for the rng's state. Minimal puzzles by default; with `givens`, random clues of the solution
    are added back to a minimal puzzle until it has that many (easier puzzles, still unique: a superset of a
    unique puzzle's clues). `progress(1)` is called per accepted puzzle. SudokuError after `max_tries`
    puzzles in a row below min_rating (a rating the size never reaches would otherwise loop forever)."""
    box_shape(size)
    if givens is not None and not 0 <= givens <= size * size:
        raise SudokuError(f"givens must be in [0, {size * size}], got {givens}")
    out = []
    misses = 0
    while len(out) < count:
        if misses >= max_tries:
            raise SudokuError(
                f"no {size}x{size} puzzle rated >= {min_rating} in {max_tries} tries in a row; lower the minimum rating"
            )
        solution = random_full_grid(size, rng)
        puzzle = minimal_puzzle(solution, rng)
        if givens is not None:
            blank = np.flatnonzero(puzzle == 0)
            extra = givens - (len(puzzle) - len(blank))
            if extra > 0:
                picked = rng.choice(blank, extra, replace=False)
                puzzle[picked] = solution[picked]
        score = rating(puzzle)
        misses = 0 if score >= min_rating else misses + 1
        if score >= min_rating:
            out.append((puzzle, solution, score))
            if progress is not None:
                progress(1)
    return out


def generate_distinct(
    count: int, size: int, rng: np.random.Generator, **options
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """`count` puzzles as `generate` makes them (same options), no two alike, in the order first made: small
    sizes repeat puzzles, and a repeat across a train/test split would leak a test puzzle into training.
    SudokuError when 1000 puzzles in a row bring nothing new (the size has fewer such puzzles than asked).
    `progress` ticks at most `count` times: the puzzles drawn to replace repeats are not shown twice."""
    progress = options.pop("progress", None)
    ticks = 0

    def tick(k: int) -> None:
        nonlocal ticks
        if progress is not None and ticks < count:
            ticks += k
            progress(k)

    unique: dict[bytes, tuple[np.ndarray, np.ndarray, int]] = {}
    stale = 0
    while len(unique) < count:
        asked, before = count - len(unique), len(unique)
        for made in generate(asked, size, rng, progress=tick, **options):
            unique.setdefault(made[0].tobytes(), made)
        stale = 0 if len(unique) > before else stale + asked
        if stale >= 1000:
            raise SudokuError(
                f"only {len(unique)} distinct {size}x{size} puzzles found of {count} asked; ask for fewer"
            )
    return list(unique.values())
