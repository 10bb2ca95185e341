"""New ARC tasks: fresh puzzle-embedding rows at the trained mean, fine-tuning that touches only them, and
`trm solve CKPT TASK.json` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.adapt import AdaptConfig, _examples, fine_tune, with_new_identifiers
from trm.cli import main
from trm.config import ModelConfig
from trm.models.trm import TRM
from trm.supervision import supervision_loss
from trm.tasks import arc

FIXTURE = Path(__file__).parent / "fixtures" / "arc_mini"


def tiny_model(ids: int = 5) -> TRM:
    cfg = ModelConfig(
        vocab_size=12, seq_len=900, num_puzzle_identifiers=ids, hidden_size=32, num_heads=2, T=1, n=1, N_sup=2,
        puzzle_emb_ndim=32, puzzle_emb_len=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = TRM(cfg)
    model.puzzle_emb.weight.normal_()
    return model


def eval_task() -> arc.ArcTask:
    return arc.load_subset(FIXTURE / "arc-agi", "evaluation")[0]


def test_new_rows_start_at_the_trained_mean_and_the_network_is_shared_and_frozen():
    model = tiny_model()
    new = with_new_identifiers(model, 3)
    table, old = new.puzzle_emb.weight, model.puzzle_emb.weight
    assert table.shape == (4, 32)
    torch.testing.assert_close(table[0], old[0])  # the blank row stays
    for row in table[1:]:
        torch.testing.assert_close(row, old.mean(0))
    for (name, a), (_, b) in zip(model.named_parameters(), new.named_parameters(), strict=True):
        assert torch.equal(a, b) and not b.requires_grad, name


def test_fine_tuning_moves_only_the_new_rows_and_lowers_the_loss():
    model = tiny_model()
    task = eval_task()
    augs = arc.draw_augmentations(task.train, 2, np.random.RandomState(0))
    new = with_new_identifiers(model, len(augs))
    before = {k: v.clone() for k, v in new.state_dict().items()}
    inputs, labels, ids = _examples(task, augs, translate=False, rng=np.random.RandomState(0))

    @torch.no_grad()
    def loss() -> float:  # first-step token loss on all demonstrations, from the initial state
        x, i = torch.from_numpy(inputs.astype(np.int32)), torch.from_numpy(ids.astype(np.int32))
        out = new(*new.initial_state(len(x)), x, i)
        y = torch.from_numpy(np.where(labels == 0, -100, labels.astype(np.int32)))
        return float(supervision_loss(out.logits, y, out.q_halt).lm)

    first = loss()
    fine_tune(new, inputs, labels, ids, AdaptConfig(steps=80, batch_size=8, lr=5e-2))
    last = loss()
    for key, value in new.state_dict().items():
        if key == "puzzle_emb.weight":
            assert torch.equal(value[0], before[key][0])  # the blank row is never trained
            assert not torch.equal(value[1:], before[key][1:])
        else:
            assert torch.equal(value, before[key]), key
    assert last < 0.95 * first


def test_solve_cli_writes_two_attempts_per_test_input(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    tiny_model().save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "arc"}))
    task = eval_task()
    task_file = tmp_path / f"{task.name}.json"
    task_file.write_text(json.dumps(task.raw))
    out = tmp_path / "attempts.json"
    argv = ["solve", str(ckpt), str(task_file), "--aug", "3", "--adapt-steps", "2", "--adapt-batch", "4", "--trace",
            "--out", str(out), "--blank", "--device", "cpu", "--show-dir", str(tmp_path / "png")]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "learned identity" in text and "blank identity" in text
    assert "step 1" in text and "step 2" in text  # --trace: the answer after each supervision step
    sub = json.loads(out.read_text())
    assert list(sub) == [task.name] and len(sub[task.name]) == len(task.test)
    for entry in sub[task.name]:
        assert set(entry) == {"attempt_1", "attempt_2"}
        arc.parse_grid(entry["attempt_1"], "attempt")  # a valid ARC grid
    assert (tmp_path / "png" / f"{task.name}_1.png").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [("{oops", "not valid JSON"), ('{"train": [], "test": []}', "non-empty list"), ("[1, 2]", "not an ARC task")],
)
def test_solve_rejects_bad_task_files(tmp_path, capsys, content, message):
    ckpt = tmp_path / "ckpt"
    tiny_model().save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "arc"}))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["solve", str(ckpt), str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_solve_a_kaggle_challenges_file_uses_its_solutions(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    tiny_model().save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "arc"}))
    challenges = FIXTURE / "arc-agi_evaluation_challenges.json"
    out = tmp_path / "submission.json"
    argv = ["solve", str(ckpt), str(challenges), "--aug", "1", "--adapt-steps", "1", "--adapt-batch", "2",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    tasks = arc.load_subset(FIXTURE / "arc-agi", "evaluation")
    n_test = sum(len(t.test) for t in tasks)
    assert f"of {n_test} test inputs with the learned identity" in capsys.readouterr().out  # solutions were found
    assert list(json.loads(out.read_text())) == [t.name for t in tasks]


@pytest.mark.parametrize("content", ["{oops", '{"task": "sudoku"}', '{"task": "maze", "size": "x"}'])
def test_a_malformed_task_file_in_a_checkpoint_is_one_line(tmp_path, capsys, content):
    ckpt = tmp_path / "ckpt"
    tiny_model().save_pretrained(ckpt)
    (ckpt / "task.json").write_text(content)
    assert main(["solve", str(ckpt), "[[1]]", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.json" in err[0] and "malformed task file" in err[0]
