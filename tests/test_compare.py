"""`trm compare` on tiny 4x4 Sudoku: the table's numbers against the runs and hand computations, reuse and
resume of finished runs, bad input before anything trains; the t critical values against printed tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from trm import compare as cmp
from trm import compare_report as rep
from trm.cli import main
from trm.config import build_train_config
from trm.errors import ConfigError, TRMError
from trm.models import load_checkpoint


# -- statistics --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("df", "t"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (30, 2.042)]
)
def test_t_critical95_is_the_printed_table(df, t):
    assert rep.t_critical95(df) == t


@pytest.mark.parametrize(("df", "t"), [(31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799), (10**6, 1.9600)])
def test_t_critical95_beyond_the_table(df, t):
    assert rep.t_critical95(df) == pytest.approx(t, abs=1e-4)  # exact values to 4 places
    assert rep.t_critical95(df) < rep.t_critical95(df - 1)
    with pytest.raises(ValueError):
        rep.t_critical95(0)


def test_mean_ci_by_hand():
    mean, half = rep.mean_ci([0.2, 0.4])
    assert mean == pytest.approx(0.3)
    assert half == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2), abs=1e-4)  # sd 0.1414
    mean, half = rep.mean_ci([0.5, 0.6, 0.7])
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3), abs=1e-4)
    assert rep.mean_ci([0.42]) == (0.42, None)


# -- arguments ---------------------------------------------------------------------------------------------
def test_parse_runs_and_budget():
    specs = cmp.parse_runs([["a", "sudoku4-tiny"], ["b.2", "sudoku4-tiny", "mixer=attention"]])
    assert specs[1] == cmp.RunSpec("b.2", "sudoku4-tiny", ("mixer=attention",))
    for bad in ([["a"]], [["../x", "p"]], [[".hidden", "p"]], [["a", "p"], ["A", "p"]], []):
        with pytest.raises(ConfigError):
            cmp.parse_runs(bad)
    budget = cmp.budget_overrides(None, "10m", 3)
    cfg = build_train_config("sudoku4-tiny", ["max_steps=50", *budget])  # the line's own budget is cleared
    assert (cfg.max_steps, cfg.max_time, cfg.eval_interval) == (None, 600.0, 3)


# -- end to end --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data4(sudoku4_data) -> Path:
    return sudoku4_data("--generate", "60", "--test-fraction", "0.3", "--seed", "1")


def argv_for(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--run", "a", "sudoku4-tiny",
        "--run", "b", "sudoku4-tiny", "mixer=attention",
        "--set", f"data={data}", "global_batch_size=16",
        "--seeds", "2",
        "--max-steps", "4",
        "--out", str(out),
        "--no-progress",
        *extra,
    ]  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def compared(data4, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "out"
    assert main(argv_for(data4, out)) == 0
    return out


@pytest.mark.slow
def test_compare_writes_table_csv_plot(compared, capsys):
    for name in ("compare.md", "compare.csv", "compare_runs.csv", "compare.png"):
        assert (compared / name).stat().st_size > 0
    rows = read_csv(compared / "compare.csv")
    assert [r["label"] for r in rows] == ["a", "b"]
    assert [r["overrides"] for r in rows] == ["", "mixer=attention"]
    assert all(r["seeds"] == "2" for r in rows)
    runs = read_csv(compared / "compare_runs.csv")
    assert sorted((r["label"], r["seed"]) for r in runs) == [("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")]
    md = (compared / "compare.md").read_text()
    assert "| a | sudoku4-tiny |" in md and "| b | sudoku4-tiny mixer=attention |" in md
    assert "max_steps=4 for every run" in md and "seeds: 0, 1" in md and "steps × global_batch_size" in md


@pytest.mark.slow
def test_compare_numbers_are_the_runs(compared):
    rows = {r["label"]: r for r in read_csv(compared / "compare.csv")}
    for label in ("a", "b"):
        results = [json.loads((compared / label / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
        model, _ = load_checkpoint(compared / label / "seed0")
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        table = model.puzzle_emb.weight.numel()
        c = model.config
        row = rows[label]
        assert int(row["params"]) == params == results[0]["params"]
        assert int(row["params_with_puzzle_emb"]) == params + table
        assert int(row["blocks_per_step"]) == c.T * (c.n + 1) * c.num_layers == model.blocks_per_step
        for r in results:
            assert r["steps"] == 4 and r["train_blocks"] == 4 * 16 * c.T * (c.n + 1) * c.num_layers
            metrics = [json.loads(x) for x in (compared / label / f"seed{r['seed']}" / "metrics.jsonl").open()]
            assert r["exact_accuracy"] == [m for m in metrics if m["split"] == "eval"][-1]["exact_accuracy"]
        values = [r["exact_accuracy"] for r in results]
        mean = sum(values) / 2
        half = 12.706 * abs(values[0] - values[1]) / math.sqrt(2) / math.sqrt(2)
        assert float(row["exact_accuracy_mean"]) == pytest.approx(mean)
        assert float(row["exact_accuracy_ci95"]) == pytest.approx(half, abs=1e-4)
    assert rows["a"]["params"] != rows["b"]["params"]  # MLP mixer vs attention


@pytest.mark.slow
def test_rerun_reuses_and_resumes(compared, data4, capsys):
    a0, b1 = compared / "a" / "seed0", compared / "b" / "seed1"
    logs = {p: (p / "metrics.jsonl").read_bytes() for p in compared.glob("*/seed*")}
    # a finished run whose result.json says otherwise: the table follows result.json, nothing retrains
    result = json.loads((a0 / "result.json").read_text())
    (a0 / "result.json").write_text(json.dumps(result | {"exact_accuracy": 0.5}))
    (b1 / "result.json").unlink()  # as if interrupted after training: resumed (nothing left to do), recorded
    capsys.readouterr()
    assert main(argv_for(data4, compared)) == 0
    out = capsys.readouterr().out
    assert "[1/4] a seed 0: reusing the finished run" in out and "[4/4] b seed 1: resuming" in out
    assert {p: (p / "metrics.jsonl").read_bytes() for p in logs} == logs
    assert json.loads((b1 / "result.json").read_text())["steps"] == 4
    a1 = json.loads((compared / "a" / "seed1" / "result.json").read_text())["exact_accuracy"]
    row = read_csv(compared / "compare.csv")[0]
    assert float(row["exact_accuracy_mean"]) == pytest.approx((0.5 + a1) / 2)
    assert float(row["exact_accuracy_ci95"]) == pytest.approx(12.706 * abs(0.5 - a1) / 2, abs=1e-4)
    assert f"| {50 * (0.5 + a1):.1f} ± {100 * rep.mean_ci([0.5, a1])[1]:.1f} |" in out  # the printed table
    (a0 / "result.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_missing_matplotlib_is_one_line_after_the_table(compared, data4, capsys, monkeypatch):
    import trm.render

    def no_matplotlib():
        raise TRMError("pictures need matplotlib: pip install 'trm[viz]'")

    monkeypatch.setattr(trm.render, "pyplot", no_matplotlib)
    (compared / "compare.md").unlink()
    assert main(argv_for(data4, compared)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trm: error: compare.png not written") and "matplotlib" in err[0]
    assert (compared / "compare.md").is_file()


@pytest.mark.slow
def test_changed_config_in_an_existing_run_is_refused(compared, data4, capsys):
    argv = argv_for(data4, compared)
    argv[argv.index("mixer=attention")] = "lr=0.5"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with another config" in err[0] and "model.mixer" in err[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("sudoku4-tiny", "no-such-preset"), "unknown preset"),
        (("mixer=attention", "hidden=3"), "unknown config field"),
        (("mixer=attention", "lr=abc"), "bad config value for lr"),
        (("b", "a"), "used twice"),
        (("b", "../b"), "not a safe name"),
        (("2", "0"), "--seeds must be at least 1"),
    ],
)
def test_bad_input_trains_nothing(change, message, tmp_path, capsys):
    data = tmp_path / "no-data-needed"  # every check before the data check fails first
    argv = argv_for(data, tmp_path / "out")
    argv[argv.index(change[0])] = change[1]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trm: error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_data_or_test_split_trains_nothing(data4, tmp_path, capsys):
    assert main(argv_for(tmp_path / "nowhere", tmp_path / "out")) == 2
    assert "nowhere" in capsys.readouterr().err
    argv = argv_for(data4, tmp_path / "out")
    argv[argv.index("--set") + 1 : argv.index("--set") + 1] = [f"eval_data={tmp_path}"]  # no test split there
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no test split" in err[0]
    assert not (tmp_path / "out").exists()
