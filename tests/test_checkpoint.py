"""Official checkpoints convert to trm checkpoints that compute the same numbers.

The fixtures are written by the official code itself, by `tests/fixtures/make_official_fixtures.py` (TRM
repository commit e7b68717 for TRM, trm_singlez, trm_hier6 and transformers_baseline; sapientinc/HRM for
HRM), for tiny float32 configs with random puzzle embeddings and a perturbed Q head: `step_10`
(torch.save, `_orig_mod.model.inner.` keys), `all_config.yaml`, and `expected.npz` holding the official
logits, halting logits and carries of two supervision steps (and, for HRM, one training step's losses and
Q-learning target).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.checkpoint import convert_official
from trm.cli import main
from trm.errors import CheckpointError
from trm.models import HRM, TRM, RecursiveModel, Transformer, build_model
from trm.supervision import DeepSupervision

FIXTURES = Path(__file__).parent / "fixtures"
TOL = {"rtol": 1e-4, "atol": 1e-5}

# fixture, --seq-len (when the weights do not show it), class, fields the conversion must find
CASES = [
    ("official_tiny_att", 16, TRM, {"mixer": "attention", "T": 2, "n": 2, "N_sup": 4}),
    ("official_tiny_mlp", None, TRM, {"mixer": "mlp", "T": 2, "n": 2, "N_sup": 4}),
    ("official_tiny_singlez", 16, TRM, {"latent": "single"}),
    ("official_tiny_hier6", 16, TRM, {"latent": "multi", "num_z": 6, "n": 3}),
    ("official_tiny_baseline", 16, Transformer, {"num_layers": 3, "prefix_len": 1}),
    ("official_hrm_tiny", 16, HRM, {"num_layers": 2, "num_h_layers": 2, "q_continue": True, "prefix_len": 2}),
    ("official_hrm_tiny_learned", None, HRM, {"pos_encoding": "learned"}),
]


def _expected_carry(name: str, expected) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, z) in trm's layout: singlez carries its one state as y; hier6 stacks its latents on axis 1."""
    if "singlez" in name:
        return expected["z_L"], None
    if "hier6" in name:
        return expected["z_H"], expected["z_L"].transpose(1, 0, 2, 3)
    return expected["z_H"], expected.get("z_L")


@pytest.mark.parametrize("name,seq_len,cls,fields", CASES, ids=[c[0].removeprefix("official_") for c in CASES])
def test_converted_checkpoint_matches_official_outputs(name, seq_len, cls, fields, tmp_path):
    src = FIXTURES / name
    out, notes = convert_official(src / "step_10", tmp_path / "ckpt", seq_len=seq_len)
    model = RecursiveModel.from_pretrained(out).eval()
    assert type(model) is cls and notes
    for key, value in fields.items():
        assert getattr(model.config, key) == value, key
    expected = np.load(src / "expected.npz")
    inputs = torch.from_numpy(expected["inputs"])
    ids = torch.from_numpy(expected["puzzle_identifiers"])
    y, z = model.initial_state(len(inputs))
    with torch.no_grad():
        for step in range(2):
            res = model(y, z, inputs, ids)
            y, z = res.y, res.z
            np.testing.assert_allclose(res.logits.numpy(), expected["logits"][step], **TOL)
            np.testing.assert_allclose(res.q_halt.numpy(), expected["q_halt_logits"][step], **TOL)
            np.testing.assert_allclose(res.q_continue.numpy(), expected["q_continue_logits"][step], **TOL)
    want_y, want_z = _expected_carry(name, expected)
    np.testing.assert_allclose(y.numpy(), want_y, **TOL)
    if want_z is not None:
        np.testing.assert_allclose(z.numpy(), want_z, **TOL)
    else:
        assert z.numel() == 0


@pytest.mark.parametrize("name,seq_len,cls,fields", CASES, ids=[c[0].removeprefix("official_") for c in CASES])
def test_a_seed_gives_the_official_initial_weights(name, seq_len, cls, fields, tmp_path):
    """Under the same torch seed a fresh model draws exactly the official initialisation (the fixtures' weights
    are it, under manual_seed(0), except the Q head and puzzle embeddings, perturbed afterwards), so seeded runs
    start where the official code's runs with that seed start."""
    out, _ = convert_official(FIXTURES / name / "step_10", tmp_path / "ckpt", seq_len=seq_len)
    official = RecursiveModel.from_pretrained(out)
    torch.manual_seed(0)
    fresh = type(official)(official.config)
    perturbed = ("q_head.", "puzzle_emb.")
    compared = 0
    for key, value in official.state_dict().items():
        if not key.startswith(perturbed):
            torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0, msg=key)
            compared += 1
    assert compared >= 6


@pytest.mark.parametrize("name,seq_len,cls,fields", CASES, ids=[c[0].removeprefix("official_") for c in CASES])
def test_a_bfloat16_model_draws_the_official_bfloat16_initial_states(name, seq_len, cls, fields, tmp_path, monkeypatch):
    """The official code draws H_init / L_init in its forward dtype, so under the same seed its bfloat16 runs
    start from other states than its float32 runs. A trm model that computes in bfloat16 draws them in bfloat16
    too: the seed gives the official bfloat16 model's states, exactly (fixture: init_bfloat16.npz)."""
    out, _ = convert_official(FIXTURES / name / "step_10", tmp_path / "ckpt", seq_len=seq_len)
    config = RecursiveModel.from_pretrained(out).config
    official = dict(np.load(FIXTURES / name / "init_bfloat16.npz"))
    latents = sorted(k for k in official if re.fullmatch(r"L\d_init", k))  # trm_hier6: L1_init..L6_init
    want = {"y_init": official.get("H_init")}
    want["z_init"] = np.stack([official[k] for k in latents]) if latents else official.get("L_init")
    want = {k: torch.from_numpy(v) for k, v in want.items() if v is not None}
    drawn = {}
    for dtype in ("bfloat16", "float32"):
        torch.manual_seed(0)
        drawn[dtype] = cls(config.model_copy(update={"dtype": dtype})).state_dict()
    monkeypatch.setenv("TRM_CPU_DTYPE", "bfloat16")  # `auto` resolved for the device the model will compute on
    torch.manual_seed(0)
    drawn["auto on a bf16 CPU"] = build_model(config.model_copy(update={"dtype": "auto"}), torch.device("cpu"))
    drawn["auto on a bf16 CPU"] = drawn["auto on a bf16 CPU"].state_dict()
    assert want.keys() <= drawn["bfloat16"].keys() and want
    for key, value in want.items():
        torch.testing.assert_close(drawn["bfloat16"][key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(drawn["auto on a bf16 CPU"][key], value, rtol=0, atol=0, msg=key)
        assert not torch.equal(drawn["float32"][key], value), key  # the float32 draw is another one


@pytest.mark.parametrize("name,seq_len", [("official_hrm_tiny", 16), ("official_hrm_tiny_learned", None)])
def test_hrm_training_step_matches_the_official_losses_and_q_learning_target(name, seq_len, tmp_path):
    """One training-mode ACT step (no exploration): the halting decisions, the LM and halting losses and the
    Q-continue loss against the bootstrapped target of the extra no-grad step all equal the official ones."""
    src = FIXTURES / name
    out, _ = convert_official(src / "step_10", tmp_path / "ckpt", seq_len=seq_len)
    model = RecursiveModel.from_pretrained(out).train()
    e = np.load(src / "expected.npz")
    batch = {k: torch.from_numpy(e[k]) for k in ("inputs", "labels", "puzzle_identifiers")}
    sup = DeepSupervision(model).train()
    carry = sup.initial_carry(batch)
    carry, losses, _ = sup(carry, batch, min_steps=torch.zeros(len(e["inputs"]), dtype=torch.int32))
    assert carry.halted.tolist() == e["train_halted"].tolist()
    assert carry.steps.tolist() == e["train_steps"].tolist()
    np.testing.assert_allclose(losses.lm.item(), e["train_lm_loss"], rtol=1e-5)
    np.testing.assert_allclose(losses.q_halt.item(), e["train_q_halt_loss"], rtol=1e-5)
    np.testing.assert_allclose(losses.q_continue.item(), e["train_q_continue_loss"], rtol=1e-5)
    np.testing.assert_allclose(losses.total.item(), e["train_loss"], rtol=1e-5)


def test_attention_checkpoint_needs_a_sequence_length(tmp_path):
    with pytest.raises(CheckpointError, match="--seq-len"):
        convert_official(FIXTURES / "official_tiny_att" / "step_10", tmp_path / "x")


def test_a_puzzle_table_of_another_size_is_an_error_or_a_mean_resize(tmp_path, capsys):
    """The official HRM checkpoints fail to load on data with another puzzle count; here that is one error
    line, and `--fit-data` resizes the table with every row at the mean of the official ones."""
    from trm.data import DatasetWriter

    src = FIXTURES / "official_hrm_tiny_learned"
    out, _ = convert_official(src / "step_10", tmp_path / "ckpt")
    official_rows = RecursiveModel.from_pretrained(out).puzzle_emb.weight
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    with DatasetWriter(data, "test", seq_len=16) as w:
        w.add_group([(i, rng.integers(1, 6, (1, 16)), rng.integers(1, 6, (1, 16))) for i in range(1, 9)])
        w.close(vocab_size=11, num_puzzle_identifiers=9)
    assert main(["eval", str(out), str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5 puzzle-embedding rows" in err[0] and "9 puzzle identifiers" in err[0]

    assert main(["convert", str(src / "step_10"), "--out", str(tmp_path / "fit"), "--fit-data", str(data)]) == 0
    assert "resized from 5 to 9 rows" in capsys.readouterr().out
    table = RecursiveModel.from_pretrained(tmp_path / "fit").puzzle_emb.weight
    assert table.shape == (9, 64)
    torch.testing.assert_close(table, official_rows.mean(0, keepdim=True).expand(9, -1))
    assert main(["eval", str(tmp_path / "fit"), str(data)]) == 0


def test_wrong_class_and_mismatched_config_are_one_line_errors(tmp_path, capsys):
    out, _ = convert_official(FIXTURES / "official_hrm_tiny_learned" / "step_10", tmp_path / "hrm")
    with pytest.raises(CheckpointError, match="an hrm checkpoint, not trm"):
        TRM.from_pretrained(out)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "step_10").write_bytes((FIXTURES / "official_hrm_tiny" / "step_10").read_bytes())
    (bad / "all_config.yaml").write_text((FIXTURES / "official_tiny_att" / "all_config.yaml").read_text())
    assert main(["convert", str(bad / "step_10"), "--out", str(tmp_path / "o"), "--seq-len", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights are of an hrm model" in err[0]
    assert not (tmp_path / "o").exists()


def test_an_hrm_checkpoint_of_the_wrong_shape_is_one_error_line(tmp_path, capsys):
    """A config that disagrees with the weights (three f_H blocks claimed, two stored; another width)."""
    src = FIXTURES / "official_hrm_tiny_learned"
    for field, value in (("H_layers: 2", "H_layers: 3"), ("hidden_size: 32", "hidden_size: 64")):
        bad = tmp_path / field.split(":")[0]
        bad.mkdir()
        (bad / "step_10").write_bytes((src / "step_10").read_bytes())
        (bad / "all_config.yaml").write_text((src / "all_config.yaml").read_text().replace(field, value))
        assert main(["convert", str(bad / "step_10"), "--out", str(bad / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("trm: error:") and "step_10" in err[0], err
        assert not (bad / "out").exists()


def test_convert_cli_and_bad_inputs(tmp_path, capsys):
    src = FIXTURES / "official_tiny_mlp"
    assert main(["convert", str(src / "step_10"), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "model.safetensors").is_file()
    assert main(["info", str(tmp_path / "ok")]) == 0
    assert "trainable parameters" in capsys.readouterr().out
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "step_1").write_bytes(b"\x00not a checkpoint")
    (broken / "all_config.yaml").write_text((src / "all_config.yaml").read_text())
    assert main(["convert", str(broken / "step_1"), "--out", str(tmp_path / "o2")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing"), "--out", str(tmp_path / "o3")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
