"""Data parallel (torchrun, gloo on CPU) and gradient accumulation keep the mathematics of one process with
one batch of `global_batch_size` rows: the same losses, weights, puzzle embeddings and EMA, also across a
resume with another number of processes or micro-batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.cli import main
from trm.config import TrainConfig, build_train_config
from trm.data import load_split
from trm.train import Trainer

N_IDS = 12  # puzzles carry identifiers 1..12, so the sparse puzzle-embedding step sees repeated rows


@pytest.fixture(scope="module")
def ided(tmp_path_factory) -> Path:
    """4x4 Sudoku whose puzzles carry their own identifiers (the Sudoku builder gives all of them the blank
    one): the official layout with puzzle_identifiers and num_puzzle_identifiers rewritten."""
    out = tmp_path_factory.mktemp("data") / "ided"
    argv = ["data", "sudoku", "--out", str(out), "--generate", "120", "--size", "4", "--aug", "3"]
    assert main([*argv, "--test-fraction", "0.2", "--seed", "3"]) == 0
    for split in ("train", "test"):
        ds = load_split(out, split)
        ids = (np.arange(ds.num_puzzles, dtype=np.int32) % N_IDS) + 1
        np.save(out / split / "all__puzzle_identifiers.npy", ids)
        meta = json.loads((out / split / "dataset.json").read_text())
        (out / split / "dataset.json").write_text(json.dumps({**meta, "num_puzzle_identifiers": N_IDS + 1}))
        (out / split / "SHA256SUMS").unlink()  # edited on purpose: its checksums no longer apply
    (out / "identifiers.json").write_text(json.dumps(["<blank>", *[f"p{i}" for i in range(1, N_IDS + 1)]]))
    return out


def config(data: Path, **extra):
    overrides = [f"data={data}", "global_batch_size=32", "lr_min_ratio=1", "log_every=1", "eval_interval=1000"]
    return build_train_config("sudoku4-tiny", overrides + [f"{k}={v}" for k, v in extra.items()])


def run_steps(trainer: Trainer, steps: int) -> list[dict[str, float]]:
    batches = iter(trainer.sampler)
    return [{k: float(v) for k, v in trainer.train_step(next(batches)).items()} for _ in range(steps)]


def assert_same_state(a: Trainer, b: Trainer) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    for name in a.ema.shadow:
        torch.testing.assert_close(a.ema.shadow[name], b.ema.shadow[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_accumulation_equals_the_big_batch_step(ided, tmp_path):
    big = Trainer(config(ided), tmp_path / "big", progress=False)
    small = Trainer(config(ided, micro_batch_size=8), tmp_path / "small", progress=False)
    assert len(big.carries) == 1 and len(small.carries) == 4
    table0 = big.model.puzzle_emb.weight.clone()
    a, b = run_steps(big, 4), run_steps(small, 4)
    for step_a, step_b in zip(a, b, strict=True):
        assert step_a == pytest.approx(step_b, rel=1e-5, abs=1e-6)
    assert a[0]["count"] < 32 or a[-1]["count"] > 0  # rows halted and refilled along the way
    assert_same_state(big, small)
    moved = (big.model.puzzle_emb.weight - table0).abs().sum(-1) > 0
    assert moved.sum() >= N_IDS // 2 and not moved[0]  # identifiers' rows took sign-SGD steps, the blank one none


def test_resume_with_other_micro_batches_continues_the_same_run(ided, tmp_path):
    ref = Trainer(config(ided), tmp_path / "ref", progress=False)
    expected = run_steps(ref, 4)
    first = Trainer(config(ided, micro_batch_size=8), tmp_path / "a", progress=False)
    got = run_steps(first, 2)
    state = first.state_dict()
    assert state["carry"]["y"].shape[0] == 32  # the carry of the whole global batch, in its row order
    second = Trainer(config(ided, micro_batch_size=16), tmp_path / "b", progress=False)
    second.load_state_dict(state)
    got += run_steps(second, 2)
    for step_a, step_b in zip(expected, got, strict=True):
        assert step_a == pytest.approx(step_b, rel=1e-5, abs=1e-6)
    assert_same_state(ref, second)


def test_micro_batch_that_does_not_divide_is_one_clear_error(ided, capsys):
    argv = ["train", "sudoku4-tiny", f"data={ided}", "global_batch_size=32", "micro_batch_size=12"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "micro_batch_size 12 does not divide" in err[0]


def _torchrun(args: list[str]) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc-per-node", "2", "-m", "trm.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _rows(run: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_with_a_resume_in_the_middle(ided, tmp_path):
    """torchrun with 2 CPU processes: 3 steps, then a resume to 6, against 6 steps of one process."""
    common = [f"data={ided}", "global_batch_size=32", "lr_min_ratio=1", "log_every=1", "eval_interval=1000"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "sudoku4-tiny", *common, "max_steps=6", "--run-dir", str(one), "--no-progress"]) == 0
    _torchrun(["train", "sudoku4-tiny", *common, "max_steps=3", "--run-dir", str(two), "--no-progress"])
    cfg = json.loads((two / "config.json").read_text())
    (two / "config.json").write_text(json.dumps({**cfg, "max_steps": 6}))  # continue to the full length
    _torchrun(["train", "--resume", str(two), "--no-progress"])

    a, b = _rows(one, "train"), _rows(two, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b, strict=True):
        for key in ("lm_loss", "q_halt_loss", "accuracy", "exact_accuracy", "count", "steps", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    ea, eb = _rows(one, "eval")[-1], _rows(two, "eval")[-1]  # evaluation gathered over the two ranks
    assert ea.pop("split") == eb.pop("split") == "eval"
    assert ea.pop("elapsed_s") > 0 and eb.pop("elapsed_s") > 0  # wall clocks differ
    assert ea["count"] == eb["count"] == load_split(ided, "test").num_examples
    # the two runs' weights agree to summation order (1e-4, below), and so do their evaluations; the gathering
    # itself is exact: one process evaluating the 2-rank run's own weights gets the 2-rank figures
    assert ea == pytest.approx(eb, rel=1e-4, abs=1e-6)
    alone = Trainer(TrainConfig(**json.loads((two / "config.json").read_text())), tmp_path / "alone", progress=False)
    alone.load_state_dict(torch.load(two / "train_state.pt", weights_only=False))
    assert alone.run_eval() == pytest.approx({k: v for k, v in eb.items() if k != "step"}, rel=1e-9, abs=1e-12)
    sa = torch.load(one / "train_state.pt", weights_only=False)
    sb = torch.load(two / "train_state.pt", weights_only=False)
    for key in sa["model"]:  # includes puzzle_emb.weight, the sparse table
        torch.testing.assert_close(sa["model"][key], sb["model"][key], rtol=1e-4, atol=1e-5, msg=key)  # summation order
    for key in ("steps", "halted"):
        assert torch.equal(sa["carry"][key], sb["carry"][key]), key
    for key in ("y", "z"):  # after T * (n + 1) applications of the network the 1e-6 differences grow
        torch.testing.assert_close(sa["carry"][key], sb["carry"][key], rtol=1e-3, atol=2e-3, msg=key)
    assert (two / "checkpoints" / "step_6" / "model.safetensors").is_file()
