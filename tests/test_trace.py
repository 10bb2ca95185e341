"""Traces: the answer after every supervision step with the changed and wrong cells and the halting
probability, as text and as pictures (PNG sheet, GIF frames), for every task and through `trm solve`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.cli import main
from trm.config import ModelConfig
from trm.models.trm import TRM
from trm.render import BAR, CHANGED, WRONG, Layout
from trm.tasks.arc import Arc
from trm.tasks.maze import MazeTask, is_valid_shortest_path, parse_maze
from trm.tasks.sudoku import SudokuTask, generate
from trm.trace import Trace, numbered, panels, save_trace, trace_example, trace_text

Image = pytest.importorskip("PIL.Image")


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def near(pixel, colour: str, tol: int = 8) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel[:3], rgb(colour), strict=True))


def sudoku_trace() -> Trace:
    """Step 1 fills every blank with 1, step 2 is the solution with one wrong cell, step 3 the solution."""
    puzzle, solution, _ = generate(1, 4, np.random.default_rng(0))[0]
    first = np.where(puzzle == 0, 1, puzzle).astype(np.uint8)
    second = solution.copy()
    second[3] = solution[3] % 4 + 1
    return Trace(SudokuTask(4), puzzle, [first, second, solution], [0.1, 0.4, 0.9])


def check_marks(image, layout: Layout, box: int, trace: Trace, k: int) -> None:
    """Every cell of step k's panel: a green ring exactly where it changed, a red edge exactly where wrong."""
    changed, wrong = trace.changed(k).reshape(4, 4), trace.wrong(k).reshape(4, 4)
    inset = max(2, layout.cell // 6)
    for r in range(4):
        for c in range(4):
            x0, y0, x1, y1 = layout.cell_box(box, r, c)
            ring = image.getpixel((x0 + inset + 1, (y0 + y1) // 2))
            edge = image.getpixel((x0 + 1, (y0 + y1) // 2))
            assert near(ring, CHANGED) == bool(changed[r, c]), (k, r, c)
            assert near(edge, WRONG) == bool(wrong[r, c]), (k, r, c)


def bar_fill(image, layout: Layout, box: int) -> float:
    x0, y0, x1, _ = layout.bar_box(box)
    row = [image.getpixel((x, y0 + 2)) for x in range(x0, x1 + 1)]
    return sum(near(p, BAR, 2) for p in row) / (x1 - x0)


def test_png_sheet_highlights_changed_and_wrong_cells_and_draws_the_halting_bar(tmp_path):
    trace = sudoku_trace()
    assert [int(trace.changed(k).sum()) for k in range(3)] == [12, 10, 1]  # step 1 against the question
    assert [int(trace.wrong(k).sum()) for k in range(3)] == [int((trace.answers[0] != trace.solution).sum()), 1, 0]
    png = save_trace(trace, tmp_path / "t.png")
    image = Image.open(png).convert("RGB")
    question, steps, solution = panels(trace)
    assert solution is not None  # the exact solver's solution of the unique puzzle
    layout = Layout.of([question, *steps, solution], 6)
    assert image.size == layout.size and layout.count == 5
    for k in range(3):
        check_marks(image, layout, k + 1, trace, k)
        assert bar_fill(image, layout, k + 1) == pytest.approx(trace.halt[k], abs=0.02)
    # the question and the solution carry no marks
    x0, y0, x1, y1 = layout.cell_box(0, 0, 0)
    assert not near(image.getpixel((x0 + 1, (y0 + y1) // 2)), WRONG)


def test_gif_has_one_frame_per_step_of_one_size(tmp_path):
    trace = sudoku_trace()
    gif = save_trace(trace, tmp_path / "t.gif", frame_ms=300)
    image = Image.open(gif)
    assert image.n_frames == 3
    question, steps, solution = panels(trace)
    layout = Layout.of([question, *steps, solution], count=3)
    for k in range(3):
        image.seek(k)
        frame = image.convert("RGB")
        assert frame.size == layout.size
        check_marks(frame, layout, 1, trace, k)
        assert bar_fill(frame, layout, 1) == pytest.approx(trace.halt[k], abs=0.02)
    assert image.info["duration"] == 300


def test_text_marks_changed_and_wrong_cells_and_prints_the_halting_probability():
    trace = sudoku_trace()
    text = trace_text(trace, width=10)  # narrow: one step block under the other
    lines = text.splitlines()
    assert lines[0] == "step 1: halt probability 0.100, 12 cells changed, 10 wrong, valid: no"
    assert lines[2] == "step 3: halt probability 0.900, 1 cell changed, 0 wrong, valid: yes"
    for k in range(3):
        start = lines.index(f"step {k + 1} (halt {trace.halt[k]:.2f})")
        rows = [ln.ljust(8) for ln in lines[start + 1 : start + 5]]
        marks = np.array([[row[2 * c + 1] for c in range(4)] for row in rows])
        expected = np.array([" ", "*", "x", "X"])[trace.changed(k) + 2 * trace.wrong(k)].reshape(4, 4)
        assert (marks == expected).all(), k
    assert "x wrong, X changed and wrong" in lines[-1]


def test_sudoku_without_a_unique_solution_marks_nothing_wrong():
    task = SudokuTask(4)
    blank = np.zeros(16, dtype=np.uint8)
    trace = Trace(task, blank, [np.ones(16, dtype=np.uint8)], [0.5])
    assert trace.wrong(0) is None and trace.solution is None
    assert "no solution known" in trace_text(trace)


MAZE = "S...\n.#.#\n..G#\n####"  # two shortest paths (over the top, or down and right); (0, 3) is a dead end


def test_maze_cells_are_wrong_only_off_every_shortest_path():
    task = MazeTask(4)
    q = task.parse(MAZE)
    top = parse_maze("Soo.\n.#o#\n..G#\n####")
    bottom = parse_maze("S...\no#.#\nooG#\n####")
    dead_end = parse_maze("Sooo\n.#.#\n..G#\n####")
    trace = Trace(task, q, [q, top, bottom, dead_end], [0.1, 0.2, 0.3, 0.4])
    assert is_valid_shortest_path(top, q) and is_valid_shortest_path(bottom, q)
    assert trace.wrong(0).sum() == 0  # no cell lies on every shortest path: nothing certainly missing
    assert trace.wrong(1).sum() == 0 and trace.wrong(2).sum() == 0  # either path is right
    assert np.argwhere(trace.wrong(3)).tolist() == [[0, 3]]  # the mark off every shortest path
    corridor = MazeTask(3).parse("S..\n##.\nG..")  # one shortest path
    path = parse_maze("Soo\n##o\nGoo")
    gap = path.copy()
    gap[1, 2] = corridor[1, 2]
    wall = path.copy()
    wall[1, 0] = path[0, 1]
    corridor_trace = Trace(MazeTask(3), corridor, [gap, wall], [0.5, 0.5])
    assert np.argwhere(corridor_trace.wrong(0)).tolist() == [[1, 2]]  # on the only shortest path, unmarked
    assert np.argwhere(corridor_trace.wrong(1)).tolist() == [[1, 0]]  # a wall turned into a path mark


def test_arc_trace_handles_shape_changes(tmp_path):
    x, y = np.array([[1, 2], [3, 4]]), np.array([[4, 3], [2, 1]])
    trace = Trace(Arc(), x, [x, y[:1], y], [0.3, 0.5, 0.7], truth=y)
    assert trace.changed(1).all() and trace.wrong(1).all()  # another shape: every cell changed and wrong
    assert trace.wrong(2).sum() == 0 and trace.valid(2) is None
    gif = Image.open(save_trace(trace, tmp_path / "a.gif"))
    assert gif.n_frames == 3
    sizes = set()
    for k in range(3):
        gif.seek(k)
        sizes.add(gif.size)
    assert len(sizes) == 1
    assert "step 2: halt probability 0.500, 2 cells changed, 2 wrong" in trace_text(trace)


def test_numbered_paths():
    assert numbered(Path("d/t.png"), None) == Path("d/t.png")
    assert numbered(Path("d/t.png"), "abc_2") == Path("d/t_abc_2.png")


def tiny(seq_len: int, vocab: int, steps: int = 3) -> TRM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, seq_len=seq_len, hidden_size=32, num_heads=2, T=1, n=1, N_sup=steps)
    return TRM(cfg)


@pytest.fixture
def sudoku_ckpt(tmp_path):
    ckpt = tmp_path / "sudoku"
    tiny(16, 11).save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "sudoku", "size": 4}))
    return ckpt


def test_solve_writes_a_png_and_a_gif_trace(sudoku_ckpt, tmp_path, capsys):
    gif = tmp_path / "out" / "t.gif"
    assert main(["solve", str(sudoku_ckpt), "12..34....21....", "--trace", "--out", str(gif), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "step 3: halt probability" in out and "cells changed" in out and f"trace written to {gif}" in out
    assert Image.open(gif).n_frames == 3
    png = tmp_path / "t.png"
    listing = tmp_path / "puzzles.txt"
    listing.write_text("12..34....21....\n1..4............\n")
    assert main(["solve", str(sudoku_ckpt), str(listing), "--out", str(png), "--steps", "2", "--device", "cpu"]) == 0
    assert "step 1:" not in capsys.readouterr().out  # a picture without --trace prints no text trace
    question, steps, solution = panels(Trace(SudokuTask(4), np.zeros(16), [np.zeros(16)] * 2, [0.0, 0.0]))
    for name in ("t_1.png", "t_2.png"):  # one sheet per puzzle: question and two steps (no unique solution known)
        assert Image.open(tmp_path / name).size == Layout.of([question, *steps], 6).size
    assert not png.exists()


def test_solve_maze_trace_and_an_unwritable_picture_is_one_line(tmp_path, capsys):
    ckpt = tmp_path / "maze"
    tiny(16, 6, steps=2).save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "maze", "size": 4}))
    png = tmp_path / "m.png"
    assert main(["solve", str(ckpt), MAZE, "--trace", "--out", str(png), "--device", "cpu"]) == 0
    assert "step 2: halt probability" in capsys.readouterr().out
    assert Image.open(png).size[0] > 300
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["solve", str(ckpt), MAZE, "--out", str(blocker / "m.gif"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trm: error:") and err.count("\n") == 1


def test_trace_of_a_data_set_example_knows_its_label(tmp_path):
    from trm.data import load_split
    from trm.tasks.sudoku import build_dataset

    pairs = [(p, s) for p, s, _ in generate(3, 4, np.random.default_rng(1))]
    build_dataset(tmp_path / "d", pairs[:2], pairs[2:], progress=False)
    trace = trace_example(tiny(16, 11, steps=2), SudokuTask(4), load_split(tmp_path / "d", "test"), 0)
    assert len(trace.answers) == 2 and len(trace.halt) == 2
    np.testing.assert_array_equal(trace.truth, pairs[2][1])
    np.testing.assert_array_equal(trace.wrong(1), trace.answers[1] != pairs[2][1])


def test_solve_arc_task_draws_the_trace_of_each_test_input(tmp_path, capsys):
    from trm.tasks import arc

    fixture = Path(__file__).parent / "fixtures" / "arc_mini" / "arc-agi"
    task = arc.load_subset(fixture, "evaluation")[0]
    task_file = tmp_path / f"{task.name}.json"
    task_file.write_text(json.dumps(task.raw))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=12, seq_len=900, num_puzzle_identifiers=5, hidden_size=32, num_heads=2, T=1, n=1,
                      N_sup=2, puzzle_emb_ndim=32, puzzle_emb_len=1)  # fmt: skip
    ckpt = tmp_path / "arc"
    TRM(cfg).save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "arc"}))
    gif = tmp_path / "arc.gif"
    argv = ["solve", str(ckpt), str(task_file), "--aug", "1", "--adapt-steps", "1", "--adapt-batch", "2",
            "--trace", "--out", str(gif), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step 2: halt probability" in out and "attempts written" not in out
    drawn = [gif] if len(task.test) == 1 else [numbered(gif, f"{task.name}_{i + 1}") for i in range(len(task.test))]
    for path in drawn:
        assert Image.open(path).n_frames == 2
