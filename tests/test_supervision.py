"""Deep supervision, ACT halting, exploration and the losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from trm.config import ModelConfig
from trm.models.trm import TRM
from trm.supervision import (
    DeepSupervision,
    softmax_cross_entropy,
    stablemax_cross_entropy,
    supervision_loss,
    think,
)


def tiny_model(**kw) -> TRM:
    base = dict(
        vocab_size=11,
        seq_len=16,
        hidden_size=32,
        num_heads=2,
        num_layers=1,
        T=2,
        n=1,
        N_sup=4,
        puzzle_emb_ndim=0,
        halt_exploration_prob=0.0,
    )
    base.update(kw)
    torch.manual_seed(0)
    return TRM(ModelConfig(**base))


def make_batch(b: int, offset: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(offset)
    return {
        "inputs": torch.randint(1, 11, (b, 16), generator=g, dtype=torch.int32),
        "labels": torch.randint(2, 11, (b, 16), generator=g, dtype=torch.int32),
        "puzzle_identifiers": torch.full((b,), offset, dtype=torch.int32),
    }


def test_stablemax_matches_hand_computation():
    logits = torch.tensor([[[1.0, -1.0, 0.0]]])
    # s(1) = 2, s(-1) = 1 / (1 + 1) = 0.5, s(0) = 1  ->  p = [2, 0.5, 1] / 3.5
    for label, s in ((0, 2.0), (1, 0.5), (2, 1.0)):
        loss = stablemax_cross_entropy(logits, torch.tensor([[label]]))
        assert loss.dtype == torch.float64
        assert math.isclose(loss.item(), -math.log(s / 3.5), rel_tol=1e-12)
    assert stablemax_cross_entropy(logits, torch.tensor([[-100]])).item() == 0.0


def test_softmax_matches_hand_computation():
    logits = torch.tensor([[[1.0, -1.0, 0.0]]])
    expected = -(1.0 - math.log(math.e + math.exp(-1) + 1))
    assert math.isclose(softmax_cross_entropy(logits, torch.tensor([[0]])).item(), expected, rel_tol=1e-6)


def test_loss_is_token_mean_per_sequence_summed_plus_half_bce():
    logits = torch.zeros(2, 4, 3)
    logits[0, :, 1] = 5.0  # row 0 predicts class 1 everywhere
    labels = torch.tensor([[1, 1, 1, 1], [0, 2, -100, -100]])
    q_halt = torch.tensor([0.3, -1.2])
    res = supervision_loss(logits, labels, q_halt, "softmax")
    ce = softmax_cross_entropy(logits, labels)
    lm = ce[0].sum() / 4 + ce[1].sum() / 2
    # row 0 is exactly right, row 1 is not (argmax of zeros is class 0, label 2 at position 1 is wrong)
    assert res.seq_correct.tolist() == [True, False]
    bce = -math.log(torch.sigmoid(torch.tensor(0.3)).item()) - math.log(1 - torch.sigmoid(torch.tensor(-1.2)).item())
    assert math.isclose(res.lm.item(), lm.item(), rel_tol=1e-6)
    assert math.isclose(res.q_halt.item(), bce, rel_tol=1e-5)
    assert math.isclose(res.total.item(), lm.item() + 0.5 * bce, rel_tol=1e-5)


def test_eval_mode_runs_all_steps_and_never_halts_early():
    model = tiny_model()
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # Q head screams "halt"
    sup = DeepSupervision(model).eval()
    b = make_batch(3)
    carry = sup.initial_carry(b)
    for step in range(1, 5):
        carry, _, _ = sup(carry, b)
        assert carry.steps.tolist() == [step] * 3
        assert carry.halted.tolist() == [step == 4] * 3


def test_training_halts_on_q_and_rolls_new_puzzles_into_halted_slots():
    model = tiny_model()
    sup = DeepSupervision(model).train()
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([-5.0, 0.0]))
    first, second = make_batch(4, 1), make_batch(4, 2)
    carry = sup.initial_carry(first)
    carry, _, _ = sup(carry, first)
    assert not carry.halted.any()
    assert torch.equal(carry.data["inputs"], first["inputs"])
    # running slots keep their puzzle, state and step count; the new batch's rows are ignored there
    carry2, _, _ = sup(carry, second)
    assert torch.equal(carry2.data["inputs"], first["inputs"])
    assert carry2.steps.tolist() == [2] * 4
    # now make slots 0 and 2 halt: bias +5 on q_halt halts everything at this step
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)
    carry3, _, _ = sup(carry2, second)
    assert carry3.halted.all() and carry3.steps.tolist() == [3] * 4
    third = make_batch(4, 3)
    carry4, _, _ = sup(carry3, third)  # every slot was halted: all take the new puzzles and restart
    assert torch.equal(carry4.data["inputs"], third["inputs"]) and carry4.steps.tolist() == [1] * 4


def test_max_steps_caps_training_and_exploration_sets_a_minimum():
    model = tiny_model(N_sup=4)
    sup = DeepSupervision(model).train()
    b = make_batch(64)
    carry = sup.initial_carry(b)
    for _ in range(4):
        carry, _, _ = sup(carry, b)
    assert carry.halted.all()  # N_sup = 4 reached even though q_halt = -5

    explore = tiny_model(N_sup=4, halt_exploration_prob=1.0)
    with torch.no_grad():
        explore.q_head.bias.fill_(5.0)
    sup = DeepSupervision(explore).train()
    carry = sup.initial_carry(b)
    carry, _, _ = sup(carry, b)
    assert not carry.halted.any()  # every slot drew a minimum of >= 2 steps
    halted_at = torch.zeros(64, dtype=torch.int32)
    for step in range(2, 5):
        carry, _, _ = sup(carry, b)
        halted_at = torch.where(carry.halted & (halted_at == 0), step, halted_at)
    assert set(halted_at.tolist()) <= {2, 3, 4} and len(set(halted_at.tolist())) > 1


def test_q_continue_target_trains_without_crashing():
    model = tiny_model(q_continue=True)
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([0.0, -5.0]))  # target sigmoid(max(q_halt', q_cont')) = 0.5
    sup = DeepSupervision(model).train()
    b = make_batch(4)
    carry = sup.initial_carry(b)
    carry, losses, metrics = sup(carry, b)
    assert losses.q_continue.item() > 0
    losses.total.backward()
    assert model.q_head.weight.grad is not None and model.q_head.weight.grad[1].abs().sum() > 0


def test_think_runs_the_given_number_of_steps():
    model = tiny_model(N_sup=6)
    b = make_batch(2)
    assert think(model, b["inputs"], b["puzzle_identifiers"]).steps.tolist() == [6, 6]
    longer = think(model, b["inputs"], b["puzzle_identifiers"], steps=9)
    y, z = model.initial_state(2)
    for _ in range(9):
        out = model(y, z, b["inputs"], b["puzzle_identifiers"])
        y, z = out.y, out.z
    assert longer.steps.tolist() == [9, 9] and torch.equal(longer.logits, out.logits)


@pytest.mark.parametrize("loss_type", ["stablemax", "softmax"])
def test_model_learns_a_fixed_mapping(loss_type):
    """A small run on one repeated batch: the loss falls and the answers become right."""
    from trm.optim import AdamATan2

    model = tiny_model(N_sup=2, hidden_size=64)
    sup = DeepSupervision(model, loss_type).train()
    b = make_batch(8)
    b["labels"] = (b["inputs"] % 9 + 2).to(torch.int32)  # a token-wise function of the input
    opt = AdamATan2(model.parameters(), lr=3e-3, weight_decay=0.0)
    carry = sup.initial_carry(b)
    first = None
    for _ in range(150):
        carry, losses, _ = sup(carry, b)
        (losses.total / 8).backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else losses.lm.item()
    assert losses.lm.item() < 0.1 * first
    res = think(model.eval(), b["inputs"], b["puzzle_identifiers"])
    assert (res.preds == b["labels"]).float().mean() > 0.95
