"""The continuous-batching inference engine: equal to the fixed-step path with halting off, refill order,
batch-composition independence, halting policies on hand-set q values, the step cap, sampling and selection."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from trm.config import ModelConfig
from trm.errors import ConfigError
from trm.inference import Engine, InferenceConfig, Request, Solver, parse_policy
from trm.inference.halting import DEFAULT_POLICY, StepView
from trm.models import RecursiveModel, StepOutput, build_model
from trm.supervision import think
from trm.tasks.sudoku import SudokuTask


def tiny_trm(**kw) -> RecursiveModel:
    base = dict(
        vocab_size=11, seq_len=16, hidden_size=32, num_heads=2, num_layers=1, T=2, n=1, N_sup=4, puzzle_emb_ndim=0
    )
    base.update(kw)
    torch.manual_seed(0)
    return build_model(ModelConfig(**base)).eval()


def random_inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 11, size=(n, 16)).astype(np.int32)


class Scripted(nn.Module):
    """A stand-in model whose every row follows a script set by its input tokens: token 0 is the step at
    which q_halt turns positive, token 1 the step after which the prediction stops changing. y[:, 0, 0]
    counts the steps taken; the prediction at step s is min(s, token 1) in every position."""

    def __init__(self, n_sup: int = 4, seq_len: int = 4, vocab: int = 12):
        super().__init__()
        self.config = SimpleNamespace(N_sup=n_sup, seq_len=seq_len, vocab_size=128)  # inputs carry the script
        self.vocab = vocab
        self.device = torch.device("cpu")
        self.calls: list[int] = []  # rows per forward call

    def initial_state(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(b, 1, 1), torch.zeros(b, 1, 1)

    def forward(self, y, z, inputs, ids) -> StepOutput:
        self.calls.append(len(inputs))
        y = y + 1
        step = y[:, 0, 0]
        pred = torch.minimum(step, inputs[:, 1].float()).long()
        logits = nn.functional.one_hot(pred, self.vocab).float()[:, None].expand(-1, self.config.seq_len, -1)
        q_halt = torch.where(step >= inputs[:, 0].float(), 3.0, -3.0)
        return StepOutput(y, z, logits, q_halt, torch.zeros_like(q_halt))


def scripted(halt_at: int, stable_after: int = 99, seq_len: int = 4) -> Request:
    return Request(np.array([halt_at, stable_after] + [1] * (seq_len - 2), dtype=np.int32))


# -- equal to the fixed-step path ------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [None, 7])
def test_halting_off_gives_the_fixed_step_answers(steps):
    model = tiny_trm()
    inputs = random_inputs(10)
    ref = think(model, torch.from_numpy(inputs), torch.zeros(10, dtype=torch.int32), steps=steps)
    engine = Engine(model, InferenceConfig(max_steps=steps, batch_size=4, keep_logits=True))
    answers = sorted(engine.run(Request(x) for x in inputs), key=lambda a: a.index)
    assert [a.steps for a in answers] == [steps or 4] * 10
    np.testing.assert_array_equal(np.stack([a.preds for a in answers]), ref.preds.numpy())
    torch.testing.assert_close(torch.stack([a.chosen.logits for a in answers]), ref.logits, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose([a.chosen.q_halt for a in answers], ref.q_halt.numpy(), atol=1e-5)
    assert engine.row_steps == 10 * (steps or 4)


def test_a_puzzles_answer_does_not_depend_on_its_batch():
    """The same puzzle, alone or among others, in pools of different sizes, with halting and noisy samples."""
    model = tiny_trm(N_sup=6)
    with torch.no_grad():
        model.q_head.weight.normal_(0, 0.5)  # rows halt at different steps
        model.q_head.bias.fill_(0.0)
    inputs = random_inputs(12, seed=3)
    cfg = dict(policy="q|stable:1", samples=3, noise=0.3, noise_mode="both", trace=True)
    alone = next(iter(Engine(model, InferenceConfig(batch_size=1, **cfg)).run([Request(inputs[5])])))
    crowd = list(Engine(model, InferenceConfig(batch_size=7, **cfg)).run(Request(x) for x in inputs))
    among = next(a for a in crowd if a.index == 5)
    assert len({a.steps for a in crowd}) > 1  # halting really varied inside the pool
    for t1, t2 in zip(alone.trajectories, among.trajectories, strict=True):
        assert t1.steps == t2.steps
        np.testing.assert_array_equal(t1.preds, t2.preds)
        assert t1.q_halt == pytest.approx(t2.q_halt, abs=1e-4)
        for p1, p2 in zip(t1.trace, t2.trace, strict=True):
            np.testing.assert_array_equal(p1, p2)


# -- the pool --------------------------------------------------------------------------------------------------
def test_slots_are_refilled_in_queue_order_as_rows_finish():
    """Pool of 2; halting steps 3, 1, 1, 2, 1, 3 (q policy). Hand simulation, rows as (puzzle, its step):
    1: (p0,1) (p1,1) -> p1 halts;  2: (p0,2) (p2,1) -> p2;  3: (p0,3) (p3,1) -> p0;  4: (p3,2) (p4,1) -> both;
    5-7: (p5,1..3) alone -> p5 at its 3rd step. Rows per step 2, 2, 2, 2, 1, 1, 1."""
    model = Scripted()
    engine = Engine(model, InferenceConfig(policy="q", batch_size=2))
    order = [(a.index, a.steps) for a in engine.run([scripted(h) for h in (3, 1, 1, 2, 1, 3)])]
    assert order == [(1, 1), (2, 1), (0, 3), (3, 2), (4, 1), (5, 3)]
    assert model.calls == [2, 2, 2, 2, 1, 1, 1]
    assert engine.row_steps == 11 and engine.idle


def test_step_and_submit_serve_a_stream():
    model = Scripted()
    engine = Engine(model, InferenceConfig(policy="q", batch_size=4))
    engine.submit(scripted(2))
    assert engine.step() == [] and engine.live == 1
    engine.submit(scripted(1))  # arrives while the first is thinking, joins the pool
    done = engine.step()
    assert sorted(a.index for a in done) == [0, 1] and engine.idle


def test_throughput_follows_the_mean_steps():
    """Eight puzzles, one needs 4 steps, the others 1: a fixed batch of 8 would run 4 steps of 8 rows (32);
    the pool runs 8 + 1 + 1 + 1 = 11 row-steps."""
    model = Scripted()
    engine = Engine(model, InferenceConfig(policy="q", batch_size=8))
    list(engine.run([scripted(4)] + [scripted(1)] * 7))
    assert engine.row_steps == 11 and model.calls == [8, 1, 1, 1]


# -- the step cap ----------------------------------------------------------------------------------------------
def test_the_step_cap_may_exceed_n_sup_and_always_ends_a_row():
    model = Scripted(n_sup=4)
    fixed = list(Engine(model, InferenceConfig(max_steps=10)).run([scripted(2)]))
    assert fixed[0].steps == 10  # fixed: beyond N_sup, to the cap
    capped = list(Engine(model, InferenceConfig(policy="q", max_steps=5)).run([scripted(8), scripted(3)]))
    assert sorted((a.index, a.steps) for a in capped) == [(0, 5), (1, 3)]


# -- policies on hand-set values ---------------------------------------------------------------------------------
def view(q_halt, q_continue=None, steps=None, stable=None, valid=None) -> StepView:
    q = torch.tensor(q_halt, dtype=torch.float32)
    return StepView(
        q,
        torch.tensor(q_continue if q_continue is not None else [0.0] * len(q_halt)),
        torch.tensor(steps if steps is not None else [1] * len(q_halt)),
        torch.tensor(stable if stable is not None else [0] * len(q_halt)),
        lambda: torch.tensor(valid if valid is not None else [False] * len(q_halt)),
    )


def test_policies_on_hand_set_q_values():
    v = view(
        q_halt=[-1.0, 0.5, 3.0, 0.1],
        q_continue=[-2.0, 1.0, 2.0, 0.2],
        steps=[1, 2, 3, 4],
        stable=[0, 1, 2, 3],
        valid=[True, False, True, False],
    )
    # sigmoid(0.5) = 0.62, sigmoid(3) = 0.95, sigmoid(0.1) = 0.525
    assert parse_policy("fixed")(v).tolist() == [False] * 4
    assert parse_policy("q")(v).tolist() == [False, True, True, True]
    assert parse_policy("q:0.9")(v).tolist() == [False, False, True, False]
    assert parse_policy("q:0.6")(v).tolist() == [False, True, True, False]
    assert parse_policy("q-continue")(v).tolist() == [True, False, True, False]
    assert parse_policy("stable")(v).tolist() == [False, False, True, True]
    assert parse_policy("stable:1")(v).tolist() == [False, True, True, True]
    assert parse_policy("valid")(v).tolist() == [True, False, True, False]
    assert parse_policy("min:3")(v).tolist() == [False, False, True, True]
    assert parse_policy("giveup:0.3")(v).tolist() == [True, False, False, False]  # sigmoid(-1) = 0.27
    assert parse_policy("min:2+giveup:0.6")(v).tolist() == [False, False, False, True]  # sigmoid(0.1) = 0.52
    assert parse_policy("q+stable:2")(v).tolist() == [False, False, True, True]
    assert parse_policy("q:0.9|valid")(v).tolist() == [True, False, True, False]
    assert parse_policy("q+min:4|valid")(v).tolist() == [True, False, True, True]  # + binds tighter than |


def test_the_default_policy_on_hand_set_values():
    # sigmoid(4.5) = 0.989 (not > 0.99), sigmoid(4.7) = 0.991, sigmoid(0.5) = 0.62, sigmoid(-0.5) = 0.38
    v = view(q_halt=[4.7, 4.5, 4.5, 0.5, -0.5, 4.7], steps=[1, 1, 2, 2, 5, 3], stable=[0, 0, 1, 1, 4, 0])
    # very sure: at once; fairly sure: only with a stable answer; never on a low Q, however stable
    assert parse_policy("adaptive")(v).tolist() == [True, False, True, True, False, True]


def test_the_q_threshold_half_is_exactly_the_trained_rule():
    v = view(q_halt=[0.0, 1e-6, -1e-6])
    assert parse_policy("q")(v).tolist() == [False, True, False]  # q_halt > 0


def test_the_checker_is_not_run_when_and_already_says_no():
    calls = []
    v = view(q_halt=[-1.0, -2.0])
    v.valid = lambda: calls.append(1) or torch.tensor([True, True])
    assert parse_policy("q+valid")(v).tolist() == [False, False] and calls == []


def test_stable_counts_unchanged_predictions_in_the_engine():
    """Prediction min(step, 2): changes at step 2, equal at 3 (stable 1) and 4 (stable 2)."""
    engine = Engine(Scripted(n_sup=8), InferenceConfig(policy="stable:2", trace=True))
    (ans,) = engine.run([scripted(99, stable_after=2)])
    assert ans.steps == 4
    assert [int(p[0]) for p in ans.chosen.trace] == [1, 2, 2, 2]
    (one,) = Engine(Scripted(n_sup=8), InferenceConfig(policy="stable:1")).run([scripted(99, stable_after=2)])
    assert one.steps == 3


def test_valid_policy_stops_on_a_checked_answer():
    """A checker accepting prediction token 3: the row halts at step 3."""

    def checker(preds: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        return (preds == 3).all(axis=1)

    (ans,) = Engine(Scripted(n_sup=8), InferenceConfig(policy="valid"), checker).run([scripted(99, 5)])
    assert ans.steps == 3 and (ans.preds == 3).all()


@pytest.mark.parametrize(
    "spec",
    ["nope", "q:2", "q:abc", "stable:0", "stable:x", "min", "fixed:3", "q+", "|q", "giveup", "giveup:0"],
)
def test_bad_policies_are_config_errors(spec):
    with pytest.raises(ConfigError):
        parse_policy(spec)


def test_adaptive_is_the_default_policy_of_the_models_kind():
    assert Engine(Scripted(), InferenceConfig(policy="adaptive")).policy.name == DEFAULT_POLICY == "q:0.99|q+stable:1"
    hrm_style = Scripted()
    hrm_style.config.q_continue = True  # trained with the Q-continue head: halts by q_halt > q_continue
    assert Engine(hrm_style, InferenceConfig(policy="adaptive")).policy.name == "q:0.99|q-continue+stable:1"


def test_puzzle_identifiers_outside_the_table_are_refused():
    model = tiny_trm()  # one identifier: the blank one
    with pytest.raises(ConfigError, match="outside"):
        list(Engine(model).run([Request(random_inputs(1)[0], puzzle_identifier=3)]))


def test_requests_submitted_before_run_are_answered_too():
    requests = [scripted(1), scripted(1)]
    engine = Engine(Scripted(), InferenceConfig(policy="q"))
    engine.submit(scripted(1))
    assert sorted(a.index for a in engine.run(iter(requests))) == [0, 1, 2]


@pytest.mark.parametrize(
    "kw",
    [{"samples": 0}, {"max_steps": 0}, {"batch_size": 0}, {"noise": -0.1}, {"noise": float("nan")},
     {"noise": float("inf")}, {"samples": 2}, {"select": "best"}, {"noise_mode": "always"}, {"samples": True}],
)  # fmt: skip
def test_bad_inference_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        InferenceConfig(**kw)


def test_checker_policies_need_a_checker():
    with pytest.raises(ConfigError, match="checked"):
        Engine(Scripted(), InferenceConfig(policy="q|valid"))
    with pytest.raises(ConfigError, match="checked"):
        Engine(Scripted(), InferenceConfig(select="valid"))


# -- sampling and selection --------------------------------------------------------------------------------------
def test_sampling_is_reproducible_under_a_seed_and_trajectory_one_is_clean():
    model = tiny_trm(N_sup=3)
    inputs = random_inputs(4, seed=1)

    def run(seed: int, mode: str = "init"):
        cfg = InferenceConfig(samples=4, noise=1.0, noise_mode=mode, seed=seed, keep_logits=True)
        return sorted(Engine(model, cfg).run(Request(x) for x in inputs), key=lambda a: a.index)

    a, b, c = run(0), run(0), run(1)
    clean = think(model, torch.from_numpy(inputs), torch.zeros(4, dtype=torch.int32))
    for i in range(4):
        assert len(a[i].trajectories) == 4 and a[i].compute == 12
        torch.testing.assert_close(a[i].trajectories[0].logits, clean.logits[i], atol=1e-5, rtol=1e-5)
        for t1, t2 in zip(a[i].trajectories, b[i].trajectories, strict=True):
            torch.testing.assert_close(t1.logits, t2.logits)
    noisy = [t.logits for ans in a for t in ans.trajectories[1:]]
    other = [t.logits for ans in c for t in ans.trajectories[1:]]
    assert not any(torch.allclose(x, y) for x, y in zip(noisy, other, strict=True))
    step = run(0, "step")
    assert not torch.allclose(step[0].trajectories[1].logits, a[0].trajectories[1].logits)


def _answer_with(trajs, select, checker=None):
    from trm.inference.engine import Trajectory, _Pending

    engine = Engine(Scripted(), InferenceConfig(samples=len(trajs), noise=0.1, select=select), checker)
    pending = _Pending(Request(np.zeros(4, dtype=np.int32)))
    pending.done = [Trajectory(k, np.full(4, p), 1, q, 0.0) for k, (p, q) in enumerate(trajs)]
    return engine._choose(0, pending)


def test_selection_by_q_vote_and_checker():
    trajs = [(5, 0.0), (7, 2.0), (5, 1.0), (9, 1.5), (5, -1.0)]  # (answer token, q_halt logit)
    assert int(_answer_with(trajs, "q").preds[0]) == 7  # highest q
    vote = _answer_with(trajs, "vote")
    assert int(vote.preds[0]) == 5 and vote.chosen.sample == 2  # 3 votes; its best-q member
    tie = _answer_with([(5, 0.0), (7, 2.0)], "vote")
    assert int(tie.preds[0]) == 7  # one vote each: the higher mean confidence
    checker = lambda preds, inputs: preds[:, 0] == 9  # noqa: E731
    checked = _answer_with(trajs, "valid", checker)
    assert int(checked.preds[0]) == 9 and checked.valid
    none_ok = _answer_with([(5, 0.0), (7, 2.0)], "valid", checker)
    assert int(none_ok.preds[0]) == 7 and not none_ok.valid  # nothing valid: fall back to the Q head


# -- the Python API ----------------------------------------------------------------------------------------------
def test_solver_on_a_saved_checkpoint(tmp_path):
    from trm.data import write_json

    model = tiny_trm(seq_len=16, vocab_size=6, N_sup=2)
    model.save_pretrained(tmp_path)
    write_json(tmp_path / "task.json", {"task": "sudoku", "size": 4})
    solver = Solver.load(tmp_path, device="cpu", policy="adaptive", max_steps=5)
    (s,) = solver.solve("1.3...2...1..4..")
    assert s.answer.shape == (16,) and 1 <= s.steps <= 5 and 0 <= s.confidence <= 1
    assert s.valid == SudokuTask(4).is_solution(s.answer, s.puzzle)
    with pytest.raises(ConfigError):
        Solver.load(tmp_path, device="cpu", samples=0)


@pytest.mark.parametrize("overrides", [{"latent": "single"}, {"arch": "transformer", "num_layers": 2}])
def test_step_noise_reaches_models_without_a_latent_z(overrides):
    """A single-latent TRM and the transformer carry no z ([B, 0, D]): step noise goes on y, so the sampled
    trajectories differ from the clean one."""
    model = tiny_trm(**overrides, N_sup=3)
    cfg = InferenceConfig(samples=2, noise=1.0, noise_mode="step", seed=0, keep_logits=True)
    (answer,) = Engine(model, cfg).run([Request(random_inputs(1, seed=2)[0])])
    clean, noisy = (t.logits for t in sorted(answer.trajectories, key=lambda t: t.sample))
    assert not torch.allclose(clean, noisy)


def test_tokens_outside_the_vocabulary_or_a_wrong_length_are_refused_before_they_reach_the_model():
    """On CUDA such a token would be a device-side assert that ends every other puzzle in the pool."""
    model = tiny_trm()
    good = random_inputs(1)[0]
    engine = Engine(model)
    for bad, match in (
        (np.where(np.arange(good.size) == 0, model.config.vocab_size, good), "lie in 0"),
        (np.where(np.arange(good.size) == 0, -1, good), "lie in 0"),
        (good[:-1], r"shape \(15,\); the model reads 16 tokens"),
        (good.reshape(4, 4), r"shape \(4, 4\); the model reads 16 tokens in a row"),
    ):
        with pytest.raises(ConfigError, match=match):
            engine.submit(Request(bad))
    assert engine.submitted == 0 and engine.idle  # nothing half-queued
    assert [a.index for a in engine.run([Request(good)])] == [0]
