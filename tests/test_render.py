"""Rendering: every task draws question / prediction / answer as text and PNG, in its own colours, with the
wrong cells marked where they are."""

from __future__ import annotations

import numpy as np
import pytest

from trm.errors import TRMError
from trm.render import WRONG, Layout, Panel, example_png, paint
from trm.tasks import arc
from trm.tasks.arc import Arc
from trm.tasks.maze import MazeTask, generate
from trm.tasks.sudoku import SudokuTask
from trm.tasks.sudoku import generate as generate_sudoku

Image = pytest.importorskip("PIL.Image")


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def centre(image, layout: Layout, box: int, r: int, c: int) -> tuple[int, ...]:
    x0, y0, x1, y1 = layout.cell_box(box, r, c)
    return image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))[:3]


def edge(image, layout: Layout, box: int, r: int, c: int) -> tuple[int, ...]:
    x0, y0, _, y1 = layout.cell_box(box, r, c)
    return image.getpixel((x0 + 1, (y0 + y1) // 2))[:3]


def test_arc_png_uses_the_arc_palette_and_text_marks_wrong_cells(tmp_path):
    task = Arc()
    question = np.full((3, 3), 1, dtype=np.uint8)  # all blue
    truth = np.full((3, 3), 2, dtype=np.uint8)
    pred = truth.copy()
    pred[1, 1] = 4
    png = example_png(task, tmp_path / "a.png", question, pred, truth)
    image = Image.open(png).convert("RGB")
    layout = Layout.of([Panel("question", question), Panel("prediction", pred), Panel("answer", truth)])
    assert image.size == layout.size
    assert centre(image, layout, 0, 1, 1) == rgb(arc.PALETTE[1])
    assert centre(image, layout, 1, 1, 1) == rgb(arc.PALETTE[4])  # the wrong cell keeps its colour ...
    assert edge(image, layout, 1, 1, 1) == rgb(WRONG)  # ... and is outlined in red
    assert edge(image, layout, 1, 0, 0) == rgb(arc.PALETTE[2])  # a right one is not
    assert edge(image, layout, 2, 1, 1) == rgb(arc.PALETTE[2])  # nor is the answer
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
    image = Image.open(png).convert("RGB")
    layout = Layout.of([Panel("q", puzzle), Panel("p", pred), Panel("a", truth)])
    side = int(np.sqrt(pred.size))
    assert image.size == layout.size
    assert edge(image, layout, 1, 0, 0) == rgb(WRONG)
    assert edge(image, layout, 1, side - 1, side - 1) != rgb(WRONG)
    x0, y0, _, _ = layout.cell_box(2, 0, 0)  # near the corner: the fill, clear of a Sudoku digit
    assert image.getpixel((x0 + 3, y0 + 3)) == rgb(task.colours[int(np.asarray(truth).reshape(-1)[0])])


def test_empty_grids_and_missing_pillow(tmp_path, monkeypatch):
    image = paint([Panel("empty", np.zeros((0, 0), dtype=np.uint8)), Panel("one", np.ones((1, 1)))], arc.PALETTE)
    assert image.size[0] > 2 * 150
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(TRMError, match="pip install 'trm\\[viz\\]'"):
        paint([Panel("one", np.ones((1, 1)))], arc.PALETTE)
