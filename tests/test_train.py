"""End to end on tiny 4x4 Sudoku: data -> train -> checkpoint -> eval / solve / resume, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.cli import main
from trm.config import build_train_config
from trm.train import Trainer, resume, save_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data4(sudoku4_data) -> Path:
    return sudoku4_data("--generate", "300", "--aug", "8", "--test-fraction", "0.2", "--seed", "1")


def metrics_of(run_dir: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


@pytest.fixture(scope="module")
def trained(data4, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert (
        main(
            [
                "train",
                "sudoku4-tiny",
                f"data={data4}",
                "epochs=30",
                "eval_interval=15",
                "--run-dir",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    return run


def test_small_run_learns(trained):
    train_rows = metrics_of(trained, "train")
    first, last = train_rows[0], train_rows[-1]
    assert last["lm_loss"] < 0.7 * first["lm_loss"]
    evals = metrics_of(trained, "eval")
    assert len(evals) == 2
    assert evals[-1]["accuracy"] > 0.5  # per-token accuracy well above chance (1/4)
    assert last["accuracy"] > first["accuracy"]
    ckpt = trained / "checkpoints" / (trained / "checkpoints" / "last").read_text().strip()
    assert json.loads((ckpt / "task.json").read_text()) == {"task": "sudoku", "size": 4}


def test_save_outputs_names_the_file_it_writes_and_refuses_a_directory(trained, data4, tmp_path, capsys):
    """Found by hand: `--save-outputs foo` wrote foo.npz and said "foo"; `--save-outputs DIR` wrote DIR.npz
    beside the directory."""
    assert main(["eval", str(trained), str(data4), "--max-examples", "4", "--save-outputs", str(tmp_path / "o")]) == 0
    assert f"outputs written to {tmp_path / 'o.npz'}" in capsys.readouterr().out and (tmp_path / "o.npz").is_file()
    (tmp_path / "d").mkdir()
    assert main(["eval", str(trained), str(data4), "--save-outputs", str(tmp_path / "d")]) == 2
    assert "a directory; give a file name" in capsys.readouterr().err
    assert not (tmp_path / "d.npz").exists() and not any((tmp_path / "d").iterdir())


def test_eval_and_save_outputs(trained, data4, tmp_path, capsys):
    out = tmp_path / "outputs.npz"
    assert main(["eval", str(trained), str(data4), "--save-outputs", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exact_accuracy" in printed
    arrays = np.load(out)
    n_test = len(np.load(data4 / "test" / "all__inputs.npy"))
    assert arrays["logits"].shape == (n_test, 16, 11)
    assert arrays["q_halt_logits"].shape == (n_test,)
    np.testing.assert_array_equal(arrays["preds"], arrays["logits"].argmax(-1))
    # valid_solution: the task's own checker over the predictions (any correct grid counts), independently
    from trm.tasks import sudoku

    inputs = np.load(data4 / "test" / "all__inputs.npy")
    pairs = zip(arrays["preds"], inputs, strict=True)
    valid = np.mean([sudoku.is_valid_solution(sudoku.decode(p, 4), sudoku.decode(x, 4)) for p, x in pairs])
    metrics = {ln.split()[0]: float(ln.split()[1]) for ln in printed.splitlines() if len(ln.split()) == 2}
    assert metrics["valid_solution"] == pytest.approx(valid, abs=1e-6)
    assert metrics["valid_solution"] >= metrics["exact_accuracy"] - 1e-9


def test_solve_prints_grid_validity_and_steps(trained, capsys):
    assert main(["solve", str(trained), "1...", "--steps", "2"]) == 2  # wrong length: one clear error
    err = capsys.readouterr().err
    assert err.startswith("trm: error:") and err.count("\n") == 1
    assert main(["solve", str(trained), "12..34....21....", "--trace", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "step 3:" in out and "valid solution:" in out and "supervision steps: 3" in out


def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(data4, tmp_path):
    overrides = [f"data={data4}", "max_steps=12", "eval_interval=1000", "log_every=1"]
    cfg = build_train_config("sudoku4-tiny", overrides)
    full = tmp_path / "full"
    save_run_config(full, cfg)
    Trainer(cfg, full, progress=False).fit()

    half = tmp_path / "half"
    cfg_half = cfg.model_copy(update={"max_steps": 5})
    save_run_config(half, cfg_half)
    Trainer(cfg_half, half, progress=False).fit()  # saves its state at its last step
    (half / "config.json").write_text(cfg.model_dump_json())  # continue to the full length
    resume(half, progress=False)

    a = [r for r in metrics_of(full, "train")]
    b = [r for r in metrics_of(half, "train")]
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
    for ra, rb in zip(a, b, strict=True):
        for key in ("lm_loss", "q_halt_loss", "accuracy", "exact_accuracy", "count", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    wa = torch.load(full / "train_state.pt", weights_only=False)["model"]
    wb = torch.load(half / "train_state.pt", weights_only=False)["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "nope"], "unknown preset"),
        (["train", "sudoku4-tiny", "data=/nonexistent"], "/nonexistent"),
        (["train", "sudoku4-tiny", "hidden=3"], "unknown config field"),
        (["eval", "/nonexistent", "/nonexistent"], "no such checkpoint"),
        (["info", "sudoku-xl"], "unknown preset"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_corrupt_training_state_is_reported(data4, tmp_path, capsys):
    run = tmp_path / "r"
    save_run_config(run, build_train_config("sudoku4-tiny", [f"data={data4}"]))
    (run / "train_state.pt").write_bytes(b"not a torch file")
    assert main(["train", "--resume", str(run)]) == 2
    assert "corrupt training state" in capsys.readouterr().err


def test_builder_rejects_puzzles_without_a_unique_solution(tmp_path, capsys):
    listing = tmp_path / "puzzles.txt"
    listing.write_text("# two puzzles\n1234341221434321\n" + "." * 16 + "\n")
    assert main(["data", "sudoku", "--out", str(tmp_path / "d"), "--puzzles", str(listing)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("trm: error:") and "puzzle 2" in last and "2 or more solutions" in last
    assert not (tmp_path / "d" / "train" / "dataset.json").exists()  # nothing half-written


def test_checkpoint_that_does_not_fit_the_data(data4):
    from trm.config import ModelConfig
    from trm.data import load_split
    from trm.errors import CheckpointError
    from trm.evaluate import check_fits
    from trm.models.trm import TRM

    ds = load_split(data4, "test")
    small = TRM(ModelConfig(seq_len=16, hidden_size=32, num_heads=2, puzzle_emb_ndim=32, puzzle_emb_len=1))
    check_fits(small, ds)
    ds.metadata.num_puzzle_identifiers = 5  # as if the data set had more puzzles than the checkpoint has rows
    with pytest.raises(CheckpointError, match="1 puzzle-embedding rows but the data set uses 5"):
        check_fits(small, ds)
    with pytest.raises(CheckpointError, match="seq_len 81 but the data set has 16"):
        check_fits(TRM(ModelConfig(seq_len=81, hidden_size=32, num_heads=2, puzzle_emb_ndim=0)), ds)


def test_maze_data_cli_builds_an_augmented_data_set(tmp_path):
    from trm.data import load_split
    from trm.tasks import task_from_info
    from trm.tasks.maze import is_valid_shortest_path

    out = tmp_path / "maze7"
    assert main(["data", "maze", "--out", str(out), "--generate", "20", "--size", "7", "--min-path", "4", "--aug"]) == 0
    info = json.loads((out / "task.json").read_text())
    assert info == {"task": "maze", "size": 7}
    train = load_split(out, "train")
    assert train.num_groups == 18 and train.num_examples > 18  # dihedral copies joined each group
    task = task_from_info(info)
    for k in range(train.num_examples):
        question, answer = task.decode(train.inputs[k]), task.decode(train.labels[k])
        assert is_valid_shortest_path(answer, question)


def _test_puzzles(data4: Path, n: int) -> list[str]:
    from trm.tasks import sudoku

    inputs = np.load(data4 / "test" / "all__inputs.npy")[:n]
    return [sudoku.format_puzzle(sudoku.decode(x, 4)) for x in inputs]


def test_solve_a_file_with_the_engine_options_writes_jsonl_and_a_summary(trained, data4, tmp_path, capsys):
    from trm.tasks import sudoku

    puzzles = _test_puzzles(data4, 12)
    src = tmp_path / "puzzles.txt"
    src.write_text("\n".join(puzzles) + "\n")
    out = tmp_path / "answers.jsonl"
    args = ["solve", str(trained), str(src), "--halt", "q+stable:1", "--max-steps", "12", "--samples", "3"]
    assert main([*args, "--noise", "0.2", "--select", "vote", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(12))
    assert [r["puzzle"] for r in records] == puzzles
    for r in records:
        answer = np.array([int(c) for c in r["answer"]])  # the answer may break the rules: no parse_puzzle
        assert r["valid"] == sudoku.is_valid_solution(answer, sudoku.parse_puzzle(r["puzzle"]))
        assert 1 <= r["steps"] <= 12 and r["steps"] <= r["compute"] <= 36 and 0 <= r["confidence"] <= 1
    n_valid = sum(r["valid"] for r in records)
    mean_steps = np.mean([r["steps"] for r in records])
    assert f"12 puzzle(s): {n_valid} valid" in printed and f"mean steps {mean_steps:.2f}" in printed
    assert "puzzles/s" in printed and printed.count("valid=") == 12  # many puzzles: one line each


@pytest.mark.parametrize(
    "option, message",
    [
        (["--halt", "sometimes"], "unknown halting policy"),
        (["--samples", "0"], "samples must be"),
        (["--max-steps", "0"], "max-steps must be"),
        (["--noise", "-0.5"], "noise must be"),
        (["--select", "best"], "selection must be"),
    ],
)
def test_bad_engine_options_are_one_line_and_exit_2(trained, data4, capsys, option, message):
    for command in (["solve", str(trained), "12..34....21...."], ["eval", str(trained), str(data4)]):
        assert main([*command, *option, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("trm: error:") and message in err and err.count("\n") == 1


def test_eval_with_a_halting_policy_uses_fewer_steps(trained, data4, capsys):
    def metrics(*extra: str) -> dict[str, float]:
        assert main(["eval", str(trained), str(data4), "--device", "cpu", *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {ln.split()[0]: float(ln.split()[1]) for ln in lines if len(ln.split()) == 2}

    fixed, stable = metrics(), metrics("--halt", "stable:1")
    assert fixed["steps"] == fixed["compute"] == 4  # sudoku4-tiny: N_sup 4
    assert 2 <= stable["steps"] <= 4 and stable["count"] == fixed["count"]
    assert metrics("--halt", "valid|stable:1")["valid_solution"] >= stable["valid_solution"] - 1e-9


def test_bench_infer_compares_policies_on_a_checkpoint(trained, data4, tmp_path, capsys):
    args = ["bench", "--infer", str(trained), str(data4), "--max-examples", "24", "--samples", "2"]
    args += ["--policies", "q", "stable:1", "--json", str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md")]
    assert main([*args, "--device", "cpu"]) == 0
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    by_name = {r["name"]: r for r in records}
    ref, fixed = by_name["fixed 4 (reference)"], by_name["fixed 4"]
    assert ref["exact"] == fixed["exact"] and ref["valid"] == fixed["valid"]  # the same answers
    assert by_name["fixed 16"]["mean_steps"] == 16 and by_name["halt stable:1"]["mean_steps"] <= 4
    assert by_name["2 samples, noise 0.3 init, select vote"]["compute"] == 8
    assert {r["kind"] for r in records} == {"reference", "model", "checker"}
    assert all(r["count"] == 24 for r in records)
    assert "| fixed 4 (reference) | reference |" in (tmp_path / "b.md").read_text()


def test_eval_under_torchrun_with_a_rank_that_gets_no_rows(trained, data4, capsys):
    """3 examples in chunks of 8 over 2 ranks: rank 0 takes all 3, rank 1 none; the metrics equal one
    process's (every rank reduces the same metric keys)."""
    import os
    import subprocess
    import sys

    args = ["eval", str(trained), str(data4), "--max-examples", "3", "--batch-size", "8", "--device", "cpu"]
    assert main(args) == 0
    single = [ln for ln in capsys.readouterr().out.splitlines() if len(ln.split()) == 2]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "-m", "trm.cli", *args], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = {ln.split()[0]: float(ln.split()[1]) for ln in proc.stdout.splitlines() if len(ln.split()) == 2}
    one = {ln.split()[0]: float(ln.split()[1]) for ln in single}
    one.pop("valid_solution")  # counted in a single process only
    assert two == pytest.approx(one, abs=1e-5) and two["count"] == 3
