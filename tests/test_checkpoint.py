"""Official checkpoints convert to trm checkpoints that compute the same numbers.

The fixtures were written by the official TRM code (commit e7b68717) for tiny configs, with random puzzle
embeddings and a perturbed Q head: `step_10` (torch.save, `_orig_mod.model.inner.` keys), `all_config.yaml`,
and `expected.npz` holding the official logits, halting logits and carries of two supervision steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trm.checkpoint import convert_official
from trm.cli import main
from trm.errors import CheckpointError
from trm.models.trm import TRM

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name,seq_len", [("att", 16), ("mlp", None)])
def test_converted_checkpoint_matches_official_outputs(name, seq_len, tmp_path):
    src = FIXTURES / f"official_tiny_{name}"
    out = convert_official(src / "step_10", tmp_path / "ckpt", seq_len=seq_len)
    model = TRM.from_pretrained(out).eval()
    expected = np.load(src / "expected.npz")
    inputs = torch.from_numpy(expected["inputs"])
    ids = torch.from_numpy(expected["puzzle_identifiers"])
    y, z = model.initial_state(len(inputs))
    with torch.no_grad():
        for step in range(2):
            res = model(y, z, inputs, ids)
            y, z = res.y, res.z
            np.testing.assert_allclose(res.logits.numpy(), expected["logits"][step], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(res.q_halt.numpy(), expected["q_halt_logits"][step], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), expected["z_H"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z.numpy(), expected["z_L"], rtol=1e-4, atol=1e-5)
    assert model.config.mixer == ("attention" if name == "att" else "mlp")
    assert (model.config.T, model.config.n, model.config.N_sup) == (2, 2, 4)


def test_attention_checkpoint_needs_a_sequence_length(tmp_path):
    with pytest.raises(CheckpointError, match="--seq-len"):
        convert_official(FIXTURES / "official_tiny_att" / "step_10", tmp_path / "x")


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
