"""How the CLI ends: one `trm: error:` line for bad input (exit 2) and for bugs (exit 1, the traceback only
with TRM_DEBUG=1), `--version`, counts checked by argparse, devices checked before use, and progress shown
as bars on a terminal only. The fuzzer (test_fuzz.py) checks the same properties on random input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from trm import commands
from trm.cli import main
from trm.errors import ConfigError
from trm.models.base import pick_device
from trm.progress import LogProgress, progress
from trm.tasks import sudoku


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("trm 0.1")


def test_a_bug_is_one_line_and_exit_1_and_the_traceback_with_trm_debug(monkeypatch, capsys):
    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(commands, "info", broken)
    assert main(["info", "sudoku4-tiny"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["trm: error: internal error (KeyError: 'boom'); rerun with TRM_DEBUG=1 for the traceback"]
    monkeypatch.setenv("TRM_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["info", "sudoku4-tiny"])


def test_an_unreadable_path_is_bad_input(monkeypatch, capsys):
    def unreadable(args):
        raise PermissionError(13, "Permission denied", "/root/secret")

    monkeypatch.setattr(commands, "info", unreadable)
    assert main(["info", "x"]) == 2
    assert capsys.readouterr().err.splitlines() == ["trm: error: /root/secret: Permission denied"]


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "ckpt", "data", "--max-examples", "0"],
        ["data", "sudoku", "--out", "o", "--generate", "-1"],
        ["data", "sudoku", "--out", "o", "--generate", "4", "--subsample", "-1"],
        ["data", "maze", "--out", "o", "--generate", "0"],
        ["eval", "ckpt", "data", "--show", "-1"],
        ["convert", "f", "--out", "o", "--seq-len", "0"],
    ],
)
def test_counts_below_their_minimum_are_usage_errors(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "must be at least" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_generated_sudoku_data_has_no_puzzle_twice_so_none_leaks_across_the_split(tmp_path, capsys):
    from trm.data.layout import load_split

    # 4x4 minimal puzzles repeat within a few hundred draws (test_sudoku.py): every one must be distinct
    assert main(["data", "sudoku", "--out", str(tmp_path / "d"), "--generate", "400", "--size", "4", "--aug", "0"]) == 0
    rows = {split: load_split(tmp_path / "d", split).inputs for split in ("train", "test")}
    seen = [r.tobytes() for split in rows.values() for r in split]
    assert len(seen) == 400 == len(set(seen))
    # a size with fewer distinct puzzles than asked is one line, and nothing is written
    assert (
        main(["data", "sudoku", "--out", str(tmp_path / "e"), "--generate", "300", "--size", "4", "--givens", "16"])
        == 2
    )
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == "trm: error: only 288 distinct 4x4 puzzles found of 300 asked; ask for fewer"
    )
    assert not (tmp_path / "e").exists()


def test_engine_counts_stay_one_trm_error_line(tmp_path, capsys):
    """--batch-size 0 used to end in a ValueError traceback from the test batches: the engine config refuses
    it first, as one line."""
    from trm.config import ModelConfig
    from trm.models import TRM

    TRM(ModelConfig(vocab_size=11, seq_len=16, hidden_size=16, num_heads=2, puzzle_emb_ndim=0)).save_pretrained(
        tmp_path / "c"
    )
    pairs = [(p, s) for p, s, _ in sudoku.generate(3, 4, np.random.default_rng(0))]
    sudoku.build_dataset(tmp_path / "d", pairs[:2], pairs[2:], progress=False)
    assert main(["eval", str(tmp_path / "c"), str(tmp_path / "d"), "--batch-size", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "batch-size must be an integer of at least 1, got 0" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_lacks_is_a_config_error():
    for name in ("cuda", "cuda:1", "meta"):
        with pytest.raises(ConfigError, match="not available here"):
            pick_device(name)
    assert pick_device("cpu") == torch.device("cpu")


def test_a_rating_the_size_never_reaches_fails_instead_of_looping_forever():
    with pytest.raises(sudoku.SudokuError, match="in 50 tries in a row"):
        sudoku.generate(1, 4, np.random.default_rng(0), min_rating=1000, max_tries=50)
    assert len(sudoku.generate(2, 4, np.random.default_rng(0), min_rating=0, max_tries=1)) == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    from tqdm import tqdm

    assert isinstance(progress(total=3, file=_Terminal()), tqdm)
    log = io.StringIO()
    with progress(total=4, desc="eval", unit="ex", file=log, every=0) as bar:
        assert isinstance(bar, LogProgress)
        bar.update(1)
        bar.set_postfix(loss="0.5")
        bar.update(3)
    assert log.getvalue().splitlines() == ["eval: 1/4 ex (25%)", "eval: 4/4 ex (100%) loss=0.5"]  # no repeat at close
    quiet = io.StringIO()
    assert list(progress(range(3), desc="solving", file=quiet)) == [0, 1, 2]  # every 30 s: only the final line
    assert quiet.getvalue() == "solving: 3/3 it (100%)\n"
    assert "\r" not in log.getvalue()


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    bar = progress(total=5, disable=True, file=out)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""


def test_solve_summarises_many_puzzles(tmp_path, capsys):
    """`trm solve CKPT FILE` ends with how many answers are valid and the mean steps (it always did)."""
    from trm.config import ModelConfig
    from trm.models import TRM

    ckpt = tmp_path / "c"
    config = ModelConfig(vocab_size=11, seq_len=16, hidden_size=16, num_heads=2, puzzle_emb_ndim=0, N_sup=2)
    TRM(config).save_pretrained(ckpt)
    (ckpt / "task.json").write_text('{"task": "sudoku", "size": 4}')
    puzzles = [sudoku.format_puzzle(p) for p, _, _ in sudoku.generate(12, 4, np.random.default_rng(1))]
    (tmp_path / "p.txt").write_text("\n".join(puzzles))
    assert main(["solve", str(ckpt), str(tmp_path / "p.txt"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "12 puzzle(s): " in captured.out.splitlines()[-1] and "mean steps 2.00" in captured.out
    assert "\r" not in captured.err  # no bar off a terminal


def test_a_puzzle_file_that_is_not_text_is_one_line(tmp_path, capsys):
    """Found by the fuzzer: a binary puzzle file ended in a UnicodeDecodeError."""
    from trm.config import ModelConfig
    from trm.models import TRM

    TRM(ModelConfig(vocab_size=11, seq_len=16, hidden_size=16, num_heads=2, puzzle_emb_ndim=0)).save_pretrained(
        tmp_path / "c"
    )
    (tmp_path / "c" / "task.json").write_text('{"task": "sudoku", "size": 4}')
    (tmp_path / "p.txt").write_bytes(b"\xff\xfe\x00")
    assert main(["solve", str(tmp_path / "c"), str(tmp_path / "p.txt"), "--device", "cpu"]) == 2
    expected = f"trm: error: {tmp_path / 'p.txt'}: not a puzzle file (not UTF-8 text)"
    assert capsys.readouterr().err.splitlines() == [expected]


def test_an_official_config_that_is_not_text_is_one_line(tmp_path, capsys):
    """Found by the fuzzer: `trm convert --config BINARY` ended in a UnicodeDecodeError."""
    (tmp_path / "step_1").write_bytes(b"x")
    (tmp_path / "all_config.yaml").write_bytes(b"\xff\xfe\x00")
    assert main(["convert", str(tmp_path / "step_1"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cannot read the official config" in err[0]


def test_a_run_directory_that_holds_a_run_or_none_is_one_line_and_keeps_its_files(tmp_path, capsys):
    """Training into a directory that holds a run, resuming one that holds none or a damaged config: one
    `trm: error:` line each, exit 2, and the run's state as it was."""
    data, run, empty = tmp_path / "data", tmp_path / "run", tmp_path / "empty"
    build = ["data", "sudoku", "--out", str(data), "--generate", "40", "--size", "4", "--aug", "1"]
    assert main([*build, "--test-fraction", "0.25"]) == 0
    train = ["train", "sudoku4-tiny", f"data={data}", "max_steps=2", "eval_interval=1000", "--no-progress"]
    assert main([*train, "--run-dir", str(run)]) == 0
    state = (run / "train_state.pt").read_bytes()
    empty.mkdir()
    (run / "config.json").write_text((run / "config.json").read_text()[:-20])  # cut short
    capsys.readouterr()
    for argv, says in [
        ([*train, "--run-dir", str(run)], "already holds a run"),
        (["train", "--resume", str(empty), "--no-progress"], "no run to resume"),
        (["train", "--resume", str(run), "--no-progress"], "not a run config"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("trm: error:") and says in err[0], err
    assert (run / "train_state.pt").read_bytes() == state


def test_ctrl_c_outside_training_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "info", interrupted)
    assert main(["info", "sudoku6-demo"]) == 130
    assert capsys.readouterr().err == "trm: interrupted\n"


def _tiny_sudoku4_checkpoint(path):
    from trm.config import ModelConfig
    from trm.models import TRM

    config = ModelConfig(vocab_size=11, seq_len=16, hidden_size=16, num_heads=2, puzzle_emb_ndim=0, N_sup=2)
    TRM(config).save_pretrained(path)
    (path / "task.json").write_text('{"task": "sudoku", "size": 4}')
    return path


def test_solve_out_replaces_the_answers_file_only_when_every_puzzle_is_answered(tmp_path, monkeypatch, capsys):
    """Found by hand: a bad puzzle file, or Ctrl-C, left an existing --out file empty (it was opened for writing
    before the first answer)."""
    import trm.inference

    ckpt = _tiny_sudoku4_checkpoint(tmp_path / "c")
    out = tmp_path / "answers.jsonl"
    out.write_text("precious\n")
    good = [sudoku.format_puzzle(p) for p, _, _ in sudoku.generate(3, 4, np.random.default_rng(1))]
    (tmp_path / "bad.txt").write_text("\n".join([*good, "1234"]))  # the last one has 4 cells
    assert main(["solve", str(ckpt), str(tmp_path / "bad.txt"), "--device", "cpu", "--out", str(out)]) == 2
    (tmp_path / "good.txt").write_text("\n".join(good))
    plain = trm.inference.solve_puzzles

    def interrupted(*args, **kwargs):
        yield from list(plain(*args, **kwargs))[:2]
        raise KeyboardInterrupt

    monkeypatch.setattr("trm.inference.solve_puzzles", interrupted)
    assert main(["solve", str(ckpt), str(tmp_path / "good.txt"), "--device", "cpu", "--out", str(out)]) == 130
    assert out.read_text() == "precious\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "answers.jsonl", "bad.txt", "c", "good.txt"]  # fmt: skip
    monkeypatch.setattr("trm.inference.solve_puzzles", plain)
    capsys.readouterr()
    assert main(["solve", str(ckpt), str(tmp_path / "good.txt"), "--device", "cpu", "--out", str(out)]) == 0
    assert [json.loads(line)["index"] for line in out.read_text().splitlines()] == [0, 1, 2]


@pytest.mark.parametrize(
    "arg, message",
    [("missing.txt", "missing.txt: no such file"), ("sub/p", "sub/p: no such file"), (".", ".: a directory")],
)
def test_solve_names_a_puzzle_file_that_is_not_there(tmp_path, monkeypatch, capsys, arg, message):
    """Found by hand: a missing file or a directory was read as a puzzle string ("puzzle has 12 cells")."""
    ckpt = _tiny_sudoku4_checkpoint(tmp_path / "c")
    monkeypatch.chdir(tmp_path)
    assert main(["solve", str(ckpt), arg, "--device", "cpu"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"trm: error: {message}")


def test_a_byte_order_mark_in_a_puzzle_file_is_not_a_cell(tmp_path, capsys):
    ckpt = _tiny_sudoku4_checkpoint(tmp_path / "c")
    puzzle = sudoku.format_puzzle(next(iter(sudoku.generate(1, 4, np.random.default_rng(2))))[0])
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbf" + puzzle.encode() + b"\r\n")
    assert main(["solve", str(ckpt), str(tmp_path / "p.txt"), "--device", "cpu"]) == 0


def test_a_cpu_device_with_an_index_is_a_bad_device_not_a_corrupt_checkpoint():
    with pytest.raises(ConfigError, match="not available"):
        pick_device("cpu:7")
    assert pick_device("cpu:0") == torch.device("cpu:0")


def test_a_run_dir_that_is_a_file_is_one_line_and_the_file_stays(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("notes\n")
    assert main(["train", "sudoku4-tiny", f"data={tmp_path}", "--run-dir", str(tmp_path / "a.txt")]) == 2
    expected = f"trm: error: --run-dir {tmp_path / 'a.txt'}: a file; give a directory (new, or one to hold this run)"
    assert capsys.readouterr().err.splitlines() == [expected]
    assert (tmp_path / "a.txt").read_text() == "notes\n"


def test_a_run_directory_without_a_checkpoint_yet_says_so(tmp_path, capsys):
    """Found by hand: it was "not a trm checkpoint (needs config.json and model.safetensors)"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    assert main(["eval", str(run), str(tmp_path)]) == 2
    expected = (
        f"trm: error: {run}: a run directory with no checkpoint yet (one is written at each evaluation and at the end)"
    )
    assert capsys.readouterr().err.splitlines() == [expected]
