"""Training options beyond the official recipe: a wall-clock budget, the depth curriculum, decaying
supervision weights and warm starts from trm or official checkpoints."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from trm import train as train_module
from trm.checkpoint import convert_official, read_weights
from trm.cli import main
from trm.config import build_train_config
from trm.models.trm import TRM
from trm.supervision import step_weights, supervision_loss
from trm.train import Trainer, depth_at, save_run_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def data4(sudoku4_data) -> Path:
    return sudoku4_data("--generate", "100", "--aug", "2", "--test-fraction", "0.2", "--seed", "5")


def rows(run: Path, split: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_time_budget_trains_until_it_is_spent_then_evaluates_and_saves(data4, tmp_path, monkeypatch):
    cfg = build_train_config(
        "sudoku4-tiny",
        [f"data={data4}", "max_time=3s", "lr_warmup_steps=2", "lr_min_ratio=0.1", "log_every=1", "eval_interval=1000"],
    )
    assert cfg.max_time == 3.0
    run = tmp_path / "run"
    save_run_config(run, cfg)
    trainer = Trainer(cfg, run, progress=False)
    assert trainer.total_steps is None  # the budget replaces the epochs
    ticks = itertools.count()
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: 0.01 * next(ticks))  # a clock the test owns
    trainer.fit()
    state = torch.load(run / "train_state.pt", weights_only=False)
    assert state["elapsed"] >= 3.0 and state["step"] == trainer.step > 10
    lrs = [r["lr"] for r in rows(run, "train")]
    assert max(lrs) == pytest.approx(cfg.lr, rel=0.1)  # past the warm-up ...
    assert lrs[-1] < 0.15 * cfg.lr  # ... the cosine over the budget has come down to lr_min_ratio
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert len(rows(run, "eval")) == 1 and (run / "checkpoints" / f"step_{trainer.step}").is_dir()


def test_learning_rate_follows_the_budget_not_the_step_count(data4, tmp_path):
    cfg = build_train_config("sudoku4-tiny", [f"data={data4}", "max_time=100", "lr_warmup_steps=4", "lr_min_ratio=0"])
    t = Trainer(cfg, tmp_path, progress=False)
    assert t.lr_scale(2, 50.0) == pytest.approx(0.5)  # warm-up counts steps
    assert t.lr_scale(10, 0.0) == pytest.approx(1.0)
    assert t.lr_scale(10, 50.0) == pytest.approx(0.5)  # half the budget: half-way down the cosine
    assert t.lr_scale(10, 25.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert t.lr_scale(10, 150.0) == pytest.approx(0.0)


@pytest.mark.parametrize("bad", ["max_time=ten minutes", "max_time=0", "depth_schedule=[{until: 2}]"])
def test_bad_budget_or_schedule_is_one_line(data4, bad, capsys):
    assert main(["train", "sudoku4-tiny", f"data={data4}", bad]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_depth_curriculum_starts_shallow_and_saves_the_full_model(data4, tmp_path):
    schedule = "depth_schedule=[{until: 0.5, T: 1, n: 1, N_sup: 2}]"
    cfg = build_train_config("sudoku4-tiny", [f"data={data4}", schedule, "max_steps=4", "log_every=1"])
    assert [depth_at(cfg, p) for p in (0.0, 0.49, 0.5, 1.0)] == [(1, 1, 2), (1, 1, 2), (2, 2, 4), (2, 2, 4)]
    run = tmp_path / "run"
    save_run_config(run, cfg)
    t = Trainer(cfg, run, progress=False)
    calls = []
    net_forward = t.model.net.forward
    t.model.net.forward = lambda *a: calls.append(1) or net_forward(*a)
    batches = iter(t.sampler)
    depths, counts = [], []
    for _ in range(4):  # progress 0, 1/4 (shallow: T=1, n=1), 1/2, 3/4 (the model's T=2, n=2)
        calls.clear()
        t.train_step(next(batches))
        depths.append((t.model.T, t.model.n, t.sup.N_sup))
        counts.append(len(calls))  # the network runs T * (n + 1) times per supervision step
    assert depths == [(1, 1, 2)] * 2 + [(2, 2, 4)] * 2 and counts == [2, 2, 6, 6]
    assert t.carries[0].steps.max() <= 2  # under N_sup = 2 every row halted after at most 2 steps
    t.save()
    saved = TRM.from_pretrained(run / "checkpoints" / "step_4")
    assert (saved.config.T, saved.config.n, saved.config.N_sup, saved.T, saved.n) == (2, 2, 4, 2, 2)


def test_supervision_weights_decay_by_step_and_keep_mean_one():
    w = step_weights(0.5, 4)
    torch.testing.assert_close(w, torch.tensor([1, 0.5, 0.25, 0.125]) * 4 / 1.875)
    assert step_weights(1.0, 8).tolist() == [1.0] * 8
    logits = torch.randn(3, 5, 7)
    labels = torch.randint(0, 7, (3, 5))
    q = torch.randn(3)
    plain = supervision_loss(logits, labels, q)
    weight = torch.tensor([2.0, 0.5, 0.0])
    weighted = supervision_loss(logits, labels, q, row_weight=weight)
    per_row = [supervision_loss(logits[i : i + 1], labels[i : i + 1], q[i : i + 1]).total for i in range(3)]
    assert float(weighted.total) == pytest.approx(sum(float(w * r) for w, r in zip(weight, per_row, strict=True)))
    assert float(weighted.lm) == pytest.approx(float(plain.lm))  # reported losses stay unweighted


def test_warm_start_from_an_official_checkpoint_resets_a_puzzle_table_of_another_size(data4, tmp_path, capsys):
    official = FIXTURES / "official_tiny_mlp" / "step_10"
    overrides = [f"data={data4}", f"init_from={official}", "puzzle_emb_len=2", "max_steps=1"]
    cfg = build_train_config("sudoku4-tiny", overrides)
    t = Trainer(cfg, tmp_path / "run", progress=False)
    out = capsys.readouterr().out + capsys.readouterr().err
    ref = read_weights(convert_official(official, tmp_path / "converted")[0])
    assert t.model.puzzle_emb.weight.shape[0] != ref["puzzle_emb.weight"].shape[0]
    expected_row = ref["puzzle_emb.weight"].mean(0)
    torch.testing.assert_close(t.model.puzzle_emb.weight, expected_row.expand_as(t.model.puzzle_emb.weight))
    for name, value in t.model.state_dict().items():
        if name != "puzzle_emb.weight":
            torch.testing.assert_close(value, ref[name], msg=name)
    assert "warm start from" in out and "mean of the loaded ones" in out


def test_warm_start_from_a_trm_run_and_a_model_that_does_not_fit(data4, tmp_path, capsys):
    first = tmp_path / "first"
    base = ["train", "sudoku4-tiny", f"data={data4}", "max_steps=3"]

    def train(*extra: str, run: str) -> int:
        return main([*base, *extra, "--run-dir", str(tmp_path / run), "--no-progress"])

    assert train(run="first") == 0
    assert train(f"init_from={first}", "max_steps=1", run="second") == 0
    assert "warm start from" in capsys.readouterr().out
    assert train(f"init_from={first}", "hidden_size=64", "num_heads=4", run="x") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shape" in err[0]
    assert not (tmp_path / "x" / "config.json").exists()  # nothing written for a run that cannot start
    assert train(f"init_from={tmp_path / 'missing'}", run="y") == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("mixer", ["mlp", "attention"])
def test_the_training_step_traces_to_one_graph_with_the_sparse_puzzle_table(data4, tmp_path, mixer):
    """compile=true compiles the supervision step; a graph break (host work such as reading the dtype
    from /proc/cpuinfo, or a leaf tensor made in the forward) would split it at every call."""
    extra = ["model.pos_encoding=rope"] if mixer == "attention" else []
    cfg = build_train_config("sudoku4-tiny", [f"data={data4}", "global_batch_size=16", f"model.mixer={mixer}", *extra])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    batch = next(iter(trainer.sampler))
    carry = trainer.sup.initial_carry(batch)
    explore = torch.zeros(16, dtype=torch.long)
    trainer.sup(carry, batch, explore)  # the first call makes the puzzle rows' leaf, outside any graph
    assert trainer.model.puzzle_emb is not None
    explained = torch._dynamo.explain(trainer.sup)(carry, batch, explore)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
def test_compiled_training_follows_eager_training(data4, tmp_path):
    """compile=true (inductor on the CPU) runs the same steps as eager, with micro-batches and the sparse
    table: float32 losses agree to fused-kernel rounding."""
    common = [f"data={data4}", "global_batch_size=32", "micro_batch_size=16", "max_steps=3", "log_every=1"]
    for c in ("false", "true"):
        assert (
            main(["train", "sudoku4-tiny", *common, f"compile={c}", "--run-dir", str(tmp_path / c), "--no-progress"])
            == 0
        )
    eager, compiled = rows(tmp_path / "false", "train"), rows(tmp_path / "true", "train")
    assert [r["step"] for r in eager] == [r["step"] for r in compiled] == [1, 2, 3]
    for a, b in zip(eager, compiled, strict=True):
        assert a["lm_loss"] == pytest.approx(b["lm_loss"], rel=1e-4)
        assert a["q_halt_loss"] == pytest.approx(b["q_halt_loss"], rel=1e-3, abs=1e-6)
    table = read_weights(tmp_path / "true")
    assert any("puzzle_emb" in k and v.abs().sum() > 0 for k, v in table.items())  # the table was trained
