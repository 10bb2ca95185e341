"""The report of `trm compare`: the per-seed results of `trm.compare` aggregated (mean ± a 95% Student-t
interval over seeds), written as compare.md, compare.csv and compare_runs.csv, and drawn as compare.png.
It imports `trm.compare` (the runs' types and names), never the other way round."""

from __future__ import annotations

import csv
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm.compare import METRIC, Planned, RunSpec, write_text
from trm.config import TrainConfig
from trm.errors import TRMError

# -- statistics -----------------------------------------------------------------------------------------------
# Two-sided 95% Student-t critical values t(0.975, df) for df = 1..30, as printed in the standard tables: only
# this one level is reported, so a table is all the distribution theory the project needs.
T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z975 = 1.959964  # the standard normal's 0.975 quantile, the limit as df grows


def t_critical95(df: int) -> float:
    """t(0.975, df): the table up to df 30, beyond it the Cornish-Fisher expansion about the normal quantile
    (within 1e-4 of the exact value there: 2.0394 at df 31, 2.0003 at df 60, tending to 1.960)."""
    if df < 1:
        raise ValueError(f"t_critical95 needs df >= 1 (got {df})")
    if df <= len(T95):
        return T95[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t confidence interval over seeds (None for a single seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_critical95(n - 1) * sd / math.sqrt(n)


# -- the table and the plot -----------------------------------------------------------------------------------
def summarize(specs: Sequence[RunSpec], results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per line of the comparison: its per-seed results aggregated."""
    rows = []
    for spec in specs:
        runs = sorted((r for r in results if r["label"] == spec.label), key=lambda r: r["seed"])
        values = [float(r[METRIC]) for r in runs]
        mean, ci = mean_ci(values)
        rows.append(
            {
                "label": spec.label,
                "preset": spec.preset,
                "overrides": " ".join(spec.overrides),
                "seeds": len(runs),
                f"{METRIC}_mean": mean,
                f"{METRIC}_ci95": ci,
                f"{METRIC}_per_seed": values,
                "steps_mean": sum(r["steps"] for r in runs) / len(runs),
                "steps_min": min(r["steps"] for r in runs),
                "steps_max": max(r["steps"] for r in runs),
                "wall_s_mean": sum(r["wall_s"] for r in runs) / len(runs),
                "train_blocks_mean": sum(r["train_blocks"] for r in runs) / len(runs),
                "params": runs[0]["params"],
                "params_with_puzzle_emb": runs[0]["params_with_puzzle_emb"],
                "blocks_per_step": runs[0]["blocks_per_step"],
                "global_batch_size": runs[0]["global_batch_size"],
            }
        )
    return rows


def describe_budget(planned: Sequence[Planned]) -> str:
    """The budget as the configs state it (the same for every run unless a line overrides it)."""

    def one(c: TrainConfig) -> str:
        parts = [f"max_steps={c.max_steps}"] if c.max_steps else []
        if c.max_time:
            parts.append(f"max_time={c.max_time:g}s")
        return " and ".join(parts) or f"epochs={c.epochs}"

    kinds = {one(p.cfg) for p in planned}
    return kinds.pop() + " for every run" if len(kinds) == 1 else "differs: " + "; ".join(sorted(kinds))


def machine_line(device_name: str = "auto") -> str:
    """Platform, CPU model and count, torch and the device the runs train on (the wall times depend on it)."""
    import torch

    from trm.models.base import pick_device

    device = pick_device(device_name)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {name}"
    )


def header_lines(planned: Sequence[Planned], common: Sequence[str], seeds: int) -> list[str]:
    """What the numbers are conditional on: budget, seeds, data, date and machine."""
    data = sorted({f"{p.cfg.data}" + (f" (held out: {p.cfg.eval_data})" if p.cfg.eval_data else "") for p in planned})
    return [
        f"budget: {describe_budget(planned)}; seeds: {', '.join(str(s) for s in range(seeds))}; "
        f"data: {'; '.join(data)}" + (f"; common overrides: {' '.join(common)}" if common else ""),
        f"date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {machine_line(planned[0].cfg.device)}",
    ]


CAPTION = (
    "params: trainable parameters, the puzzle-embedding table (a buffer, trained by sparse sign-SGD) excluded as "
    "in the official count; incl. puzzle table: plus its entries. exact: held-out exact accuracy (whole answer "
    "right) at the final evaluation (EMA weights), mean ± 95% confidence interval over seeds (Student t, "
    "seeds - 1 degrees of freedom; none with one seed). steps: optimizer steps. wall: seconds of the run up to "
    "its final evaluation (earlier evaluations and checkpoints included), mean over seeds. training block "
    "applications: steps × global_batch_size × blocks_per_step, the forward applications of the network's "
    "blocks during training, where blocks_per_step is the block applications in one training supervision step "
    "of one puzzle (TRM: T·(n+1)·num_layers, the no-grad recursions included; with Q-learning halting, HRM, "
    "twice its step: the trainer runs a second no-grad step for the bootstrapped target; a depth curriculum is "
    "counted at full depth; evaluation not counted), mean over seeds."
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(rows: Sequence[dict[str, Any]], header: Sequence[str]) -> str:
    head = (
        "| label | preset + overrides | params | params incl. puzzle table | exact accuracy (%) | per seed (%) | "
        "steps | wall (s) | training block applications |"
    )
    lines = ["# trm compare", "", *(f"{h}  " for h in header), "", head, "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        mean, ci = r[f"{METRIC}_mean"], r[f"{METRIC}_ci95"]
        exact = _pct(mean) + ("" if ci is None else f" ± {_pct(ci)}")
        steps = f"{r['steps_mean']:,.0f}"
        if r["steps_min"] != r["steps_max"]:
            steps += f" ({r['steps_min']:,}–{r['steps_max']:,})"
        recipe = " ".join(filter(None, (r["preset"], r["overrides"])))
        lines.append(
            f"| {_cell(r['label'])} | {_cell(recipe)} | {r['params']:,} | {r['params_with_puzzle_emb']:,} | {exact} | "
            f"{', '.join(_pct(v) for v in r[f'{METRIC}_per_seed'])} | {steps} | {r['wall_s_mean']:.1f} | "
            f"{r['train_blocks_mean']:.3g} |"
        )
    return "\n".join([*lines, "", CAPTION, ""])


SUMMARY_COLUMNS = (
    "label", "preset", "overrides", "seeds", f"{METRIC}_mean", f"{METRIC}_ci95", f"{METRIC}_per_seed", "steps_mean",
    "wall_s_mean", "train_blocks_mean", "params", "params_with_puzzle_emb", "blocks_per_step", "global_batch_size",
)  # fmt: skip
RUN_COLUMNS = (
    "label", "seed", "preset", "overrides", METRIC, "steps", "wall_s", "train_blocks", "params",
    "params_with_puzzle_emb", "blocks_per_step", "global_batch_size", "run_dir",
)  # fmt: skip


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v) if not v or not isinstance(v[0], str) else " ".join(v)
    return v


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_value(r.get(c)) for c in columns])


def plot(specs: Sequence[RunSpec], results: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Held-out exact accuracy against training steps and against training block applications (log x): the
    mean over seeds per line (the i-th evaluation of every seed), each seed faint behind it."""
    from trm.render import pyplot, save_figure

    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, spec in enumerate(specs):
        colour = colours[i % len(colours)]
        runs = sorted((r for r in results if r["label"] == spec.label), key=lambda r: r["seed"])
        n = min(len(r["curve"]) for r in runs)
        for ax, per_step in zip(axes, (1, None), strict=True):
            scale = [per_step or r["global_batch_size"] * r["blocks_per_step"] for r in runs]
            for r, k in zip(runs, scale, strict=True):
                xs = [c["step"] * k for c in r["curve"]]
                ax.plot(xs, [100 * c[METRIC] for c in r["curve"]], color=colour, alpha=0.25, lw=1, marker=".", ms=3)
            mean_x = [
                sum(r["curve"][j]["step"] * k for r, k in zip(runs, scale, strict=True)) / len(runs) for j in range(n)
            ]
            mean_y = [100 * sum(r["curve"][j][METRIC] for r in runs) / len(runs) for j in range(n)]
            ax.plot(mean_x, mean_y, color=colour, lw=2, marker="o", ms=4, label=f"{spec.label} ({len(runs)} seeds)")
    axes[0].set_xlabel("training steps")
    axes[1].set_xlabel("training block applications (steps × batch × blocks per step)")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(NullFormatter())  # crowded labels between the decades
    axes[0].set_ylabel("held-out exact accuracy (%)")
    top = max((100 * c[METRIC] for r in results for c in r["curve"]), default=0.0)
    axes[0].set_ylim(0, min(100.0, max(5.0, 1.08 * top)))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=130)


# -- the whole report -----------------------------------------------------------------------------------------
@dataclass
class Comparison:
    specs: list[RunSpec]
    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    table: str
    out: Path


def write_report(
    specs: Sequence[RunSpec],
    planned: Sequence[Planned],
    results: Sequence[dict[str, Any]],
    common: Sequence[str],
    seeds: int,
    out: Path,
) -> Comparison:
    """compare.md, compare.csv and compare_runs.csv into `out` from the results of `trm.compare.run_all` (the
    plot is `plot_comparison`, apart: it needs matplotlib)."""
    rows = summarize(specs, results)
    table = markdown(rows, header_lines(planned, common, seeds))
    write_text(out / "compare.md", table)
    write_csv(out / "compare.csv", SUMMARY_COLUMNS, rows)
    write_csv(out / "compare_runs.csv", RUN_COLUMNS, results)
    return Comparison(list(specs), list(results), rows, table, out)


def plot_comparison(c: Comparison) -> Path:
    """compare.png; a missing matplotlib is one TRMError line (the table is written by then)."""
    try:
        return plot(c.specs, c.results, c.out / "compare.png", title=f"trm compare: {c.out}")
    except TRMError as err:
        raise TRMError(f"compare.png not written ({err}); compare.md and compare.csv are in {c.out}") from None
