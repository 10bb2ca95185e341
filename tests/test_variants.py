"""Every model and ablation: the gradient reaches exactly the recursion steps and parameters it should, and
each one trains through the one trainer, saves, loads and solves."""

from __future__ import annotations

import pytest
import torch

from trm.cli import main
from trm.config import build_train_config
from trm.errors import ConfigError
from trm.models import HRM, TRM, RecursiveModel, Transformer, build_model
from trm.models.layers import Block

ATT = ["mixer=attention", "pos_encoding=rope"]
VARIANTS = {
    "trm-mlp": [],
    "trm-att": ATT,
    "single-latent": ["latent=single"],
    "multi-latent": ["latent=multi", "num_z=3"],
    "one-step-gradient": ["gradient=one_step", "n=3"],
    "conv-swiglu": ["conv_kernel=2", *ATT],
    "four-layers": ["num_layers=4", "n=1"],
    "deeper-recursion": ["T=3", "n=4"],
    "hrm": ["arch=hrm", "num_layers=2", "num_h_layers=1", "q_continue=true", *ATT],
    "direct": ["arch=transformer", "num_layers=3", "N_sup=1", *ATT],
    "transformer-baseline": ["arch=transformer", "num_layers=3", *ATT],
}
# Switches of the trainer, not of the network: they train through the same loop (the slow test) but build
# the same network as trm-mlp.
TRAINING = {**VARIANTS, "fewer-supervision-steps": ["N_sup=2"], "no-ema": ["ema=false"]}


def tiny(overrides: list[str]) -> RecursiveModel:
    torch.manual_seed(0)
    return build_model(build_train_config("sudoku4-tiny", overrides).model)


def expected_grad_blocks(model: RecursiveModel) -> int:
    """Block applications on the gradient path of one supervision step."""
    cfg = model.config
    if isinstance(model, HRM):
        return cfg.num_layers + cfg.num_h_layers  # only the final f_L and f_H updates
    if isinstance(model, Transformer):
        return cfg.num_layers
    updates = 2 if cfg.gradient == "one_step" else model.n + 1
    return updates * cfg.num_layers


@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_reaches_exactly_the_last_updates_and_every_weight(name):
    model = tiny(VARIANTS[name]).train()
    calls: list[bool] = []
    for module in model.modules():
        if isinstance(module, Block):
            module.register_forward_hook(lambda _m, _i, out: calls.append(out.requires_grad))
    y, z = model.initial_state(4)
    y, z = y.requires_grad_(), z.requires_grad_()
    inputs = torch.randint(1, 6, (4, 16))
    out = model(y, z, inputs, torch.zeros(4, dtype=torch.int32))
    (out.logits.float().square().mean() + out.q_halt.sum() + out.q_continue.sum()).backward()

    grad = expected_grad_blocks(model)
    assert len(calls) == model.blocks_per_step
    assert calls == [False] * (len(calls) - grad) + [True] * grad  # the gradient path is the last updates only
    carried_in_grad_path = isinstance(model, Transformer)  # no recursion: the carry enters the one pass
    assert (y.grad is not None) == carried_in_grad_path
    assert z.grad is None  # z enters through no-grad updates only (or is empty)
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    before = {k: v.clone() for k, v in model.named_buffers()}
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    for k, v in model.named_buffers():  # initial states and the puzzle table are not dense-trained
        torch.testing.assert_close(v, before[k], msg=k)


def test_one_step_gradient_differs_from_the_full_block_gradient_only_by_the_earlier_updates():
    """Same weights and inputs: the forward is identical, the gradients are not."""
    full, one = tiny(["n=3"]), tiny(["n=3", "gradient=one_step"])
    one.load_state_dict(full.state_dict())
    inputs, ids = torch.randint(1, 6, (4, 16)), torch.zeros(4, dtype=torch.int32)
    grads = []
    for model in (full, one):
        out = model(*model.initial_state(4), inputs, ids)
        out.logits.float().square().mean().backward()
        grads.append(model.embed_tokens.weight.grad.clone())
        logits = out.logits.detach()
        if len(grads) == 1:
            first = logits
    torch.testing.assert_close(first, logits)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["arch=hrm", "latent=single"], "latent=single is a TRM ablation"),
        (["arch=transformer", "gradient=one_step"], "gradient=one_step is a TRM ablation"),
        (["num_h_layers=2"], "num_h_layers is HRM's"),
        (["num_z=4"], "num_z applies only to latent=multi"),
        (["latent=multi", "num_z=2", "n=3"], "needs num_z >= n"),
        (["arch=lstm"], "arch"),
        (["arch=transformer", "depth_schedule=[{until: 0.5, T: 1}]"], "do not apply to arch transformer"),
    ],
)
def test_a_switch_that_does_not_apply_is_one_config_error(overrides, message, capsys):
    with pytest.raises(ConfigError, match=message):
        build_train_config("sudoku4-tiny", overrides)
    assert main(["train", "sudoku4-tiny", *overrides, "--run-dir", "never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trm: error:") and message in err[0]


@pytest.fixture(scope="module")
def data4(sudoku4_data):
    return sudoku4_data("--generate", "60", "--test-fraction", "0.2", "--seed", "3")


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINING)
def test_every_variant_trains_saves_loads_and_solves(name, data4, tmp_path, capsys):
    run = tmp_path / name
    args = ["train", "sudoku4-tiny", f"data={data4}", "max_steps=3", "eval_interval=3", "global_batch_size=16"]
    assert main([*args, *TRAINING[name], "--run-dir", str(run), "--no-progress"]) == 0
    model = RecursiveModel.from_pretrained(run / "checkpoints" / (run / "checkpoints" / "last").read_text().strip())
    want = {"hrm": HRM, "direct": Transformer, "transformer-baseline": Transformer}.get(name, TRM)
    assert type(model) is want
    assert main(["solve", str(run), "12..34....21....", "--steps", "2"]) == 0
    assert "supervision steps: 2" in capsys.readouterr().out


def test_a_model_must_define_the_whole_step_interface():
    """The base class is abstract: a new model that forgets a member fails at construction, not mid-run."""

    class Incomplete(RecursiveModel):  # no arch: stays out of the registry
        def initial_state(self, batch_size):
            return self._empty(batch_size), self._empty(batch_size)

    with pytest.raises(TypeError, match="blocks_per_step"):
        Incomplete(build_train_config("sudoku4-tiny").model)
