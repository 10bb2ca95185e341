"""Rendering: every task draws question / prediction / answer as text and PNG, in its own colours, with the
wrong cells marked."""

from __future__ import annotations

import numpy as np
import pytest

from trm.render import example_png
from trm.tasks import arc
from trm.tasks.arc import Arc
from trm.tasks.maze import MazeTask, generate
from trm.tasks.sudoku import SudokuTask
from trm.tasks.sudoku import generate as generate_sudoku

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


def _pixel(png, frac_x: float, frac_y: float) -> tuple[int, ...]:
    img = imread(png)
    h, w = img.shape[:2]
    return tuple(int(round(255 * v)) for v in img[int(frac_y * h), int(frac_x * w), :3])


def test_arc_png_uses_the_arc_palette_and_text_marks_wrong_cells(tmp_path):
    task = Arc()
    question = np.full((3, 3), 1, dtype=np.uint8)  # all blue
    truth = np.full((3, 3), 2, dtype=np.uint8)
    pred = truth.copy()
    pred[1, 1] = 4
    png = example_png(task, tmp_path / "a.png", question, pred, truth)
    # the middle of the first panel (of three) is the blue cell of the question
    assert _pixel(png, 1 / 6, 0.53) == (0, 0x74, 0xD9)
    text = task.render_diff(pred, truth, question)
    assert "(1 of 9 cells wrong)" in text and "2 x 2" in text
    assert "wrong shape: 2x3 instead of 3x3" in task.render_diff(truth[:2], truth)
    assert arc.crop(task.encode(task.parse("[[1,2],[3,4]]"))).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("which", ["sudoku", "maze"])
def test_sudoku_and_maze_render_text_and_png(tmp_path, which):
    rng = np.random.default_rng(0)
    if which == "sudoku":
        task = SudokuTask(4)
        puzzle, truth, _ = generate_sudoku(1, 4, rng)[0]
    else:
        task = MazeTask(7)
        puzzle, truth = generate(1, 7, rng)[0][:2]
    pred = np.array(truth)
    flat = pred.reshape(-1)
    flat[0] = 2 if flat[0] != 2 else 1
    text = task.render_diff(pred, truth, puzzle)
    assert "x" in text
    png = example_png(task, tmp_path / f"{which}.png", puzzle, pred, truth)
    assert imread(png).shape[0] > 100
