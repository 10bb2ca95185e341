"""`trm plot`: the training and evaluation curves of one or several runs on shared axes, read from each run's
`metrics.jsonl` (`trm.train_log`): one colour per run, train solid, eval dashed with markers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from trm.errors import TRMError
from trm.train_log import METRICS_NAME

# (key in metrics.jsonl, axis title, logarithmic y axis)
CURVES = (
    ("lm_loss", "LM loss", True),
    ("exact_accuracy", "exact accuracy", False),
    ("q_halt_accuracy", "halting accuracy (q_halt)", False),
    ("steps", "mean supervision steps", False),
    ("lr", "learning rate", False),
)


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl; a missing, empty or malformed file is one TRMError line."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_NAME
    if not run_dir.is_dir():
        raise TRMError(f"{run_dir}: {'not a directory' if run_dir.exists() else 'no such directory'}")
    if not path.is_file():
        raise TRMError(f"{run_dir}: no {METRICS_NAME} (not a training run directory?)")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TRMError(f"{path}: cannot read ({getattr(err, 'strerror', None) or 'not UTF-8 text'})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if n == len(lines):  # a run still writing (or killed mid-line) leaves a partial last line
                continue
            raise TRMError(f"{path}: line {n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or "split" not in row:
            raise TRMError(f"{path}: line {n}: expected an object with 'split' and an integer 'step'")
        rows.append(row)
    if not rows:
        raise TRMError(f"{path}: no metrics logged yet")
    return rows


def labels(run_dirs: Sequence[Path]) -> list[str]:
    """Each run's directory name, with as many parent directories as it takes to tell the runs apart
    (runs/mlp/seed0 and runs/att/seed0 become mlp/seed0 and att/seed0)."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(d) for d in run_dirs]  # the same directory given twice


def series(rows: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric of one split, in step order, rows without it skipped."""
    points = sorted(
        (r["step"], float(r[key])) for r in rows if r["split"] == split and isinstance(r.get(key), int | float)
    )
    return [s for s, _ in points], [v for _, v in points]


def plot_runs(run_dirs: Sequence[Path], out: Path) -> Path:
    """Draw every curve of CURVES for every run (train and eval) into one PNG; returns its path."""
    runs = [read_metrics(d) for d in run_dirs]  # every run checked before matplotlib is asked for
    from trm.render import pyplot, save_figure

    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = [cycle[i % len(cycle)] for i in range(len(runs))]  # one colour per run
    styles = {"train": {"linestyle": "-"}, "eval": {"linestyle": "--", "marker": "o", "markersize": 3}}
    for ax, (key, title, log) in zip(axes.flat, CURVES, strict=False):
        drawn = False
        for rows, colour in zip(runs, colours, strict=True):
            for split, style in styles.items():
                steps, values = series(rows, split, key)
                if steps:
                    ax.plot(steps, values, color=colour, **style)
                    drawn = True
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if log and drawn:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    legend = axes.flat[-1]
    legend.axis("off")
    handles = [Line2D([], [], color=c, label=name) for c, name in zip(colours, labels(run_dirs), strict=True)]
    handles += [Line2D([], [], color="grey", label=split, **style) for split, style in styles.items()]
    legend.legend(handles=handles, loc="center", fontsize=9, title="run")
    return save_figure(fig, out, dpi=100)
