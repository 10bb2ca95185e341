"""Sudoku: solver, generator, augmentation, parsing, rendering, sources and the data-set builder, checked
against independent values (a naive validity checker and a brute-force solution counter written here).

Measured on the 2-core CPU dev machine (one core): 1,000 minimal 6x6 puzzles in 1.5 s, 100 minimal 9x9 in
1.2 s; all 1,465 puzzles of magictour top1465 solved and proved unique (solve(limit=2)) in 4.4 s, rated
(limit=1) in 2.5 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trm.data import PuzzleDataset, read_identifiers
from trm.tasks import sudoku

PUZZLE = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36.."
ANSWER = "583427169974136528216859374792364851351298746648715293865971432137642985429583617"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sudoku"
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="shared puzzle collections not present")


def grid_of(text: str) -> np.ndarray:
    return np.array([0 if c == "." else int(c) for c in text], dtype=np.uint8)


def independent_units(grid: np.ndarray) -> list[np.ndarray]:
    size = int(round(len(grid) ** 0.5))
    br, bc = BOXES[size]
    g = np.asarray(grid).reshape(size, size)
    boxes = g.reshape(size // br, br, size // bc, bc).transpose(0, 2, 1, 3).reshape(size, size)
    return [*g, *g.T, *boxes]


def independently_valid(solution: np.ndarray, puzzle: np.ndarray | None = None) -> bool:
    size = int(round(len(solution) ** 0.5))
    if any(sorted(unit.tolist()) != list(range(1, size + 1)) for unit in independent_units(solution)):
        return False
    return puzzle is None or all(p in (0, s) for p, s in zip(puzzle.tolist(), solution.tolist(), strict=True))


def consistent(cells: np.ndarray) -> bool:
    return all(len(set(u[u > 0].tolist())) == np.count_nonzero(u) for u in independent_units(cells))


def brute_force_count(cells: np.ndarray, limit: int = 3) -> int:
    """Naive solution counter: try every digit in the first blank, keep consistent grids."""
    blanks = np.flatnonzero(cells == 0)
    if len(blanks) == 0:
        return int(independently_valid(cells))
    cells, count = cells.copy(), 0
    for d in range(1, int(round(len(cells) ** 0.5)) + 1):
        cells[blanks[0]] = d
        if consistent(cells):
            count += brute_force_count(cells, limit - count)
            if count >= limit:
                break
    return count


# -- solver ------------------------------------------------------------------------------------------------
def test_sudoku_extreme_fixture():
    puzzle = sudoku.parse_puzzle(PUZZLE)
    assert np.array_equal(puzzle, grid_of(PUZZLE)) and puzzle.dtype == np.uint8
    result = sudoku.solve(puzzle, limit=2)
    assert len(result.solutions) == 1
    assert sudoku.format_puzzle(result.solutions[0]) == ANSWER
    assert np.array_equal(sudoku.solution_of(puzzle), grid_of(ANSWER))
    assert sudoku.is_valid_solution(grid_of(ANSWER), puzzle)
    assert sudoku.rating(puzzle) == sudoku.solve(puzzle, limit=1).backtracks >= 0


def test_ambiguous_unsolvable_and_contradictory_puzzles():
    empty = sudoku.solve(np.zeros(81, np.uint8), limit=2)
    assert len(empty.solutions) == 2 and all(independently_valid(s) for s in empty.solutions)
    assert not np.array_equal(*empty.solutions)
    with pytest.raises(sudoku.SudokuError, match="2 or more solutions"):
        sudoku.solution_of(np.zeros(81, np.uint8))
    # one clue fewer than the fixture, and ambiguous: found by the brute-force-free route of the solver
    weaker = grid_of(PUZZLE)
    for i in np.flatnonzero(weaker):
        trial = weaker.copy()
        trial[i] = 0
        if len(sudoku.solve(trial).solutions) == 2:
            break
    else:
        pytest.fail("the fixture has no clue whose removal makes it ambiguous")
    assert all(independently_valid(s, trial) for s in sudoku.solve(trial).solutions)
    # consistent givens, but cell 3 of row 1 can hold nothing: its row has 1 2, its column 3 4
    stuck = sudoku.parse_puzzle("12........3...4.")
    assert brute_force_count(stuck) == 0
    assert sudoku.solve(stuck).solutions == []
    with pytest.raises(sudoku.SudokuError, match="no solution"):
        sudoku.solution_of(stuck)
    with pytest.raises(sudoku.SudokuError, match="contradictory givens"):
        sudoku.solution_of(grid_of("11" + "." * 14))
    assert sudoku.solve(grid_of("11" + "." * 14)).solutions == []


def test_solver_agrees_with_brute_force():
    rng = np.random.default_rng(5)
    for size, trials in ((4, 40), (6, 10)):
        for _ in range(trials):
            solution = sudoku.random_full_grid(size, rng)
            assert independently_valid(solution)
            puzzle = solution.copy()
            n = size * size
            puzzle[rng.choice(n, rng.integers(n // 3, n - 1), replace=False)] = 0
            if rng.random() < 0.5:  # a consistent extra given, often a wrong one: few or no solutions
                blank = rng.choice(np.flatnonzero(puzzle == 0))
                for d in rng.permutation(size) + 1:
                    puzzle[blank] = d
                    if consistent(puzzle):
                        break
            found = sudoku.solve(puzzle, limit=3).solutions
            assert len(found) == brute_force_count(puzzle, limit=3)
            assert all(independently_valid(s, puzzle) for s in found)
            assert len({s.tobytes() for s in found}) == len(found)


@needs_shared
def test_real_hard_puzzles_are_solved():
    texts = sudoku.read_puzzle_list(SHARED / "puzzles3_magictour_top1465")
    assert len(texts) == 1465
    ratings = []
    for text in texts[:30]:
        puzzle = sudoku.parse_puzzle(text)
        solution = sudoku.solution_of(puzzle)
        assert independently_valid(solution, puzzle)
        ratings.append(sudoku.rating(puzzle))
    assert max(ratings) > 0  # these need guessing


@needs_shared
def test_non_unique_benchmark_puzzle_is_rejected():
    first = sudoku.read_puzzle_list(SHARED / "puzzles7_serg_benchmark")[0]
    assert first == "8.........95.......76.........426798...571243...893165......916....3.487....1.532"
    puzzle = sudoku.parse_puzzle(first)
    found = sudoku.solve(puzzle, limit=2).solutions
    assert len(found) == 2 and all(independently_valid(s, puzzle) for s in found)
    with pytest.raises(sudoku.SudokuError, match="2 or more solutions"):
        sudoku.solution_of(puzzle)


# -- generator ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,count", [(4, 30), (6, 30), (9, 4)])
def test_generator_makes_unique_minimal_puzzles(size, count):
    out = sudoku.generate(count, size, np.random.default_rng(size))
    assert len(out) == count
    for puzzle, solution, score in out:
        assert puzzle.shape == solution.shape == (size * size,)
        assert independently_valid(solution, puzzle)
        assert len(sudoku.solve(puzzle, limit=2).solutions) == 1
        assert score == sudoku.rating(puzzle)
        if size < 9:
            for i in np.flatnonzero(puzzle):
                weaker = puzzle.copy()
                weaker[i] = 0
                assert len(sudoku.solve(weaker, limit=2).solutions) == 2
                if size == 4:
                    assert brute_force_count(weaker, limit=2) == 2
    again = sudoku.generate(count, size, np.random.default_rng(size))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(out, again, strict=True))
    other = sudoku.generate(count, size, np.random.default_rng(size + 100))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(out, other, strict=True))


def test_generator_honours_min_rating_and_reports_progress():
    ticks = []
    out = sudoku.generate(3, 9, np.random.default_rng(0), min_rating=3, progress=ticks.append)
    assert len(out) == 3 and ticks == [1, 1, 1]
    assert all(score >= 3 and score == sudoku.rating(p) for p, _, score in out)


def test_distinct_generation_drops_repeats_and_keeps_the_first_made_order():
    made = sudoku.generate(200, 4, np.random.default_rng(7))
    seen, first_seen = set(), []  # each puzzle's first occurrence, in order
    for p, _, _ in made:
        if p.tobytes() not in seen:
            seen.add(p.tobytes())
            first_seen.append(p)
    assert len(first_seen) < 200  # 4x4 repeats puzzles: the case this is for
    ticks = []
    out = sudoku.generate_distinct(200, 4, np.random.default_rng(7), progress=ticks.append)
    assert len(out) == 200 and len({p.tobytes() for p, _, _ in out}) == 200
    assert sum(ticks) == 200  # the replacement draws are not counted twice
    # the same stream with the repeats taken out, then more puzzles to make up the count
    assert all(np.array_equal(a, b[0]) for a, b in zip(first_seen, out[: len(first_seen)], strict=True))
    assert all(len(sudoku.solve(p, limit=2).solutions) == 1 and independently_valid(s, p) for p, s, _ in out)
    # every cell given: one puzzle per full 4x4 grid, and there are 288 of them
    with pytest.raises(sudoku.SudokuError, match="only 288 distinct 4x4 puzzles found of 300 asked"):
        sudoku.generate_distinct(300, 4, np.random.default_rng(0), givens=16)


# -- augmentation ------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([4, 6, 9]))
def test_augmentation_keeps_validity(seed, size):
    rng = np.random.default_rng(seed)
    solution = sudoku.random_full_grid(size, rng)
    puzzle = np.where(rng.random(size * size) < 0.5, solution, 0).astype(np.uint8)
    p, s = sudoku.augment(puzzle, solution, rng)
    assert independently_valid(s, p)
    assert np.count_nonzero(p) == np.count_nonzero(puzzle)
    assert sorted(np.bincount(p, minlength=size + 1)[1:]) == sorted(np.bincount(puzzle, minlength=size + 1)[1:])
    # the same transform on both: blanks of the augmented puzzle sit where the solution was hidden
    assert len(sudoku.solve(p, limit=3).solutions) == len(sudoku.solve(puzzle, limit=3).solutions)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_augmentation_is_usually_not_the_identity(size):
    rng = np.random.default_rng(size)
    solution = sudoku.random_full_grid(size, rng)
    changed = sum(not np.array_equal(sudoku.augment(solution, solution, rng)[1], solution) for _ in range(50))
    assert changed >= 45


def test_augmentation_preserves_unique_solutions():
    rng = np.random.default_rng(0)
    for puzzle, solution, _ in sudoku.generate(5, 6, rng):
        p, s = sudoku.augment(puzzle, solution, rng)
        assert np.array_equal(sudoku.solution_of(p), s)


# -- parsing and rendering ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,message",
    [
        (PUZZLE[:-1], "puzzle has 80 cells; a Sudoku needs"),
        ("." * 17, "puzzle has 17 cells"),
        ("12.x" + "." * 12, "unknown character 'x' at cell 4"),
        ("5" + "." * 15, "digit 5 at cell 1 is outside 1..4"),
        ("7" + "." * 35, "digit 7 at cell 1 is outside 1..6"),
        ("11" + "." * 14, "contradictory givens: digit 1 twice in row 1"),
        ("1...1..." + "." * 8, "contradictory givens: digit 1 twice in column 1"),
        ("1....1.." + "." * 8, "contradictory givens: digit 1 twice in box 1"),
        ("." * 80 + "9" + "", None),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    if message is None:
        assert sudoku.parse_puzzle(text)[-1] == 9
        return
    with pytest.raises(sudoku.SudokuError, match=message) as err:
        sudoku.parse_puzzle(text)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_parse_explicit_size_and_blanks():
    assert sudoku.parse_puzzle("1_0." + "." * 12).tolist() == [1] + [0] * 15
    with pytest.raises(sudoku.SudokuError, match="puzzle has 16 cells; a 9x9 Sudoku needs 81"):
        sudoku.parse_puzzle("." * 16, size=9)
    assert sudoku.box_shape(6) == (2, 3) and sudoku.size_from_length(36) == 6
    with pytest.raises(sudoku.SudokuError, match="unsupported Sudoku size 5"):
        sudoku.box_shape(5)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_rendered_grids_paste_back(size):
    puzzle, solution, _ = sudoku.generate(1, size, np.random.default_rng(1))[0]
    assert np.array_equal(sudoku.parse_puzzle(sudoku.render(puzzle)), puzzle)
    shown = sudoku.render(solution, puzzle)
    assert np.array_equal(sudoku.parse_puzzle(shown), solution)
    assert shown.count(sudoku.FILLED_MARK) == size * size - np.count_nonzero(puzzle) + 1  # + the note's
    assert np.array_equal(sudoku.parse_puzzle(sudoku.format_puzzle(solution)), solution)
    assert len(sudoku.render(puzzle).splitlines()) == size + size // BOXES[size][0] - 1


def test_render_marks_changed_givens_and_diff_marks_wrong_cells():
    puzzle, solution = grid_of(PUZZLE), grid_of(ANSWER)
    wrong = solution.copy()
    wrong[0], wrong[1] = 4, 1  # cell 0 is a given (5), cell 1 was blank (8)
    assert "4!" in sudoku.render(wrong, puzzle) and "1 given changed" in sudoku.render(wrong, puzzle)
    diff = sudoku.render_diff(wrong, solution)
    assert diff.splitlines()[0].startswith("4x 1x 3 ")
    assert diff.count("x") == 2 + 1 and "2 of 81 cells wrong" in diff
    assert "x" not in sudoku.render_diff(solution, solution).splitlines()[0]


def test_is_valid_solution_rejects():
    solution = grid_of(ANSWER)
    assert sudoku.is_valid_solution(solution)
    swapped = solution.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert not sudoku.is_valid_solution(swapped)
    assert not sudoku.is_valid_solution(grid_of(PUZZLE))  # incomplete
    assert not sudoku.is_valid_solution(solution[:80])
    other_puzzle = grid_of(PUZZLE)
    other_puzzle[1] = 9
    assert not sudoku.is_valid_solution(solution, other_puzzle)
    # rows and columns all permutations, boxes not: a cyclic Latin square
    latin = np.array([(r + c) % 4 + 1 for r in range(4) for c in range(4)], np.uint8)
    assert not sudoku.is_valid_solution(latin) and not independently_valid(latin)


# -- sources -----------------------------------------------------------------------------------------------
def test_read_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(f"source,question,answer,rating\nx,{PUZZLE},{ANSWER},3\ny,{PUZZLE},{ANSWER},0\n")
    rows = sudoku.read_csv(path, min_rating=1)
    assert len(rows) == 1 and rows[0][2] == 3
    assert np.array_equal(rows[0][0], grid_of(PUZZLE)) and np.array_equal(rows[0][1], grid_of(ANSWER))
    assert len(sudoku.read_csv(path)) == 2
    bad = ANSWER[:-2] + ANSWER[-1] + ANSWER[-2]
    for text, message in [
        (f"x,{PUZZLE},{ANSWER},3\ny,{PUZZLE},{bad},0\n", "line 3: the answer does not solve the question"),
        (f"x,{PUZZLE},{ANSWER},3\ny,{PUZZLE[:-1]},{ANSWER},0\n", "line 3: question: puzzle has 80 cells"),
        (f"x,{PUZZLE},{ANSWER},3\ny,{PUZZLE},{ANSWER},hard\n", "line 3: rating 'hard' is not an integer"),
        (f"x,{PUZZLE},{ANSWER}\n", "line 2: expected 4 columns"),
        (f"x,{PUZZLE},{ANSWER[:40]}x{ANSWER[41:]},1\n", "line 2: answer: unknown character 'x' at cell 41"),
        (f"x,{'11' + PUZZLE[2:]},{ANSWER},1\n", "line 2: the answer does not solve the question"),
    ]:
        path.write_text("source,question,answer,rating\n" + text)
        with pytest.raises(sudoku.SudokuError, match=message):
            sudoku.read_csv(path)
    path.write_text(f"q,a\n{PUZZLE},{ANSWER}\n")
    with pytest.raises(sudoku.SudokuError, match="expected the header"):
        sudoku.read_csv(path)
    with pytest.raises(sudoku.SudokuError, match="cannot read"):
        sudoku.read_csv(tmp_path / "missing.csv")


def test_read_csv_subsample_is_seeded(tmp_path):
    rng = np.random.default_rng(0)
    puzzle, solution = grid_of(PUZZLE), grid_of(ANSWER)
    lines = ["source,question,answer,rating"]
    for k in range(50):
        p, s = sudoku.augment(puzzle, solution, rng)
        lines.append(f"src,{sudoku.format_puzzle(p)},{sudoku.format_puzzle(s)},{k}")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    a = sudoku.read_csv(path, min_rating=10, subsample=5, rng=np.random.default_rng(3))
    b = sudoku.read_csv(path, min_rating=10, subsample=5, rng=np.random.default_rng(3))
    assert [r[2] for r in a] == [r[2] for r in b] and len(a) == 5
    assert all(r[2] >= 10 for r in a) and [r[2] for r in a] == sorted(r[2] for r in a)
    assert all(independently_valid(s, p) for p, s, _ in a)


def test_read_puzzle_list(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(f"# comment\n\n{PUZZLE}  extra text\n  # indented comment\n{ANSWER}\n")
    assert sudoku.read_puzzle_list(path) == [PUZZLE, ANSWER]


def test_hf_download_uses_the_hub(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    local = tmp_path / "train.csv"
    local.write_text(f"source,question,answer,rating\nx,{PUZZLE},{ANSWER},3\n")
    calls = []
    monkeypatch.setattr(hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(local))
    path = sudoku.download_sudoku_extreme("train")
    assert calls[0]["repo_id"] == "sapientinc/sudoku-extreme" and calls[0]["repo_type"] == "dataset"
    assert calls[0]["filename"] == "train.csv"
    assert len(sudoku.read_csv(path)) == 1

    def offline(**kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    with pytest.raises(sudoku.SudokuError, match="cannot download sapientinc/sudoku-extreme test.csv") as err:
        sudoku.download_sudoku_extreme("test")
    assert "\n" not in str(err.value)


def test_hf_download_without_the_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(sudoku.SudokuError, match="needs huggingface_hub"):
        sudoku.download_sudoku_extreme("train")


# -- data sets ---------------------------------------------------------------------------------------------
def test_build_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    pairs = [(p, s) for p, s, _ in sudoku.generate(12, 6, rng)]
    ticks = []
    summary = sudoku.build_dataset(tmp_path, pairs[:10], pairs[10:], aug=3, seed=0, progress=ticks.append)
    assert summary["size"] == 6 and len(ticks) == 12
    assert summary["train"] == {"groups": 10, "puzzles": 40, "examples": 40}
    assert summary["test"] == {"groups": 2, "puzzles": 2, "examples": 2}
    assert read_identifiers(tmp_path) == ["<blank>"]
    assert json.loads((tmp_path / "task.json").read_text()) == {"task": "sudoku", "size": 6}

    train = PuzzleDataset(tmp_path, "train")
    meta = train.metadata
    assert (meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers, meta.pad_id) == (11, 36, 1, 0)
    assert len(train.group_indices) == 11 and len(train.puzzle_indices) == 41
    assert np.array_equal(train.group_indices, np.arange(0, 41, 4))
    assert np.array_equal(train.puzzle_indices, np.arange(41))  # one example per puzzle
    assert not np.any(train.puzzle_identifiers)
    assert train.inputs.shape == train.labels.shape == (40, 36) and train.inputs.dtype == np.uint8
    assert train.inputs.min() >= 1 and train.labels.min() >= 2 and train.labels.max() <= 7
    for k in range(40):
        puzzle, solution = np.asarray(train.inputs[k]) - 1, np.asarray(train.labels[k]) - 1
        assert np.array_equal(sudoku.decode(train.inputs[k], 6), puzzle)
        assert independently_valid(solution, puzzle)
        assert np.count_nonzero(puzzle) == np.count_nonzero(pairs[k // 4][0])
    for g in range(10):  # the original leads its group, followed by augmented copies
        assert np.array_equal(train.inputs[4 * g], sudoku.encode(pairs[g][0]))
        assert not all(np.array_equal(train.labels[4 * g + j], train.labels[4 * g]) for j in (1, 2, 3))

    test = PuzzleDataset(tmp_path, "test")
    assert len(test.inputs) == 2 and len(test.group_indices) == 3
    assert np.array_equal(test.inputs[1], sudoku.encode(pairs[11][0]))
    assert np.array_equal(test.labels[1], sudoku.encode(pairs[11][1]))

    again = tmp_path / "again"
    sudoku.build_dataset(again, pairs[:10], pairs[10:], aug=3, seed=0, progress=False)
    assert np.array_equal(PuzzleDataset(again, "train").inputs, train.inputs)  # seeded


def test_build_dataset_rejects_bad_pairs(tmp_path):
    puzzle, solution = grid_of(PUZZLE), grid_of(ANSWER)
    swapped = solution.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    with pytest.raises(sudoku.SudokuError, match="train puzzle 2: the solution does not solve the puzzle"):
        sudoku.build_dataset(tmp_path, [(puzzle, solution), (puzzle, swapped)], [], aug=1, progress=False)
    assert not (tmp_path / "train" / "dataset.json").exists()
    small = sudoku.generate(1, 4, np.random.default_rng(0))[0][:2]
    with pytest.raises(sudoku.SudokuError, match="several sizes"):
        sudoku.build_dataset(tmp_path, [(puzzle, solution)], [small], progress=False)
    with pytest.raises(sudoku.SudokuError, match="no puzzles"):
        sudoku.build_dataset(tmp_path, [], [], progress=False)


def test_task_protocol():
    task = sudoku.SudokuTask(9)
    puzzle = task.parse(PUZZLE)
    tokens = task.encode(puzzle)
    assert tokens.tolist() == [v + 1 for v in grid_of(PUZZLE).tolist()]
    assert np.array_equal(task.decode(tokens), puzzle)
    assert task.is_solution(grid_of(ANSWER), puzzle) and task.format(puzzle) == PUZZLE
    assert sudoku.VOCAB_SIZE == 11
