"""`trm compare`: several presets (each with its own overrides) trained on the same data with the same budget
and seeds, one run at a time; `trm.compare_report` turns their results into one table (Markdown and CSV) and
one plot of held-out exact accuracy against training steps and against training compute.

Each run is an ordinary run directory, OUT/<label>/seed<S>/, plus a `result.json` written when it is done. A
rerun reuses every run that has a result and resumes every run that has a checkpoint, so an interrupted
comparison continues where it stopped; a run directory whose config differs from the one asked for is an
error, never silently mixed in. This module plans, runs and collects; it imports nothing of the report.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm.config import TrainConfig, build_train_config
from trm.errors import CheckpointError, ConfigError, DataError
from trm.integrity import write_atomic

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
    per_step = model.train_blocks_per_step
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


def write_text(path: Path, text: str) -> None:
    """Atomically (a temporary file renamed into place): an interrupted write never looks finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), path.name)


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
    write_text(p.run_dir / RESULT_NAME, json.dumps(result, indent=2) + "\n")
    return result


def run_all(
    planned: Sequence[Planned], progress: bool = True, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run (or reuse) every planned run one at a time, saying what each one does; each result also carries its
    run directory (for compare_runs.csv)."""
    results = []
    for k, p in enumerate(planned, 1):
        tag = f"[{k}/{len(planned)}] {p.spec.label} seed {p.seed}"
        what = status(p)
        doing = {"reuse": "reusing the finished run", "resume": "resuming", "train": "training"}[what]
        say(f"{tag}: {doing} in {p.run_dir}")
        result = run_one(p, progress=progress)
        if what != "reuse":
            exact = 100 * result[METRIC]
            say(f"{tag}: exact {exact:.1f}% after {result['steps']:,} steps, {result['wall_s']:.1f} s")
        results.append(result | {"run_dir": str(p.run_dir)})
    return results
