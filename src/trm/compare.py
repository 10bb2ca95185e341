"""`trm compare`: several presets (each with its own overrides) trained on the same data with the same budget
and seeds, one run at a time, then one table (Markdown and CSV) and one plot of held-out exact accuracy
against training steps and against training compute.

Each run is an ordinary run directory, OUT/<label>/seed<S>/, plus a `result.json` written when it is done. A
rerun reuses every run that has a result and resumes every run that has a checkpoint, so an interrupted
comparison continues where it stopped; a run directory whose config differs from the one asked for is an
error, never silently mixed in.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm.config import TrainConfig, build_train_config
from trm.errors import CheckpointError, ConfigError, DataError, TRMError

RESULT_NAME = "result.json"
OUTPUT_NAMES = ("compare.md", "compare.csv", "compare_runs.csv", "compare.png")
RESULT_KEYS = {
    "label", "seed", "exact_accuracy", "steps", "wall_s", "params", "params_with_puzzle_emb", "blocks_per_step",
    "global_batch_size", "train_blocks", "curve",
}  # fmt: skip
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
METRIC = "exact_accuracy"


@dataclass(frozen=True)
class RunSpec:
    """One line of the comparison: a label, a preset and that line's own overrides."""

    label: str
    preset: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Planned:
    """One training run of the comparison: a line at a seed, its full config and its directory."""

    spec: RunSpec
    seed: int
    cfg: TrainConfig
    run_dir: Path


def parse_runs(groups: Sequence[Sequence[str]]) -> list[RunSpec]:
    """`--run LABEL PRESET [key=value ...]` groups; labels name directories, so they must be safe and unique
    (case-insensitively, for case-insensitive file systems)."""
    specs: list[RunSpec] = []
    seen: dict[str, str] = {}
    for group in groups:
        if len(group) < 2:
            raise ConfigError(
                f"--run {' '.join(group)}: give a label and a preset (--run LABEL PRESET [key=value ...])"
            )
        label, preset, *overrides = group
        if not LABEL_RE.fullmatch(label):
            raise ConfigError(
                f"--run label {label!r} is not a safe name (letters, digits, '_', '.', '-'; at most 64; "
                "starting with a letter or digit)"
            )
        if label.lower() in OUTPUT_NAMES:
            raise ConfigError(f"--run label {label!r} is the name of one of the comparison's own files")
        if label.lower() in seen:
            other = seen[label.lower()]
            raise ConfigError(f"--run label {label!r} is used twice" + (f" (as {other!r})" if other != label else ""))
        seen[label.lower()] = label
        specs.append(RunSpec(label, preset, tuple(overrides)))
    if not specs:
        raise ConfigError("give at least one --run LABEL PRESET [key=value ...]")
    return specs


def budget_overrides(max_steps: int | None, max_time: str | None, eval_interval: int | None) -> list[str]:
    """The flags as overrides. A budget given in one unit clears the other one a preset may set, so every run
    gets exactly the same budget."""
    out = []
    if max_steps is not None:
        out.append(f"max_steps={max_steps}")
        if max_time is None:
            out.append("max_time=null")
    if max_time is not None:
        out.append(f"max_time={max_time}")
        if max_steps is None:
            out.append("max_steps=null")
    if eval_interval is not None:
        out.append(f"eval_interval={eval_interval}")
    return out


def plan(
    specs: Sequence[RunSpec], common: Sequence[str], seeds: int, budget: Sequence[str], out: Path
) -> list[Planned]:
    """Every run's config, built and checked before anything trains (seed-major order: after an interruption
    the finished seeds form a complete comparison). Overrides apply in order: the line's own, the common
    ones, then the seed and the budget."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds})")
    cfgs: dict[tuple[str, int], TrainConfig] = {}
    for spec in specs:
        for seed in range(seeds):
            overrides = [*spec.overrides, *common, f"seed={seed}", *budget]
            try:
                cfgs[spec.label, seed] = build_train_config(spec.preset, overrides)
            except ConfigError as err:
                raise ConfigError(f"--run {spec.label}: {err}") from None
    planned = [
        Planned(s, seed, cfgs[s.label, seed], out / s.label / f"seed{seed}") for seed in range(seeds) for s in specs
    ]
    _check_data(planned)
    for p in planned:
        _check_run_dir(p)
    return planned


def _check_data(planned: Sequence[Planned]) -> None:
    """Every run needs training data and a held-out split: the comparison is scored on it."""
    from trm.data import load_split

    checked: set[tuple[str, str]] = set()
    for p in planned:
        cfg = p.cfg
        if cfg.data is None:
            raise ConfigError(f"--run {p.spec.label}: no training data: pass data=DIR (--set data=DIR for every run)")
        eval_root = cfg.eval_data or cfg.data
        if (cfg.data, eval_root) in checked:
            continue
        load_split(Path(cfg.data), "train")
        if not (Path(eval_root) / "test").is_dir():
            raise DataError(
                f"{eval_root}: no test split; the comparison scores held-out exact accuracy (pass eval_data=DIR)"
            )
        load_split(Path(eval_root), "test")
        checked.add((cfg.data, eval_root))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _check_run_dir(p: Planned) -> None:
    """A run directory left by an earlier compare must hold this very config (else reusing it would mix two
    experiments in one table)."""
    from trm.train import CONFIG_NAME

    path = p.run_dir / CONFIG_NAME
    if not path.is_file():
        return
    try:
        saved = _flat(TrainConfig.model_validate_json(path.read_text()).model_dump())
    except Exception:  # pydantic and JSON errors vary; the file is what matters
        raise CheckpointError(
            f"{path}: not a readable trm run config; delete {p.run_dir} or use another --out"
        ) from None
    wanted = _flat(p.cfg.model_dump())
    diff = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} now" for k in diff[:3])
        more = f"; {len(diff) - 3} more" if len(diff) > 3 else ""
        raise ConfigError(
            f"{p.run_dir} holds a run with another config ({shown}{more}); use another --out or delete that directory"
        )


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's result, or None when there is none (or it is unreadable: it is recomputed)."""
    try:
        result = json.loads((run_dir / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.keys() >= RESULT_KEYS else None


def status(p: Planned) -> str:
    """What a run directory calls for: reuse (it has a result), resume (it has a checkpoint) or train."""
    from trm.train import STATE_NAME

    if read_result(p.run_dir) is not None:
        return "reuse"
    return "resume" if (p.run_dir / STATE_NAME).is_file() else "train"


def blocks_per_step(model: Any) -> int:
    """Network block applications in one supervision step of one puzzle: the model's own count; for a model
    without one, TRM's T * (n + 1) * num_layers from its config."""
    try:
        value = model.blocks_per_step
    except (AttributeError, NotImplementedError):
        value = None
    if value is None:
        c = model.config
        value = c.T * (c.n + 1) * c.num_layers
    return int(value)


def eval_curve(run_dir: Path) -> list[dict[str, float]]:
    """The run's held-out evaluations in step order (the last one is the final evaluation)."""
    path = run_dir / "metrics.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read the metrics log ({err})") from None
    by_step = {  # a step evaluated twice (stopped between its evaluation and its checkpoint, resumed): the last
        int(r["step"]): {
            "step": int(r["step"]),
            METRIC: float(r[METRIC]),
            "elapsed_s": float(r.get("elapsed_s", math.nan)),
        }
        for r in rows
        if r.get("split") == "eval" and METRIC in r
    }
    curve = [by_step[k] for k in sorted(by_step)]
    if not curve:
        raise CheckpointError(f"{path}: no held-out evaluation logged")
    return curve


def collect_result(p: Planned) -> dict[str, Any]:
    """The numbers of one finished run: final evaluation, budget used, sizes and compute."""
    from trm.models import load_checkpoint

    curve = eval_curve(p.run_dir)
    final = curve[-1]
    model, ckpt = load_checkpoint(p.run_dir, "cpu")
    params = model.num_parameters()
    table = model.puzzle_emb.weight.numel() if getattr(model, "puzzle_emb", None) is not None else 0
    per_step = blocks_per_step(model)
    batch = p.cfg.global_batch_size
    return {
        "label": p.spec.label,
        "seed": p.seed,
        "preset": p.spec.preset,
        "overrides": list(p.spec.overrides),
        "arch": model.config.arch,
        METRIC: final[METRIC],
        "steps": final["step"],
        "wall_s": final["elapsed_s"],
        "params": params,
        "params_with_puzzle_emb": params + table,
        "blocks_per_step": per_step,
        "global_batch_size": batch,
        "train_blocks": final["step"] * batch * per_step,
        "checkpoint": ckpt.name,
        "curve": curve,
    }


def _write_text(path: Path, text: str) -> None:
    """Atomically (a temporary file renamed into place): an interrupted write never looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_one(p: Planned, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and return its result, written to its `result.json`."""
    from trm.train import CONFIG_NAME, resume, train

    result = read_result(p.run_dir)
    if result is not None:
        return result
    if status(p) == "resume":
        resume(p.run_dir, progress=progress)
    else:
        for name in ("metrics.jsonl", CONFIG_NAME):  # left by a run stopped before its first checkpoint
            (p.run_dir / name).unlink(missing_ok=True)
        train(p.cfg, p.run_dir, progress=progress)
    result = collect_result(p)
    _write_text(p.run_dir / RESULT_NAME, json.dumps(result, indent=2) + "\n")
    return result


# -- statistics -----------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student t distribution function."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of `t_cdf` by bisection (no SciPy needed): t(0.975, 1) = 12.706, t(0.975, 2) = 4.303."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of its Student-t confidence interval over seeds (None for a single seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)


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
    "blocks during training, where blocks_per_step is the block applications in one supervision step of one "
    "puzzle (TRM: T·(n+1)·num_layers, the no-grad recursions included; a depth curriculum is counted at full "
    "depth; evaluation not counted), mean over seeds."
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


# -- the whole comparison -------------------------------------------------------------------------------------
@dataclass
class Comparison:
    specs: list[RunSpec]
    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    table: str
    out: Path


def run_comparison(
    specs: Sequence[RunSpec],
    planned: Sequence[Planned],
    common: Sequence[str],
    seeds: int,
    out: Path,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> Comparison:
    """Run (or reuse) every planned run one at a time, then write compare.md, compare.csv and
    compare_runs.csv into `out` (the plot is `plot`, apart: it needs matplotlib)."""
    results = []
    for k, p in enumerate(planned, 1):
        tag = f"[{k}/{len(planned)}] {p.spec.label} seed {p.seed}"
        what = status(p)
        doing = {"reuse": "reusing the finished run", "resume": "resuming", "train": "training"}[what]
        say(f"{tag}: {doing} in {p.run_dir}")
        result = run_one(p, progress=progress)
        if what != "reuse":
            say(f"{tag}: exact {_pct(result[METRIC])}% after {result['steps']:,} steps, {result['wall_s']:.1f} s")
        results.append(result | {"run_dir": str(p.run_dir)})
    rows = summarize(specs, results)
    table = markdown(rows, header_lines(planned, common, seeds))
    _write_text(out / "compare.md", table)
    write_csv(out / "compare.csv", SUMMARY_COLUMNS, rows)
    write_csv(out / "compare_runs.csv", RUN_COLUMNS, results)
    return Comparison(list(specs), results, rows, table, out)


def plot_comparison(c: Comparison) -> Path:
    """compare.png; a missing matplotlib is one TRMError line (the table is written by then)."""
    try:
        return plot(c.specs, c.results, c.out / "compare.png", title=f"trm compare: {c.out}")
    except TRMError as err:
        raise TRMError(f"compare.png not written ({err}); compare.md and compare.csv are in {c.out}") from None
