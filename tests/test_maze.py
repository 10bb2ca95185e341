"""Mazes: generator, shortest-path checker, dihedral augmentation, parsing, rendering, sources and the data-set
builder, checked against independent code written here (a BFS over character rows and a path walker).

Measured on the 2-core CPU dev machine (one core, shared): 1,000 30x30 mazes with shortest paths of at least
110 moves (Maze-Hard's filter) generated in 2.2 s, validated in 0.2 s.
"""

from __future__ import annotations

import json
import sys
from collections import deque

import numpy as np
import pytest

from trm.data import load_split, read_identifiers
from trm.data.grids import DIHEDRAL_INVERSE
from trm.tasks import maze

# Two shortest paths of 4 moves from S to G (around the wall at row 2, column 2), and longer ones below.
TWO_WAYS = ["S  ##", " # ##", "  G##", "   ##", "#####"]
VIA_TOP = ["Soo##", " #o##", "  G##", "   ##", "#####"]
VIA_LEFT = ["S  ##", "o# ##", "ooG##", "   ##", "#####"]
DETOUR = ["S  ##", "o# ##", "o G##", "ooo##", "#####"]  # a simple path, but 6 moves
BROKEN = ["So ##", " #o##", "  G##", "   ##", "#####"]


def grid(rows: list[str]) -> np.ndarray:
    """Independent encoding: '#'=1, ' '=2, 'S'=3, 'G'=4, 'o'=5."""
    return np.array([["# SGo".index(ch) + 1 for ch in row] for row in rows], dtype=np.uint8)


def chars(g: np.ndarray) -> list[str]:
    return ["".join("# SGo"[v - 1] for v in row) for row in np.asarray(g).tolist()]


def find(rows: list[str], ch: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x == ch]


def bfs_length(rows: list[str]) -> int | None:
    """Moves on a shortest S-G path through non-wall cells, by a plain BFS over the characters."""
    n = len(rows)
    (start,), (goal,) = find(rows, "S"), find(rows, "G")
    seen = {start: 0}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        if (r, c) == goal:
            return seen[goal]
        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= rr < n and 0 <= cc < n and rows[rr][cc] != "#" and (rr, cc) not in seen:
                seen[(rr, cc)] = seen[(r, c)] + 1
                queue.append((rr, cc))
    return None


def walk(rows: list[str]) -> int | None:
    """Follow the 'o' cells from S: moves to G if they form one simple path that uses every mark, else None."""
    marks = set(find(rows, "o"))
    (start,), (goal,) = find(rows, "S"), find(rows, "G")
    here, prev, moves = start, None, 0
    while here != goal:
        steps = [
            (r, c)
            for r, c in ((here[0] + 1, here[1]), (here[0] - 1, here[1]), (here[0], here[1] + 1), (here[0], here[1] - 1))
            if (r, c) != prev and ((r, c) in marks or (r, c) == goal)
        ]
        if len(steps) != 1 and goal not in steps:
            return None
        prev, here = here, goal if goal in steps else steps[0]
        moves += 1
    return moves if moves == len(marks) + 1 else None


def independently_valid(answer: np.ndarray, question: np.ndarray) -> bool:
    a, q = chars(answer), chars(question)
    for ra, rq in zip(a, q, strict=True):
        if any(x != y and not (x == "o" and y == " ") for x, y in zip(ra, rq, strict=True)):
            return False
    moves = walk(a)
    return moves is not None and moves == bfs_length(q)


# -- checker -------------------------------------------------------------------------------------------------
def test_two_shortest_paths_both_accepted_longer_and_broken_rejected():
    question = grid(TWO_WAYS)
    assert bfs_length(TWO_WAYS) == 4
    for rows in (VIA_TOP, VIA_LEFT):
        assert maze.is_valid_shortest_path(grid(rows), question)
        assert independently_valid(grid(rows), question)
    assert walk(DETOUR) == 6
    assert not maze.is_valid_shortest_path(grid(DETOUR), question)
    assert walk(BROKEN) is None and not maze.is_valid_shortest_path(grid(BROKEN), question)
    both = np.maximum(grid(VIA_TOP), grid(VIA_LEFT))
    assert not maze.is_valid_shortest_path(both, question)
    on_wall = grid(VIA_TOP)
    on_wall[1, 1] = maze.PATH
    assert not maze.is_valid_shortest_path(on_wall, question)
    moved_wall = grid(VIA_TOP)
    moved_wall[4, 0] = maze.OPEN
    assert not maze.is_valid_shortest_path(moved_wall, question)
    assert not maze.is_valid_shortest_path(question, question)  # nothing marked
    assert not maze.is_valid_shortest_path(grid(VIA_TOP)[:4, :4], question)
    assert maze.is_valid_shortest_path(grid(VIA_TOP), grid(VIA_LEFT))  # 'o' in the question reads as open
    # the BFS answer is one of the two, S and G excluded
    assert chars(maze.label(question)) in (VIA_TOP, VIA_LEFT)
    path = maze.shortest_path(question)
    assert path[0] == (0, 0) and path[-1] == (2, 2) and len(path) == 5


def test_adjacent_start_and_goal_and_blocked_maze():
    question = grid(["SG#", "  #", "###"])
    assert maze.shortest_path(question) == [(0, 0), (0, 1)]
    assert maze.is_valid_shortest_path(question, question) and np.array_equal(maze.label(question), question)
    blocked = grid(["S#G", "  #", "###"])
    assert bfs_length(chars(blocked)) is None and maze.shortest_path(blocked) is None
    with pytest.raises(maze.MazeError, match="no path from S to G"):
        maze.label(blocked)
    assert not maze.is_valid_shortest_path(blocked, blocked)


def test_score_counts_exact_and_alternative_paths():
    question = grid(TWO_WAYS)
    preds = [grid(VIA_TOP), grid(VIA_LEFT), grid(DETOUR), grid(VIA_TOP).reshape(-1)]
    res = maze.score(preds, [question] * 4, [grid(VIA_TOP)] * 4)
    assert res == {"exact_accuracy": 0.5, "valid_shortest_path": 0.75}
    with pytest.raises(maze.MazeError, match="2 predictions, 1 questions"):
        maze.score(preds[:2], [question], [question])


# -- generator -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,min_path", [(9, 0), (12, 20), (15, 40)])
def test_generated_mazes_are_solved_by_a_shortest_path(size, min_path):
    ticks = []
    out = maze.generate(25, size, np.random.default_rng(size), min_path=min_path, progress=ticks.append)
    assert len(out) == 25 and ticks == [1] * 25
    for question, answer, length in out:
        assert question.shape == answer.shape == (size, size) and question.dtype == np.uint8
        rows = chars(question)
        assert len(find(rows, "S")) == len(find(rows, "G")) == 1 and not find(rows, "o")
        best = bfs_length(rows)
        assert best is not None and best == length >= max(min_path, 1)
        assert independently_valid(answer, question)
        assert np.count_nonzero(answer == maze.PATH) == length - 1
        assert maze.is_valid_shortest_path(answer, question)
    again = maze.generate(25, size, np.random.default_rng(size), min_path=min_path)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(out, again, strict=True))
    other = maze.generate(25, size, np.random.default_rng(size + 100), min_path=min_path)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(out, other, strict=True))
    assert len({q.tobytes() for q, _, _ in out}) == 25


def test_maze_hard_sized_generation():
    out = maze.generate(10, maze.HARD_SIZE, np.random.default_rng(0), min_path=maze.HARD_MIN_PATH)
    for question, answer, length in out:
        assert question.shape == (30, 30)
        assert bfs_length(chars(question)) == length >= 110
        assert independently_valid(answer, question)


def test_generator_rejects_impossible_requests():
    with pytest.raises(maze.MazeError, match="at least 3"):
        maze.generate(1, 2, np.random.default_rng(0))
    with pytest.raises(maze.MazeError, match="no 5x5 maze has a shortest path of 30"):
        maze.generate(1, 5, np.random.default_rng(0), min_path=30)
    with pytest.raises(maze.MazeError, match="in 20 tries; lower min_path"):
        maze.generate(1, 5, np.random.default_rng(0), min_path=20, max_tries=20)


# -- augmentation --------------------------------------------------------------------------------------------
def test_dihedral_transforms_are_distinct_invertible_and_official():
    g = np.arange(25).reshape(5, 5)
    n = 5
    explicit = [
        g,
        np.array([[g[j, n - 1 - i] for j in range(n)] for i in range(n)]),  # counter-clockwise quarter turn
        g[::-1, ::-1],
        np.array([[g[n - 1 - j, i] for j in range(n)] for i in range(n)]),
        g[:, ::-1],
        g[::-1, :],
        g.T,
        np.array([[g[n - 1 - j, n - 1 - i] for j in range(n)] for i in range(n)]),  # anti-transpose
    ]
    outs = [maze.dihedral(g, t) for t in range(8)]
    assert len({o.tobytes() for o in outs}) == 8
    for t in range(8):
        assert np.array_equal(outs[t], explicit[t])
        assert np.array_equal(maze.dihedral(outs[t], DIHEDRAL_INVERSE[t]), g)
        assert np.array_equal(maze.dihedral(g.reshape(-1), t), explicit[t].reshape(-1))  # flat stays flat
    with pytest.raises(maze.MazeError, match="outside 0..7"):
        maze.dihedral(g, 8)


def test_dihedral_keeps_answers_shortest_paths():
    for question, answer, length in maze.generate(6, 11, np.random.default_rng(3)):
        for t in range(8):
            q, a = maze.dihedral(question, t), maze.dihedral(answer, t)
            assert independently_valid(a, q) and bfs_length(chars(q)) == length
            assert maze.is_valid_shortest_path(a, q)
    for t in range(8):
        assert maze.is_valid_shortest_path(maze.dihedral(grid(VIA_LEFT), t), maze.dihedral(grid(TWO_WAYS), t))


# -- parsing and rendering -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,size,message",
    [
        ("S  ## # ##  G##   ##x####", None, "unknown character 'x' at row 5, column 1"),
        ("S  ##\n # ##\n  G#?\n   ##\n#####", None, "unknown character '\\?' at row 3, column 5"),
        ("   ## # ##  G##   #######", None, "maze has no start 'S'"),
        ("S  ## # ##   ##   #######", None, "maze has no goal 'G'"),
        ("S  ## # ##  G##  S#######", None, "maze has 2 cells start 'S'"),
        ("S  ## # ##  G## G########", None, "maze has 2 cells goal 'G'"),
        ("S  ## # ##  G", None, "maze has 13 cells; a square N x N maze"),
        ("S  ##\n # ##\n  G##", 5, "maze has 3 rows; a 5x5 maze needs 5"),
        ("S  ##\n # ##\n  G##", None, "row 1 of the maze has 5 cells; a 3x3 maze needs 3"),
        ("S  ##\n # ###\n  G##\n   ##\n#####", None, "row 2 of the maze has 6 cells; a 5x5 maze needs 5"),
        ("S##G", None, "no path from S \\(row 1, column 1\\) to G \\(row 2, column 2\\)"),
        ("", None, "empty maze"),
    ],
)
def test_parse_errors_name_the_problem(text, size, message):
    with pytest.raises(maze.MazeError, match=message) as err:
        maze.parse_maze(text, size)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_parse_forms_and_round_trips():
    expected = grid(TWO_WAYS)
    assert np.array_equal(maze.parse_maze("".join(TWO_WAYS)), expected)
    assert np.array_equal(maze.parse_maze("\n".join(TWO_WAYS) + "\n"), expected)
    assert np.array_equal(maze.parse_maze("".join(TWO_WAYS).replace(" ", ".")), expected)
    stripped = "\n".join(row.rstrip() for row in ["S  ##", " #   ", "  G  ", "     ", "#####"])
    assert maze.parse_maze(stripped)[1].tolist() == [2, 1, 2, 2, 2]  # editor-stripped spaces come back
    open_rows = ["     ", "S#G# ", "   # ", "  ## ", "     "]  # all-open first and last rows stay rows
    assert np.array_equal(maze.parse_maze("\n" + "\n".join(open_rows) + "\n\n"), grid(open_rows))
    with pytest.raises(maze.MazeError, match="a 4x4 maze needs 16"):
        maze.parse_maze("".join(TWO_WAYS), size=4)
    question, answer, _ = maze.generate(1, 13, np.random.default_rng(0))[0]
    for g in (question, answer):
        assert np.array_equal(maze.parse_maze(maze.format_maze(g)), g)
        assert np.array_equal(maze.parse_maze(maze.render(g)), g)
        assert np.array_equal(maze.parse_maze(maze.format_maze(g, open_char=".")), g)
    shown = maze.render(answer, question)
    assert shown.splitlines()[:-1] == chars(answer)
    assert "a valid shortest path" in shown and np.array_equal(maze.parse_maze(shown), answer)
    assert "NOT a valid shortest path" in maze.render(grid(DETOUR), grid(TWO_WAYS))
    assert len(maze.format_maze(answer)) == 13 * 13


def test_render_diff_marks_cells_and_knows_other_shortest_paths():
    diff = maze.render_diff(grid(VIA_LEFT), grid(VIA_TOP))
    lines = diff.splitlines()
    assert lines[0] == "S  x x# #"  # two characters per cell, 'x' after each differing one
    assert "6 of 25 cells differ" in lines[-1] and "a valid shortest path" in lines[-1]
    assert "not a valid shortest path" in maze.render_diff(grid(DETOUR), grid(VIA_TOP))
    assert "0 of 25 cells differ" in maze.render_diff(grid(VIA_TOP), grid(VIA_TOP))


# -- sources -------------------------------------------------------------------------------------------------
def csv_text(rows: list[tuple[str, str, str]]) -> str:
    return "source,question,answer,rating\n" + "".join(f"gen,{q},{a},{r}\n" for q, a, r in rows)


def test_read_csv_validates_every_row(tmp_path):
    path = tmp_path / "train.csv"
    mazes = maze.generate(4, 9, np.random.default_rng(7))
    path.write_text(csv_text([(maze.format_maze(q), maze.format_maze(a), str(n)) for q, a, n in mazes]))
    rows = maze.read_csv(path)
    assert len(rows) == 4
    for (q, a, n), (q2, a2, rating) in zip(mazes, rows, strict=True):
        assert np.array_equal(q, q2) and np.array_equal(a, a2) and rating == n
    assert len(maze.read_csv(path, subsample=2, rng=np.random.default_rng(1))) == 2
    q, top, left, detour = ("".join(r) for r in (TWO_WAYS, VIA_TOP, VIA_LEFT, DETOUR))
    path.write_text(csv_text([(q, top, "4"), (q, left, "4.5")]))
    assert [r[2] for r in maze.read_csv(path)] == [4, 4.5]
    for rows_, message in [
        ([(q, top, "4"), (q, detour, "6")], "line 3: the answer is not a shortest path of the question"),
        ([(q, top, "4"), (q, left[:-1] + "x", "4")], "line 3: answer: unknown character 'x' at row 5, column 5"),
        ([(q, top, "4"), (q + "####", top, "4")], "line 3: question: maze has 29 cells"),
        ([(q, top, "4"), (maze.format_maze(mazes[0][0]), top, "4")], "line 3: question: maze has 81 cells; a 5x5"),
        ([(top, top, "4")], "line 2: question: has path marks 'o'"),
        ([(q.replace("G", " "), top, "4")], "line 2: question: maze has no goal"),
        ([(q, top, "hard")], "line 2: rating 'hard' is not a number"),
    ]:
        path.write_text(csv_text(rows_))
        with pytest.raises(maze.MazeError, match=message) as err:
            maze.read_csv(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    path.write_text(f"gen,{q},{top}\n")
    with pytest.raises(maze.MazeError, match="line 1: expected the header"):
        maze.read_csv(path)
    path.write_text(f"source,question,answer,rating\ngen,{q},{top}\n")
    with pytest.raises(maze.MazeError, match="line 2: expected 4 columns"):
        maze.read_csv(path)
    with pytest.raises(maze.MazeError, match="cannot read"):
        maze.read_csv(tmp_path / "missing.csv")


def test_hf_download_uses_the_hub(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    local = tmp_path / "test.csv"
    local.write_text(csv_text([("".join(TWO_WAYS), "".join(VIA_TOP), "4")]))
    calls = []
    monkeypatch.setattr(hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(local))
    path = maze.download_maze_hard("test")
    assert calls[0]["repo_id"] == "sapientinc/maze-30x30-hard-1k" and calls[0]["repo_type"] == "dataset"
    assert calls[0]["filename"] == "test.csv"
    assert len(maze.read_csv(path)) == 1

    def offline(**kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    with pytest.raises(maze.MazeError, match="cannot download sapientinc/maze-30x30-hard-1k train.csv") as err:
        maze.download_maze_hard("train")
    assert "\n" not in str(err.value)


def test_hf_download_without_the_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(maze.MazeError, match="needs huggingface_hub"):
        maze.download_maze_hard("train")


# -- data sets -----------------------------------------------------------------------------------------------
def test_build_dataset_round_trip(tmp_path):
    mazes = maze.generate(6, 9, np.random.default_rng(11))
    train, test = mazes[:4], mazes[4:]
    ticks = []
    summary = maze.build_dataset(tmp_path, train, test, aug=True, progress=ticks.append)
    distinct = [
        len({maze.dihedral(q, t).tobytes() + maze.dihedral(a, t).tobytes() for t in range(8)}) for q, a, _ in train
    ]
    assert summary["size"] == 9 and len(ticks) == 6
    assert summary["train"] == {"groups": 4, "puzzles": sum(distinct), "examples": sum(distinct)}
    assert summary["test"] == {"groups": 2, "puzzles": 2, "examples": 2}
    assert read_identifiers(tmp_path) == ["<blank>"]
    assert json.loads((tmp_path / "task.json").read_text()) == {"task": "maze", "size": 9}

    ds = load_split(tmp_path, "train")
    meta = ds.metadata
    assert (meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers, meta.pad_id, meta.ignore_label_id) == (
        6,
        81,
        1,
        0,
        0,
    )
    assert np.array_equal(ds.group_indices, np.concatenate([[0], np.cumsum(distinct)]))
    assert np.array_equal(ds.puzzle_indices, np.arange(sum(distinct) + 1)) and not np.any(ds.puzzle_identifiers)
    assert ds.inputs.min() >= 1 and ds.inputs.max() <= 4 and ds.labels.max() == 5
    for g, (q, a, _) in enumerate(train):
        lo, hi = ds.group_indices[g], ds.group_indices[g + 1]
        assert np.array_equal(ds.inputs[lo], q.reshape(-1)) and np.array_equal(ds.labels[lo], a.reshape(-1))
        shown = {(ds.inputs[i].tobytes(), ds.labels[i].tobytes()) for i in range(lo, hi)}
        expected = {(maze.dihedral(q, t).tobytes(), maze.dihedral(a, t).tobytes()) for t in range(8)}
        assert shown == expected
        for i in range(lo, hi):
            assert independently_valid(ds.labels[i].reshape(9, 9), ds.inputs[i].reshape(9, 9))

    plain = maze.build_dataset(tmp_path / "plain", train, test, aug=False, progress=False)
    assert plain["train"] == {"groups": 4, "puzzles": 4, "examples": 4}
    ts = load_split(tmp_path, "test")
    assert np.array_equal(ts.inputs[1], test[1][0].reshape(-1)) and np.array_equal(ts.labels[1], test[1][1].reshape(-1))


def test_build_dataset_drops_symmetric_duplicates_and_rejects_bad_pairs(tmp_path):
    question, answer = grid(["#S#", "# #", "#G#"]), grid(["#S#", "#o#", "#G#"])  # mirror-symmetric left-right
    summary = maze.build_dataset(tmp_path, [(question, answer)], [(question, answer)], aug=True, progress=False)
    assert summary["train"] == {"groups": 1, "puzzles": 4, "examples": 4}
    with pytest.raises(maze.MazeError, match="train maze 2: the answer is not a shortest path"):
        maze.build_dataset(tmp_path, [(grid(TWO_WAYS), grid(VIA_TOP)), (grid(TWO_WAYS), grid(DETOUR))], [], aug=False)
    with pytest.raises(maze.MazeError, match="several sizes"):
        maze.build_dataset(tmp_path, [(grid(TWO_WAYS), grid(VIA_TOP))], [(question, answer)], aug=False)
    with pytest.raises(maze.MazeError, match="no mazes"):
        maze.build_dataset(tmp_path, [], [], aug=False)


# -- task ----------------------------------------------------------------------------------------------------
def test_maze_task():
    task = maze.MazeTask(5)
    assert task.name == "maze"
    puzzle = task.parse("\n".join(VIA_TOP))  # path marks are dropped: the model gets the question
    assert np.array_equal(puzzle, grid(TWO_WAYS))
    tokens = task.encode(puzzle)
    assert tokens.shape == (25,) and tokens.tolist() == grid(TWO_WAYS).reshape(-1).tolist()
    pred = grid(VIA_LEFT).reshape(-1).astype(np.int64)
    assert task.is_solution(task.decode(pred), puzzle)
    noisy = pred.copy()
    noisy[[3, 4]] = [0, 9]  # PAD and out of range: clipped to wall and path
    assert task.decode(noisy).reshape(-1)[[3, 4]].tolist() == [1, 5]
    line = task.format(task.decode(pred))
    assert " " not in line and np.array_equal(maze.parse_maze(line), grid(VIA_LEFT))
    assert np.array_equal(task.parse(line), puzzle)
    assert "a valid shortest path" in task.render(grid(VIA_LEFT), puzzle)
    with pytest.raises(maze.MazeError, match="a 5x5 maze needs 25"):
        task.parse("S G")


@pytest.mark.parametrize(
    ("question", "message"),
    [("   ## # ##  G##   #######", "no start 'S'"), ("S  ## # ##  G##   ##x####", "unknown character 'x'")],
)
def test_cli_rejects_bad_maze_csv_in_one_line(tmp_path, capsys, question, message):
    from trm.cli import main

    answer = "S  ## # ##  G##   #######"
    path = tmp_path / "bad.csv"
    path.write_text(f"source,question,answer,rating\nx,{question},{answer},0\n")
    code = main(["data", "maze", "--out", str(tmp_path / "out"), "--csv", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("trm: error:")
    assert not (tmp_path / "out" / "train" / "dataset.json").exists()
