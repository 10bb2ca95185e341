"""`trm bench --infer CKPT DATA`: fixed-step, adaptive and sampled inference side by side on one checkpoint
and data set, in one process, one configuration after another on the same puzzles.

Per configuration: exact accuracy (against the data set's answers), valid (the task's checker, where it
has one), mean steps of the chosen trajectory, supervision steps per puzzle over all trajectories (the
compute), puzzles/s and mean latency per puzzle. "reference" is the plain fixed-step path (`think` on
fixed batches, what `trm solve` did before the engine); the others run in the engine's pool. Selections
are marked "model" (Q head, vote: what the model alone decides) or "checker" (the task's checker chose
or stopped the answer): they are different claims and are reported apart. A sampled configuration runs once
and every selection is scored on the same trajectories (so they share one speed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from trm.data import IGNORE_LABEL, collate, load_split
from trm.evaluate import check_fits
from trm.inference import Engine, InferenceConfig, Request, checker_for, policy_for
from trm.inference.engine import choose
from trm.supervision import think
from trm.tasks.base import Task


@dataclass
class InferCase:
    name: str
    config: InferenceConfig | None  # None: the reference fixed-step path
    selections: tuple[str, ...] = ()  # with samples: each selection scored on the same trajectories


def kind_of(config: InferenceConfig | None, select: str) -> str:
    if config is None:
        return "reference"
    return "checker" if "valid" in config.policy or select == "valid" else "model"


def default_suite(
    n_sup: int,
    checkable: bool,
    samples: tuple[int, ...] = (4, 16),
    noise: float = 0.3,
    noise_mode: str = "init",
    policies: tuple[str, ...] = ("q", "q:0.9", "stable:1", "stable:2", "q+stable:1", "q+stable:2"),
    q_continue: bool = False,
) -> list[InferCase]:
    """Fixed N_sup (reference and engine), 2x and 4x N_sup, each halting policy at the N_sup cap and at 4x,
    and K sampled trajectories, run to the cap or halting by the default adaptive policy, chosen by Q head
    and vote (and by the checker where the task has one)."""
    cases = [InferCase(f"fixed {n_sup} (reference)", None)]
    cases += [InferCase(f"fixed {k * n_sup}", InferenceConfig(max_steps=k * n_sup)) for k in (1, 2, 4)]
    extra = [policy_for("adaptive", q_continue).name]  # the default adaptive policy (bare --halt)
    extra += ["q-continue"] if q_continue else []
    extra += ["valid", "q|valid"] if checkable else []
    for policy in dict.fromkeys((*policies, *extra)):  # each once, in order
        cases.append(InferCase(f"halt {policy}", InferenceConfig(policy=policy)))
        cases.append(InferCase(f"halt {policy}, cap {4 * n_sup}", InferenceConfig(policy=policy, max_steps=4 * n_sup)))
    selections = ("q", "vote", "valid") if checkable else ("q", "vote")
    for k in samples:
        cfg = InferenceConfig(samples=k, noise=noise, noise_mode=noise_mode)
        cases.append(InferCase(f"{k} samples, noise {noise:g} {noise_mode}", cfg, selections))
        adaptive = policy_for("adaptive", q_continue).name
        cfg = InferenceConfig(policy=adaptive, samples=k, noise=noise, noise_mode=noise_mode)
        cases.append(InferCase(f"{k} samples, noise {noise:g} {noise_mode}, halt {adaptive}", cfg, selections))
    return cases


def run_case(
    model: torch.nn.Module,
    task: Task | None,
    inputs: np.ndarray,
    labels: torch.Tensor,
    ids: np.ndarray,
    case: InferCase,
    batch_size: int,
) -> list[dict]:
    """One configuration over every puzzle: a record of its accuracy, compute and speed per selection."""
    device = model.device
    n = len(inputs)
    checker = checker_for(task) if task is not None else None
    started = time.perf_counter()
    if case.config is None:
        preds, latency = [], []
        for lo in range(0, n, batch_size):
            t0 = time.perf_counter()
            x = torch.from_numpy(inputs[lo : lo + batch_size].astype(np.int32)).to(device)
            res = think(model, x, torch.from_numpy(ids[lo : lo + batch_size].astype(np.int32)).to(device))
            preds.append(res.preds.cpu().numpy())
            latency += [time.perf_counter() - t0] * len(x)
        seconds = time.perf_counter() - started
        steps = np.full(n, model.config.N_sup)
        picks = {"fixed": (np.concatenate(preds), steps)}
        config = {"policy": "fixed", "max_steps": model.config.N_sup, "samples": 1}
    else:
        cfg = InferenceConfig(**{**asdict(case.config), "batch_size": batch_size})
        engine = Engine(model, cfg, checker)
        answers = sorted(
            engine.run(Request(x, int(i)) for x, i in zip(inputs, ids, strict=True)), key=lambda a: a.index
        )
        seconds = time.perf_counter() - started
        latency = [a.latency_s for a in answers]
        picks = {}
        for select in case.selections or (cfg.select,):
            chosen = [choose(a.trajectories, select, checker, a.request.inputs)[0] for a in answers]
            picks[select] = (np.stack([t.preds for t in chosen]), np.array([t.steps for t in chosen]))
        compute = np.mean([a.compute for a in answers])
        config = {k: getattr(cfg, k) for k in ("policy", "max_steps", "samples", "noise", "noise_mode")}
        config["max_steps"] = cfg.max_steps or model.config.N_sup
    records = []
    mask = labels != IGNORE_LABEL
    for select, (pred, steps) in picks.items():
        exact = ((torch.from_numpy(pred).long() == labels) | ~mask).all(-1).float().mean().item()
        valid = float(np.mean(checker(pred, inputs))) if checker is not None else None
        name = case.name + (f", select {select}" if case.selections else "")
        records.append(
            {
                "name": name,
                "kind": kind_of(case.config, select),
                **config,
                "select": select,
                "count": n,
                "exact": exact,
                "valid": valid,
                "mean_steps": float(np.mean(steps)),
                "compute": float(compute) if case.config is not None else float(model.config.N_sup),
                "seconds": seconds,
                "puzzles_per_s": n / seconds,
                "latency_ms": 1000 * float(np.mean(latency)),
            }
        )
    return records


def bench_inference(
    model: torch.nn.Module,
    task: Task | None,
    data: Path,
    cases: list[InferCase],
    batch_size: int = 256,
    max_examples: int | None = None,
    split: str = "test",
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    ds = load_split(data, split)
    check_fits(model, ds)
    checker = checker_for(task) if task is not None else None
    for case in cases:  # a configuration the task cannot serve fails before any is run
        if case.config is not None:
            Engine(model, case.config, checker)
    n = min(ds.num_examples, max_examples or ds.num_examples)
    inputs, ids = np.asarray(ds.inputs[:n]), ds.example_puzzle_ids()[:n]
    labels = collate(inputs, np.asarray(ds.labels[:n]), ids, n, ds.metadata)["labels"].long()
    records = []
    warm = InferCase("warm-up", None)  # the first timed configuration must not pay one-time start-up costs
    run_case(model, task, inputs[:batch_size], labels[:batch_size], ids[:batch_size], warm, batch_size)
    for case in cases:
        for record in run_case(model, task, inputs, labels, ids, case, batch_size):
            records.append(record)
            if progress is not None:
                progress(record)
    base = records[0]["puzzles_per_s"]
    for r in records:
        r["speedup"] = r["puzzles_per_s"] / base
    return records


def markdown(records: list[dict]) -> str:
    head = (
        "| configuration | selection | exact | valid | mean steps | steps/puzzle | puzzles/s | latency (ms) "
        "| vs reference |"
    )
    rows = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        valid = "-" if r["valid"] is None else f"{100 * r['valid']:.1f}%"
        name = r["name"].replace("|", "\\|")  # a policy's "or" must not end the table cell
        rows.append(
            f"| {name} | {r['kind']} | {100 * r['exact']:.1f}% | {valid} | {r['mean_steps']:.2f} | "
            f"{r['compute']:.2f} | {r['puzzles_per_s']:.1f} | {r['latency_ms']:.0f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(rows) + "\n"


def plot(records: list[dict], path: Path, title: str) -> Path:
    """Exact accuracy against supervision steps per puzzle, one marker per kind of selection."""
    from trm.render import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(8, 5.5))
    style = {"reference": ("s", "black"), "model": ("o", "tab:blue"), "checker": ("^", "tab:orange")}
    for kind, (marker, colour) in style.items():
        pts = [r for r in records if r["kind"] == kind]
        if pts:
            ax.scatter(
                [r["compute"] for r in pts], [100 * r["exact"] for r in pts], marker=marker, c=colour, label=kind
            )
            for r in pts:
                ax.annotate(
                    r["name"], (r["compute"], 100 * r["exact"]), fontsize=6, xytext=(3, 2), textcoords="offset points"
                )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("supervision steps per puzzle (all trajectories)")
    ax.set_ylabel("held-out exact accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="selection")
    return save_figure(fig, path, dpi=130)
