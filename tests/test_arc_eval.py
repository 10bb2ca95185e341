"""The ARC evaluator: oracle scores, the voting rules, fractional and all-or-nothing credit, the submission
schema, and `trm eval` on ARC data in one process and under torchrun (same votes either way)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.cli import main
from trm.config import ModelConfig
from trm.data import load_split, read_identifiers
from trm.models.trm import TRM
from trm.tasks import arc
from trm.tasks.arc_eval import Votes, score

FIXTURE = Path(__file__).parent / "fixtures" / "arc_mini"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc"


def oracle_votes(root: Path, right: callable = lambda k: True) -> Votes:
    """Votes whose prediction for a test row is its true (augmented) label when right(k), k being the row's
    augmentation number within its group (0 = the original), else the same wrong grid under that augmentation."""
    ds, names = load_split(root, "test"), read_identifiers(root)
    puzzle_of_row = np.repeat(np.arange(len(ds.puzzle_identifiers)), np.diff(ds.puzzle_indices))
    group_start = np.repeat(ds.group_indices[:-1], np.diff(ds.group_indices))
    wrong = np.full((1, 1), 7, dtype=np.uint8)
    preds = np.array(ds.labels)
    ids = ds.example_puzzle_ids()
    for i, p in enumerate(puzzle_of_row):
        if not right(int(p - group_start[p])):
            preds[i] = arc.encode_grid(arc.split_name(names[ids[i]])[1].apply(wrong))
    votes = Votes()
    votes.add_batch(names, ids, ds.inputs, preds, np.zeros(len(preds)))
    return votes


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arc") / "mini"
    tasks = {s: arc.load_subset(FIXTURE / "arc-agi", s) for s in ("training", "evaluation", "concept")}
    arc.build_dataset(root, tasks, "evaluation", aug=8, seed=42)
    return root


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/arc")
def test_perfect_oracle_scores_one_on_the_real_arc1_evaluation_set(tmp_path):
    tasks = {"evaluation": arc.load_subset(SHARED / "arc-agi", "evaluation")}
    arc.build_dataset(tmp_path, tasks, "evaluation", aug=4, seed=42)
    res = score(oracle_votes(tmp_path), arc.read_test_puzzles(tmp_path))
    assert res.tasks == 400
    assert res.pass_at[1] == res.pass_at[2] == 1.0
    assert all(all(v) for v in res.solved.values())


def test_perfect_oracle_and_submission_schema(mini):
    test_tasks = arc.read_test_puzzles(mini)
    res = score(oracle_votes(mini), test_tasks)
    assert res.pass_at == dict.fromkeys((1, 2, 5, 10, 100, 1000), 1.0)
    assert set(res.submission) == set(test_tasks)
    for name, entries in res.submission.items():
        assert len(entries) == len(test_tasks[name].test)
        for entry, (_, truth) in zip(entries, test_tasks[name].test, strict=True):
            assert set(entry) == {"attempt_1", "attempt_2"}
            assert entry["attempt_1"] == truth.tolist()  # the only candidate, repeated
            assert entry["attempt_2"] == truth.tolist()
            for grid in entry.values():
                assert all(isinstance(v, int) and 0 <= v <= 9 for row in grid for v in row)


def test_oracle_right_on_some_augmentations_scores_by_votes(mini):
    tasks = arc.read_test_puzzles(mini)
    # 9 puzzles (original + 8 augmentations) per test input: right on 4, the same wrong grid on 5
    res = score(oracle_votes(mini, lambda k: k < 4), tasks)
    assert res.pass_at[1] == 0.0 and res.pass_at[2] == 1.0  # the wrong grid wins the vote, 5 to 4
    assert score(oracle_votes(mini, lambda k: k < 5), tasks).pass_at[1] == 1.0
    assert score(oracle_votes(mini, lambda k: False), tasks).pass_at[1000] == 0.0


def _task(n_test: int) -> arc.ArcTask:
    g = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    tests = [(g + k, (g + k) % 10) for k in range(n_test)]
    return arc.ArcTask("t", [(g, g)], tests)


def _vote(votes: Votes, task: arc.ArcTask, pair: int, grid: np.ndarray, q: float, aug: arc.Aug | None = None) -> None:
    aug = aug or arc.Aug()
    x = task.test[pair][0]
    votes.add(aug.name("t"), arc.encode_grid(aug.apply(x)), arc.encode_grid(aug.apply(grid)), q)


def test_tie_on_votes_is_broken_by_mean_halting_confidence():
    task = _task(1)
    truth, wrong = task.test[0][1], np.zeros((2, 2), dtype=np.uint8)
    rot = arc.Aug(1, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
    votes = Votes()
    _vote(votes, task, 0, wrong, 0.9)
    _vote(votes, task, 0, truth, 0.8, rot)  # the augmented copy is un-done before voting
    _vote(votes, task, 0, truth, 0.2)
    _vote(votes, task, 0, wrong, 0.3, rot)
    # 2 votes each; mean q: wrong 0.6, truth 0.5 -> wrong first
    ranked = votes.ranked("t", task.test[0][0])
    assert [(n, round(q, 6)) for _, n, q in ranked] == [(2, 0.6), (2, 0.5)]
    assert score(votes, {"t": task}, pass_ks=(1, 2)).pass_at == {1: 0.0, 2: 1.0}
    _vote(votes, task, 0, truth, 0.0)  # a third vote beats any confidence
    assert score(votes, {"t": task}, pass_ks=(1,)).pass_at == {1: 1.0}


def test_fractional_credit_and_all_or_nothing():
    task = _task(2)
    votes = Votes()
    _vote(votes, task, 0, task.test[0][1], 0.5)
    _vote(votes, task, 1, np.zeros((3, 3), dtype=np.uint8), 0.5)
    empty = arc.ArcTask("u", task.train, task.test[:1])  # no predictions at all: scores 0 but counts
    tasks = {"t": task, "u": empty}
    assert score(votes, tasks, pass_ks=(2,)).pass_at == {2: 0.25}
    assert score(votes, tasks, pass_ks=(2,), all_or_nothing=True).pass_at == {2: 0.0}
    res = score(votes, tasks, pass_ks=(2,))
    assert res.submission["u"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    empty = np.zeros((0, 0), dtype=np.uint8)
    for _ in range(3):  # an empty prediction wins the vote but is never submitted
        votes.add("t", arc.encode_grid(task.test[1][0]), np.zeros(900, dtype=np.uint8), 0.9)
    assert votes.ranked("t", task.test[1][0])[0][0] == arc.grid_hash(empty)
    second = score(votes, tasks, pass_ks=(2,)).submission["t"][1]
    assert second == {"attempt_1": [[0, 0, 0]] * 3, "attempt_2": [[0, 0, 0]] * 3}
    assert res.solved == {"t": [True, False], "u": [False]}


def test_votes_merge_only_when_asked():
    task = _task(1)
    a, b = Votes(), Votes()
    _vote(a, task, 0, task.test[0][1], 0.5)
    _vote(b, task, 0, np.zeros((2, 2), dtype=np.uint8), 0.5)
    _vote(b, task, 0, np.zeros((2, 2), dtype=np.uint8), 0.5)
    assert score(a, {"t": task}, pass_ks=(1,)).pass_at[1] == 1.0
    assert score(a.merge(b), {"t": task}, pass_ks=(1,)).pass_at[1] == 0.0


@pytest.fixture(scope="module")
def tiny_ckpt(mini, tmp_path_factory) -> Path:
    cfg = ModelConfig(
        vocab_size=12, seq_len=900, num_puzzle_identifiers=load_split(mini, "train").metadata.num_puzzle_identifiers,
        hidden_size=32, num_heads=2, T=1, n=1, N_sup=2, puzzle_emb_ndim=32, puzzle_emb_len=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = TRM(cfg)
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(ckpt)
    shutil.copyfile(mini / "task.json", ckpt / "task.json")
    return ckpt


@pytest.mark.slow
def test_eval_cli_on_arc_in_one_process_and_under_torchrun(mini, tiny_ckpt, tmp_path, capsys):
    one = tmp_path / "one.json"
    assert main(["eval", str(tiny_ckpt), str(mini), "--submission", str(one), "--device", "cpu", "--show", "1",
                 "--show-dir", str(tmp_path / "png")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "ARC/pass@2" in out and "# example 0" in out
    assert (tmp_path / "png" / "example_0.png").stat().st_size > 1000
    sub = json.loads(one.read_text())
    assert set(sub) == set(arc.read_test_puzzles(mini))
    two = tmp_path / "two.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "-m", "trm.cli", "eval", str(tiny_ckpt), str(mini),
           "--submission", str(two), "--device", "cpu", "--batch-size", "64"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(two.read_text()) == sub  # same votes, gathered from two ranks
    passes = [ln for ln in proc.stdout.splitlines() if ln.startswith("ARC/pass@")]
    assert passes == [ln for ln in out.splitlines() if ln.startswith("ARC/pass@")]


def test_eval_refuses_submission_on_non_arc_data(tiny_ckpt, tmp_path, capsys):
    from trm.tasks import maze

    rng = np.random.default_rng(0)
    maze.build_dataset(tmp_path / "m", maze.generate(4, 5, rng), maze.generate(2, 5, rng))
    code = main(["eval", str(tiny_ckpt), str(tmp_path / "m"), "--submission", str(tmp_path / "s.json")])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1


def test_blank_identifiers_equal_a_table_of_blank_rows(mini):
    from trm.evaluate import evaluate

    ds = load_split(mini, "test")
    cfg = ModelConfig(
        vocab_size=12, seq_len=900, num_puzzle_identifiers=ds.metadata.num_puzzle_identifiers,
        hidden_size=32, num_heads=2, T=1, n=1, N_sup=1, puzzle_emb_ndim=32, puzzle_emb_len=1,
    )  # fmt: skip
    model = TRM(cfg)
    torch.manual_seed(1)
    model.puzzle_emb.weight.normal_(std=3.0)
    kw = {"batch_size": 64, "max_examples": 40, "save_outputs": True}
    own = evaluate(model, ds, **kw).outputs["logits"]
    blank = evaluate(model, ds, blank_identifiers=True, **kw).outputs["logits"]
    model.puzzle_emb.weight[:] = model.puzzle_emb.weight[0].clone()
    np.testing.assert_allclose(evaluate(model, ds, **kw).outputs["logits"], blank, atol=1e-5)
    assert np.abs(own - blank).max() > 1e-2  # the identity matters to this model


@pytest.mark.slow
def test_training_on_lazy_arc_data_logs_the_voting_score(tmp_path, capsys):
    data = tmp_path / "lazy"
    tasks = {"evaluation": arc.load_subset(FIXTURE / "arc-agi", "evaluation")[:2]}
    arc.build_dataset(data, tasks, "evaluation", aug=2, seed=0, lazy=True)
    argv = ["train", "arc-cpu", f"data={data}", "hidden_size=32", "puzzle_emb_ndim=32", "num_heads=2",
            "global_batch_size=4", "max_steps=3", "eval_interval=1000", "--run-dir", str(tmp_path / "run"),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r["split"] == "eval"][-1]
    assert {"ARC/pass@1", "ARC/pass@2", "ARC/pass@1000"} <= set(final) and final["count"] == 6
    assert (tmp_path / "run" / "checkpoints" / "step_3" / "task.json").is_file()


def test_an_identifier_without_a_name_is_a_data_error():
    from trm.data import DataError

    votes = Votes()
    tokens = arc.encode_grid(np.ones((2, 2), dtype=np.uint8))[None]
    with pytest.raises(DataError, match="puzzle identifier 3 has no name"):
        votes.add_batch(["<blank>", "a"], np.array([3]), tokens, tokens, np.zeros(1))
