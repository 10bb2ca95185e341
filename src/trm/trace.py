"""Traces: a puzzle's answer after every supervision step, with the cells that changed since the step before
(step 1: since the question), the cells that are certainly wrong, and the halting probability sigmoid(q_halt)
of each step; as terminal text and as pictures (a PNG of all steps, or a GIF of one frame per step), the
same for every task. `trm solve --trace [--out FILE.png|FILE.gif]` shows them; any Python caller with a
model can build one with `trace_example` (a data-set example, its label known)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trm.errors import TRMError
from trm.render import Layout, Panel, paint, save_gif, save_image, square
from trm.tasks.base import Task

PICTURES = (".png", ".gif")
Judge = Callable[[np.ndarray], np.ndarray | None]  # an answer -> its certainly wrong cells, or None


def is_picture(path: Path | None) -> bool:
    """Whether an output path asks for a trace picture (by its suffix)."""
    return path is not None and Path(path).suffix.lower() in PICTURES


def numbered(path: Path, key: int | str | None) -> Path:
    """`path` itself for a single trace, else `stem_key.suffix` beside it."""
    path = Path(path)
    return path if key is None else path.with_name(f"{path.stem}_{key}{path.suffix}")


# -- what is wrong -------------------------------------------------------------------------------------------
def reference(task: Task, puzzle: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray | None:
    """The solution to show beside a trace: `truth` when known, else the exact solver's solution of a Sudoku
    whose solution is unique, or one shortest path of a maze."""
    if truth is not None:
        return np.asarray(truth)
    if task.name == "sudoku":
        from trm.tasks.sudoku import SudokuError, solution_of

        try:
            return solution_of(puzzle)
        except SudokuError:  # no solution, or several
            return None
    if task.name == "maze":
        from trm.tasks.maze import MazeError, label

        try:
            return label(puzzle)
        except MazeError:
            return None
    return None


def judge(task: Task, puzzle: np.ndarray, solution: np.ndarray | None) -> Judge:
    """How to find an answer's certainly wrong cells: a maze by its shortest paths, as it may have several (a
    marked cell is wrong off every one of them, an unmarked one on all of them); any other task against
    `solution`; without one nothing tells."""
    if task.name == "maze":
        return _maze_judge(puzzle)
    if solution is None:
        return lambda answer: None
    return lambda answer: answer != solution if answer.shape == solution.shape else np.ones(answer.shape, bool)


def _maze_judge(puzzle: np.ndarray) -> Judge:
    from trm.tasks.maze import GOAL, OPEN, PATH, START, distances, endpoints, question_of

    q = question_of(puzzle)
    s, g = endpoints(q)
    from_s = distances(q)
    swapped = q.copy()
    swapped[s], swapped[g] = GOAL, START
    from_g = distances(swapped)
    length = from_s[g]
    on_some = (from_s >= 0) & (from_g >= 0) & (from_s + from_g == length) if length >= 0 else np.zeros_like(q, bool)
    layer = np.bincount(from_s[on_some], minlength=int(from_s.max()) + 1)  # shortest-path cells per distance
    on_all = on_some & (layer[np.maximum(from_s, 0)] == 1)
    free = q == OPEN

    def wrong(answer: np.ndarray) -> np.ndarray:
        marked = answer == PATH
        bad_open = free & ~((answer == OPEN) & ~on_all | marked & on_some)
        return bad_open | ~free & (answer != q)

    return wrong


# -- traces --------------------------------------------------------------------------------------------------
@dataclass
class Trace:
    """One puzzle's answers (decoded grids) and halting probabilities after every supervision step; `truth`
    is its solution when known (`solution` then holds it, or what `reference` finds)."""

    task: Task
    puzzle: np.ndarray
    answers: Sequence[np.ndarray]
    halt: Sequence[float]
    truth: np.ndarray | None = None
    solution: np.ndarray | None = field(init=False)
    _judge: Judge = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.answers or len(self.answers) != len(self.halt):
            raise TRMError(f"a trace needs one halting probability per step ({len(self.answers)} steps)")
        self.answers = [np.asarray(a) for a in self.answers]
        self.solution = reference(self.task, self.puzzle, self.truth)
        self._judge = judge(self.task, self.puzzle, self.solution)

    def changed(self, k: int) -> np.ndarray:
        """Cells of step k (0-based) that differ from the step before (step 0: from the question); all of
        them when the grid's shape changed."""
        before, now = np.asarray(self.puzzle if k == 0 else self.answers[k - 1]), self.answers[k]
        return now != before if now.shape == before.shape else np.ones(now.shape, dtype=bool)

    def wrong(self, k: int) -> np.ndarray | None:
        return self._judge(self.answers[k])

    def valid(self, k: int) -> bool | None:
        """The task's checker on step k (None for a task that cannot check without the solution)."""
        return bool(self.task.is_solution(self.answers[k], self.puzzle)) if self.task.checkable else None

    def summary(self, k: int) -> str:
        changed, wrong, valid = int(self.changed(k).sum()), self.wrong(k), self.valid(k)
        line = f"step {k + 1}: halt probability {self.halt[k]:.3f}, {changed} cell{'s' * (changed != 1)} changed"
        if wrong is not None:
            line += f", {int(wrong.sum())} wrong"
        return line + ("" if valid is None else f", valid: {'yes' if valid else 'no'}")


def from_solution(task: Task, solution, truth: np.ndarray | None = None) -> Trace:
    """The trace of a `trm.inference.Solution` solved with `InferenceConfig(trace=True)`."""
    return Trace(task, solution.puzzle, solution.trace, solution.q_trace, truth)


def trace_example(model, task: Task, ds, index: int, config=None) -> Trace:
    """Run data-set example `index` through the inference engine, traced; its label is the truth."""
    from dataclasses import replace

    from trm.inference import Engine, InferenceConfig, Request

    config = replace(config or InferenceConfig(), trace=True, samples=1, noise=0.0)
    request = Request(np.asarray(ds.inputs[index]), int(ds.example_puzzle_ids()[index]))
    (answer,) = Engine(model, config).run([request])
    steps = [task.decode(p) for p in answer.chosen.trace]
    question, truth = task.decode(np.asarray(ds.inputs[index])), task.decode(np.asarray(ds.labels[index]))
    return Trace(task, question, steps, answer.chosen.q_trace, truth)


# -- text ----------------------------------------------------------------------------------------------------
def _chars(task: Task, grid: np.ndarray) -> np.ndarray:
    """One character per cell: the task's one-line format where it has one character per cell (Sudoku,
    maze), else the cell values (ARC)."""
    text, cells = task.format(grid), square(grid)
    if len(text) == cells.size:
        return np.array(list(text)).reshape(cells.shape)
    return np.array([[str(int(v)) for v in row] for row in cells.tolist()], dtype=str).reshape(cells.shape)


def _marked(trace: Trace, k: int) -> list[str]:
    """Step k's grid, two columns per cell: its character and a mark (* changed, x wrong, X both)."""
    grid = trace.answers[k]
    chars, changed = _chars(trace.task, grid), square(trace.changed(k))
    wrong = trace.wrong(k)
    wrong = np.zeros(changed.shape, dtype=bool) if wrong is None else square(wrong)
    marks = np.array([" ", "*", "x", "X"])[changed.astype(int) + 2 * wrong.astype(int)]
    return ["".join(row) for row in np.char.add(chars, marks)]


def _side_by_side(blocks: Sequence[tuple[str, list[str]]], width: int, gap: int = 3) -> list[str]:
    """Titled blocks of lines next to each other, as many per row as fit in `width` columns."""
    out: list[str] = []
    row: list[tuple[str, list[str], int]] = []

    def flush() -> None:
        height = max(len(lines) for _, lines, _ in row)
        out.append("".join(title.ljust(w + gap) for title, _, w in row).rstrip())
        for i in range(height):
            out.append("".join((lines[i] if i < len(lines) else "").ljust(w + gap) for _, lines, w in row).rstrip())
        row.clear()

    for title, lines in blocks:
        w = max([len(title), *map(len, lines)])
        if row and sum(b[2] + gap for b in row) + w > width:
            flush()
        row.append((title, lines or ["(empty)"], w))
    if row:
        flush()
    return out


def trace_text(trace: Trace, width: int | None = None) -> str:
    """A line per step (halting probability, cells changed, wrong, valid), then the grids side by side with
    the changed and wrong cells marked."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines = [trace.summary(k) for k in range(len(trace.answers))]
    blocks = [(f"step {k + 1} (halt {trace.halt[k]:.2f})", _marked(trace, k)) for k in range(len(trace.answers))]
    lines += _side_by_side(blocks, width)
    known = "x wrong, X changed and wrong" if trace.wrong(0) is not None else "no solution known to mark wrong cells"
    lines.append(f"(* changed since the step before, step 1: since the question; {known})")
    return "\n".join(lines)


# -- pictures ------------------------------------------------------------------------------------------------
def panels(trace: Trace) -> tuple[Panel, list[Panel], Panel | None]:
    """The question, one panel per step (changed and wrong cells, the halting probability as its bar) and
    the solution when known."""
    steps = []
    for k, answer in enumerate(trace.answers):
        changed, wrong = trace.changed(k), trace.wrong(k)
        detail = f"{int(changed.sum())} changed" + ("" if wrong is None else f", {int(wrong.sum())} wrong")
        title = f"step {k + 1}  halt {trace.halt[k]:.2f}\n{detail}"
        steps.append(Panel(title, answer, wrong, changed, float(trace.halt[k])))
    solution = None if trace.solution is None else Panel("solution", trace.solution)
    return Panel("question", trace.puzzle), steps, solution


def save_trace(trace: Trace, path: Path, columns: int = 6, frame_ms: int = 800) -> Path:
    """A PNG of the question, every step and the known solution as a sheet of panels, or a GIF with one frame
    per step (question, step, known solution) at `frame_ms` each; chosen by the suffix."""
    path = Path(path)
    if not is_picture(path):
        raise TRMError(f"{path}: a trace picture is a .png or .gif file")
    question, steps, solution = panels(trace)
    extra = [solution] if solution is not None else []
    colours, symbols = trace.task.colours, trace.task.symbols
    if path.suffix.lower() == ".png":
        return save_image(paint([question, *steps, *extra], colours, symbols, columns), path)
    layout = Layout.of([question, *steps, *extra], count=2 + len(extra))
    frames = [paint([question, step, *extra], colours, symbols, layout=layout) for step in steps]
    return save_gif(frames, path, frame_ms)
