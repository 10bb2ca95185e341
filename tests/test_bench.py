"""`trm bench`: the FLOP count behind the matmul-ceiling figures, the records and the table."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trm.bench import Workload, compare, markdown, peak_flops, step_flops, summary
from trm.cli import main
from trm.config import build_train_config
from trm.models import build_model
from trm.supervision import DeepSupervision, think

ATT = ["mixer=attention", "pos_encoding=rope"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["mixer=mlp"],
        ATT,
        ["gradient=one_step", "n=3"],
        ["arch=hrm", "num_layers=2", "num_h_layers=1", "q_continue=true", *ATT],
        ["arch=transformer", "num_layers=3", "num_heads=3", *ATT],  # head_dim 10: attention narrower than D
    ],
    ids=["trm-mlp", "trm-att", "one-step", "hrm", "transformer"],
)
def test_flop_count_matches_torchs_own_counter(overrides, monkeypatch):
    """step_flops counts by hand what torch's FlopCounterMode counts on the real forward (and backward)."""

    def sdpa_as_matmuls(q, k, v):  # the CPU's fused attention kernel escapes the counter: spell it out
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa_as_matmuls)
    cfg = build_train_config("sudoku4-tiny", ["model.dtype=float32", *overrides]).model
    model = build_model(cfg)
    batch = {
        "inputs": torch.randint(1, 11, (3, cfg.seq_len)),
        "labels": torch.randint(2, 11, (3, cfg.seq_len)),
        "puzzle_identifiers": torch.zeros(3, dtype=torch.int32),
    }
    with FlopCounterMode(display=False) as counter:
        think(model.eval(), batch["inputs"], batch["puzzle_identifiers"])
    counted_infer = counter.get_total_flops()
    sup = DeepSupervision(model.train())
    carry = sup.initial_carry(batch)
    with FlopCounterMode(display=False) as counter:
        _, losses, _ = sup(carry, batch)
        losses.total.backward()
    counted_train = counter.get_total_flops()
    q_head = 2 * 3 * cfg.hidden_size * 2  # the halting head's tiny matmul is left out of the hand count
    q_heads_train = 3 + cfg.q_continue  # forward + backward, and the Q-target forward
    assert step_flops(cfg, 3, "infer") == pytest.approx(counted_infer - cfg.N_sup * q_head, rel=1e-9)
    assert step_flops(cfg, 3, "train") == pytest.approx(counted_train - q_heads_train * q_head, rel=1e-9)


def test_bench_writes_records_and_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--preset", "sudoku4-tiny", "--batch", "4", "--repeats", "1", "--dtype", "float32", "bfloat16"]
    argv += ["--infer-steps", "2", "--device", "cpu", "--json", str(out), "--md", str(tmp_path / "b.md")]
    assert main(argv) == 0
    records = json.loads(out.read_text())
    assert {(r["dtype"], r["mode"]) for r in records} == {
        (d, m) for d in ("float32", "bfloat16") for m in ("train", "infer-fixed", "infer-adaptive")
    }
    for r in records:
        assert r["impl"] == "trm" and r["preset"] == "sudoku4-tiny" and r["batch"] == 4 and r["device"] == "cpu"
        assert r["step_s"] > 0 and r["puzzles_per_s"] == pytest.approx(4 / r["step_s"])
        assert 0 < r["mfu"] == pytest.approx(r["flops_per_s"] / r["ceiling_flops_per_s"])
    assert "| sudoku4-tiny | 4 | bfloat16 |" in (tmp_path / "b.md").read_text()


def test_compare_turns_the_order_around_every_round_and_takes_the_median(monkeypatch):
    import trm.bench as bench

    calls, clock = [], [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def step(impl: str, seconds: list[float]):  # the seconds of its warm-up, then of each timed call
        left = iter(seconds)

        def fn():
            calls.append(impl)
            clock[0] += next(left)

        return fn

    trm_w = Workload("trm", {"train": step("trm", [9.0, 1.0, 1.5, 0.5])})
    official_w = Workload("official", {"train": step("official", [9.0, 2.0, 5.0, 2.5])})
    res = compare([trm_w, official_w], repeats=3, warmup=1)
    # warm-up, then rounds trm-official, official-trm, trm-official
    assert calls == ["trm", "official", "trm", "official", "official", "trm", "trm", "official"]
    # the warm-up is not timed; the median of the timed calls
    assert res == {"trm": {"train": 1.0}, "official": {"train": 2.5}}


def test_table_and_summary_ratios_are_official_time_over_trm_time():
    def rec(impl, dtype, mode, s):
        return dict(preset="p", impl=impl, mode=mode, batch=8, dtype=dtype, step_s=s, puzzles_per_s=8 / s, mfu=0.5)

    records = [rec("trm", "float32", "train", 2.0), rec("official", "float32", "train", 3.0)]
    records += [rec("trm", "bfloat16", "train", 1.0), rec("official", "bfloat16", "train", 1.0)]
    table = markdown(records)
    assert "| p | 8 | float32 | 2.000 | 3.000 | 1.50x | 1.00x |" in table
    assert "| p | 8 | bfloat16 | 1.000 | 1.000 | 1.00x | 2.00x |" in table
    ratios = summary(records)
    assert ratios["trm_vs_official"] == pytest.approx(1.5**0.5) and ratios["fast_path_vs_float32"] == 2.0
    # float32 alone, no reference: neither ratio exists, and none is made up
    assert summary(records[:1]) == {}
    assert summary(records[:2]) == {"trm_vs_official": 1.5}


def test_mfu_is_against_the_data_sheet_peak_of_a_known_gpu(monkeypatch):
    names = iter(["NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA H200 NVL", "Tesla T4"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: next(names))
    assert peak_flops("bfloat16", "cuda") == 756e12  # the PCIe card, not the SXM one
    assert peak_flops("float32", "cuda") == 67e12
    assert peak_flops("bfloat16", "cuda:0") == 989e12
    assert peak_flops("bfloat16", "cuda") == 835e12  # the NVL card, not the SXM one
    assert peak_flops("bfloat16", "cuda") is None  # not in the table
    assert peak_flops("bfloat16", "cpu") is None

    def rec(impl, s):
        flops = 1e12
        return dict(preset="p", impl=impl, mode="train", batch=8, dtype="bfloat16", step_s=s, puzzles_per_s=8 / s,
                    mfu=0.5, mfu_peak=flops / s / 4e12)  # fmt: skip

    assert "| 50% | 50% | 25% | 6% |" in markdown([rec("trm", 1.0), rec("official", 4.0)])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--reference", "/nonexistent"], "not a checkout of the official code"),
        (["--dtype", "float8"], "unknown dtype"),
        (["hidden=3"], "unknown config field"),
    ],
)
def test_bad_bench_options_are_one_line(extra, message, capsys):
    assert main(["bench", "sudoku4-tiny", *extra, "--batch", "2", "--repeats", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_reference_refuses_what_the_official_model_cannot_run(capsys):
    """The official side is plain TRM: an HRM preset or a TRM ablation would not be like for like."""
    for argv in (["hrm-sudoku"], ["sudoku4-tiny", "latent=single"], ["sudoku4-tiny", "conv_kernel=2"]):
        assert main(["bench", *argv, "--reference", "/nonexistent", "--batch", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "official" in err[0], err
