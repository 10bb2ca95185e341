"""Learning per CPU-minute, side by side: trm and the official code trained for the same wall-clock minutes on
the same cores and the same puzzles, evaluated on the same held-out puzzles.

    python benchmarks/learn_per_minute.py --official CHECKOUT --minutes 10 --out learn.json \
        --case 9x9-30 /path/to/s9 sudoku9-cpu [--case NAME DATA PRESET ...] [--runs trm official same]

Per case, one run after the other (nothing else may run on the cores), each in its own process:
- `trm`: `trm train PRESET data=DATA max_time=M` plus `--trm-extra` overrides: trm's own path (bfloat16
  where the CPU runs it natively, the learning-rate cosine over the budget, the preset's depth curriculum).
  Evaluated at the fixed N_sup and with `--samples` trajectories (Gaussian noise of scale `--noise` on the
  initial state, every trajectory halting by the default adaptive policy, the Q head picks: model-only).
- `official`: benchmarks/learn_official.py with the official recipe in official names at `--official-dtype`:
  the preset plus `--official-overrides` (trm `key=value` overrides, e.g. `global_batch_size=64 epochs=57`
  for the official code's best settings on these cores), without what the official code lacks (no time
  budget: its schedule runs over the recipe's epochs, as pretrain.py defines it; no depth curriculum).
  Evaluated at N_sup.
- `same`: trm at exactly the official run's recipe (that dtype, the schedule over its epochs, no budget, no
  curriculum), evaluated every `--eval-every` epochs, stopped at M minutes: its time to the official run's
  final accuracy separates the training engine's share of any lead from the recipe's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRM = [sys.executable, "-m", "trm.cli"]


def sh(cmd: list[str], timeout: float | None = None) -> str:
    """Run a command, echoing it; its stdout (stderr passes through, for progress bars)."""
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}")
    return proc.stdout


def eval_metrics(out: str) -> dict[str, float]:
    """The `key value` lines `trm eval` prints."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+)\s+([-\d.e+]+)$", out, re.M)}


# what the official code cannot do, taken out of the recipe it is compared with (and of the `same` run)
OFFICIAL_ONLY = ["max_time=null", "depth_schedule=[]"]


def official_args(preset: str, overrides: list[str]) -> list[str]:
    """The official recipe (the preset, `overrides`, OFFICIAL_ONLY) as learn_official.py options."""
    from trm.config import build_train_config

    cfg = build_train_config(preset, [*overrides, *OFFICIAL_ONLY])
    m = cfg.model
    args = [
        "--hidden-size", m.hidden_size, "--num-heads", m.num_heads, "--expansion", m.expansion,
        "--layers", m.num_layers, "--T", m.T, "--n", m.n, "--N-sup", m.N_sup,
        "--halt-exploration-prob", m.halt_exploration_prob, "--pos-encodings", m.pos_encoding,
        "--puzzle-emb-ndim", m.puzzle_emb_ndim, "--puzzle-emb-len", m.puzzle_emb_len,
        "--batch-size", cfg.global_batch_size, "--epochs", cfg.epochs, "--lr", cfg.lr,
        "--lr-min-ratio", cfg.lr_min_ratio, "--lr-warmup-steps", cfg.lr_warmup_steps,
        "--weight-decay", cfg.weight_decay, "--beta1", cfg.beta1, "--beta2", cfg.beta2,
        "--puzzle-emb-lr", cfg.puzzle_emb_lr, "--puzzle-emb-weight-decay", cfg.puzzle_emb_weight_decay,
        "--ema-rate", cfg.ema_rate, "--seed", cfg.seed,
    ]  # fmt: skip
    args += ["--attention"] if m.mixer == "attention" else ["--mlp-t"]
    args += [] if cfg.ema else ["--no-ema"]
    args += ["--compile"] if cfg.compile else []
    return [str(a) for a in args]


def eval_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "eval"]


def run_case(name: str, data: str, preset: str, args: argparse.Namespace, work: Path) -> dict:
    minutes = args.minutes
    out = {"case": name, "data": data, "preset": preset, "minutes": minutes}
    budget = f"max_time={minutes * 60:g}"
    if "trm" in args.runs:
        run = work / f"{name}-trm"
        started = time.perf_counter()
        sh(
            [
                *TRM,
                "train",
                preset,
                f"data={data}",
                budget,
                "eval_interval=100000",
                f"device={args.device}",
                *args.trm_extra,
                "--run-dir",
                str(run),
                "--no-progress",
            ]
        )
        state = json.loads((run / "config.json").read_text())
        fixed = eval_metrics(sh([*TRM, "eval", str(run), data, "--device", args.device]))
        sampled = eval_metrics(
            sh(
                [
                    *TRM,
                    "eval",
                    str(run),
                    data,
                    "--device",
                    args.device,
                    "--halt",
                    "--samples",
                    str(args.samples),
                    "--noise",
                    str(args.noise),
                ]
            )
        )
        last = eval_rows(run)[-1]
        out["trm"] = dict(
            overrides=args.trm_extra, dtype=state["model"]["dtype"], steps=last["step"],
            wall_s=time.perf_counter() - started, exact_fixed=fixed["exact_accuracy"],
            exact_sampled=sampled["exact_accuracy"], samples=args.samples, noise=args.noise,
            sampled_steps_per_puzzle=sampled["compute"],
        )  # fmt: skip
    if "official" in args.runs:
        rec = work / f"{name}-official.json"
        cmd = [sys.executable, str(HERE / "learn_official.py"), "--data", data, "--minutes", str(minutes)]
        cmd += ["--device", args.device]
        sh(
            [
                *cmd,
                "--out",
                str(rec),
                "--official",
                args.official,
                "--dtype",
                args.official_dtype,
                *official_args(preset, args.official_overrides),
            ]
        )
        r = json.loads(rec.read_text())
        out["official"] = dict(
            dtype=args.official_dtype, overrides=args.official_overrides, steps=r["steps"],
            train_s=r["train_seconds"], exact=r["exact_accuracy"],
        )  # fmt: skip
    if "same" in args.runs:
        run = work / f"{name}-same"
        cmd = [*TRM, "train", preset, f"data={data}", *args.official_overrides, *OFFICIAL_ONLY]
        cmd += [f"model.dtype={args.official_dtype}", f"device={args.device}"]
        cmd += [f"eval_interval={args.eval_every}", "--run-dir", str(run), "--no-progress"]
        with contextlib.suppress(subprocess.TimeoutExpired):  # stopped at the budget: its evaluations count
            sh(cmd, timeout=minutes * 60)
        rows = [r for r in eval_rows(run) if r["elapsed_s"] <= minutes * 60]
        target = out.get("official", {}).get("exact")
        hit = next((r for r in rows if target is not None and r["exact_accuracy"] >= target), None)
        out["same"] = dict(
            dtype=args.official_dtype, evals=[(r["step"], r["elapsed_s"], r["exact_accuracy"]) for r in rows],
            time_to_official_s=hit["elapsed_s"] if hit else None,
        )  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", nargs=3, action="append", required=True, metavar=("NAME", "DATA", "PRESET"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument(
        "--official", default=os.environ.get("TRM_OFFICIAL_DIR"), required="TRM_OFFICIAL_DIR" not in os.environ
    )
    p.add_argument(
        "--official-dtype", default=None, help="the official side's forward_dtype (default: the dtype trm's "
        "dtype=auto computes in on --device: bfloat16 where it is native, else float32)",
    )  # fmt: skip
    p.add_argument("--runs", nargs="+", default=["trm", "official", "same"], choices=["trm", "official", "same"])
    p.add_argument("--trm-extra", nargs="*", default=[], help="overrides for the trm run (its best settings)")
    p.add_argument(
        "--official-overrides", nargs="*", default=[], help="trm overrides of the official (and `same`) recipe"
    )
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--noise", type=float, default=0.3, help="noise scale of the sampled trajectories")
    p.add_argument("--eval-every", type=int, default=5, help="epochs between the `same` run's evaluations")
    p.add_argument("--device", default="cpu", help="both sides' device: cpu or cuda (default: %(default)s)")
    p.add_argument("--work", type=Path, default=Path("learn_runs"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.official_dtype is None:  # on a CPU without native bf16 the official code would emulate it, slowly
        import torch

        from trm.models.base import resolve_dtype

        args.official_dtype = str(resolve_dtype("auto", torch.device(args.device))).removeprefix("torch.")
    args.work.mkdir(parents=True, exist_ok=True)
    results = [run_case(name, data, preset, args, args.work) for name, data, preset in args.case]
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
