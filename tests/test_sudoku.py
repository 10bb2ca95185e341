"""Sudoku: solver, generator, augmentation, parsing and builders against independent checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trm.data import load_split
from trm.tasks import sudoku

PUZZLE = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36.."
ANSWER = "583427169974136528216859374792364851351298746648715293865971432137642985429583617"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sudoku"


def brute_force_count(cells: np.ndarray, limit: int = 3) -> int:
    """An independent, naive solution counter (try every digit in the first blank)."""
    cells = cells.copy()
    size = sudoku.size_from_length(len(cells))
    blanks = np.flatnonzero(cells == 0)
    if len(blanks) == 0:
        return int(sudoku.is_valid_solution(cells))
    i = blanks[0]
    count = 0
    for d in range(1, size + 1):
        cells[i] = d
        try:
            sudoku.check_givens(cells)
        except sudoku.SudokuError:
            continue
        count += brute_force_count(cells, limit - count)
        if count >= limit:
            break
    return count


def test_sudoku_extreme_fixture():
    puzzle = sudoku.parse_puzzle(PUZZLE)
    solution = sudoku.solution_of(puzzle)
    assert sudoku.format_puzzle(solution) == ANSWER
    assert sudoku.is_valid_solution(solution, puzzle)
    assert sudoku.rating(puzzle) >= 0


def test_ambiguous_and_unsolvable_puzzles():
    with pytest.raises(sudoku.SudokuError, match="2 or more solutions"):
        sudoku.solution_of(np.zeros(81, np.uint8))
    # consistent givens, but cell 3 of row 1 can hold nothing: row has 1 2, column has 3 4
    stuck = sudoku.parse_puzzle("12........3...4.")
    assert brute_force_count(stuck) == 0
    with pytest.raises(sudoku.SudokuError, match="no solution"):
        sudoku.solution_of(stuck)


def test_solver_agrees_with_brute_force_on_4x4():
    rng = np.random.default_rng(5)
    for _ in range(30):
        solution = sudoku.random_full_grid(4, rng)
        puzzle = solution.copy()
        puzzle[rng.choice(16, rng.integers(6, 14), replace=False)] = 0
        found = len(sudoku.solve(puzzle, limit=3).solutions)
        assert found == brute_force_count(puzzle, limit=3)


@pytest.mark.skipif(not SHARED.exists(), reason="shared puzzle collections not present")
def test_real_hard_puzzles_are_solved_and_non_unique_ones_rejected():
    for text in sudoku.read_puzzle_list(SHARED / "puzzles3_magictour_top1465")[:25]:
        puzzle = sudoku.parse_puzzle(text)
        assert sudoku.is_valid_solution(sudoku.solution_of(puzzle), puzzle)
    rejected = 0
    for text in sudoku.read_puzzle_list(SHARED / "puzzles7_serg_benchmark")[:20]:
        try:
            sudoku.solution_of(sudoku.parse_puzzle(text))
        except sudoku.SudokuError as err:
            assert "2 or more solutions" in str(err)
            rejected += 1
    assert rejected > 0


@pytest.mark.parametrize("size,count", [(4, 30), (6, 30), (9, 3)])
def test_generator_makes_unique_minimal_puzzles(size, count):
    out = sudoku.generate(count, size, np.random.default_rng(size))
    assert len(out) == count
    for puzzle, solution, score in out:
        assert sudoku.is_valid_solution(solution, puzzle)
        assert len(sudoku.solve(puzzle, limit=2).solutions) == 1
        assert score == sudoku.rating(puzzle)
        if size < 9:
            for i in np.flatnonzero(puzzle):
                weaker = puzzle.copy()
                weaker[i] = 0
                assert len(sudoku.solve(weaker, limit=2).solutions) == 2
    again = sudoku.generate(count, size, np.random.default_rng(size))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(out, again, strict=True))


def test_generator_honours_min_rating():
    out = sudoku.generate(3, 9, np.random.default_rng(0), min_rating=5)
    assert all(score >= 5 for _, _, score in out)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), size=st.sampled_from([4, 6, 9]))
def test_augmentation_keeps_validity(seed, size):
    rng = np.random.default_rng(seed)
    solution = sudoku.random_full_grid(size, rng)
    puzzle = np.where(rng.random(size * size) < 0.5, solution, 0).astype(np.uint8)
    p, s = sudoku.augment(puzzle, solution, rng)
    assert sudoku.is_valid_solution(s, p)
    assert np.count_nonzero(p) == np.count_nonzero(puzzle)
    assert sorted(np.bincount(s, minlength=size + 1)[1:]) == [size] * size


def test_augmentation_is_usually_not_the_identity():
    rng = np.random.default_rng(0)
    solution = sudoku.parse_puzzle(ANSWER)
    changed = sum(not np.array_equal(sudoku.augment(solution, solution, rng)[1], solution) for _ in range(20))
    assert changed >= 19


@pytest.mark.parametrize(
    "text,message",
    [
        (PUZZLE[:-1], "80 cells"),
        ("12.x" + "." * 12, "unknown character 'x'"),
        ("5" + "." * 15, "outside 1..4"),
        ("11" + "." * 14, "digit 1 twice in row 1"),
        ("1...1..." + "." * 8, "digit 1 twice in column 1"),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(sudoku.SudokuError, match=message):
        sudoku.parse_puzzle(text)


def test_pretty_printed_grid_parses():
    solution = sudoku.parse_puzzle(ANSWER)
    assert np.array_equal(sudoku.parse_puzzle(sudoku.render(solution)), solution)


def test_build_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    pairs = [(p, s) for p, s, _ in sudoku.generate(12, 6, rng)]
    summary = sudoku.build_dataset(tmp_path, pairs[:10], pairs[10:], aug=3, seed=0, progress=False)
    assert summary["train"] == {"groups": 10, "puzzles": 40, "examples": 40}
    train = load_split(tmp_path, "train")
    assert train.metadata.vocab_size == 11 and train.metadata.seq_len == 36
    for k in range(len(train.inputs)):
        puzzle, solution = sudoku.decode(train.inputs[k], 6), sudoku.decode(train.labels[k], 6)
        assert sudoku.is_valid_solution(solution, puzzle)
    assert np.array_equal(train.inputs[0], sudoku.encode(pairs[0][0]))  # the original leads its group
    test = load_split(tmp_path, "test")
    assert test.num_examples == 2 and test.num_groups == 2


def test_read_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(f"source,question,answer,rating\nx,{PUZZLE},{ANSWER},3\ny,{PUZZLE},{ANSWER},0\n")
    rows = sudoku.read_csv(path, min_rating=1)
    assert len(rows) == 1 and rows[0][2] == 3
    bad = ANSWER[:-2] + ANSWER[-1] + ANSWER[-2]
    path.write_text(f"source,question,answer,rating\nx,{PUZZLE},{ANSWER},3\ny,{PUZZLE},{bad},0\n")
    with pytest.raises(sudoku.SudokuError, match="line 3"):
        sudoku.read_csv(path)


def test_hf_download_uses_the_hub(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    local = tmp_path / "train.csv"
    local.write_text(f"source,question,answer,rating\nx,{PUZZLE},{ANSWER},3\n")
    calls = []
    monkeypatch.setattr(hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(local))
    path = sudoku.download_sudoku_extreme("train")
    assert calls[0]["repo_id"] == "sapientinc/sudoku-extreme" and calls[0]["repo_type"] == "dataset"
    assert len(sudoku.read_csv(path)) == 1
