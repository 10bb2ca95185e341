"""bfloat16 and compiled training against float32 eager: the same run (preset, data, seed, batches) trained for a
few steps four ways with `trm train`, every step's losses logged, each compared with the float32 eager run.

    python benchmarks/precision_check.py --preset sudoku-mlp --data DATA --steps 50 [--device cuda] --out FILE
        [--variants float32:eager float32:compile bfloat16:eager bfloat16:compile] [-- override=value ...]

Every variant starts from the same initial weights (same seed, float32 master weights) and sees the same batches
(the sampler's seed), so the losses differ only by arithmetic: compiled kernels reorder and fuse float32 sums,
bfloat16 autocast rounds activations to 8 mantissa bits. Two tolerances per variant (TOLERANCE), on the
relative lm_loss difference to float32 eager: over the first EARLY steps it measures the arithmetic itself;
over the whole run it bounds how far the trajectories drift apart, since any difference in the weights grows
from step to step (on the CPU, sudoku9-cpu: compiled float32 within 1.0e-6 of eager over 10 steps, 7e-6 at
step 30, 2e-2 at step 90; BENCHMARKS.md section 9, seventh round). Per variant: those maxima, the mean, the
same for the Q-halt loss, the last step's lm_loss, and the final held-out evaluation (`trm train` evaluates at
the end). The exit status is 1 if a variant is outside a tolerance.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TRM = [sys.executable, "-m", "trm.cli"]
BASE = "float32:eager"
EARLY = 10
# Largest relative lm_loss difference to float32 eager: (over the first EARLY steps, over the whole run).
TOLERANCE = {"float32:compile": (1e-4, 5e-2), "bfloat16:eager": (1e-2, 5e-2), "bfloat16:compile": (1e-2, 5e-2)}


def train(variant: str, args: argparse.Namespace) -> dict:
    """One `trm train` run of `args.steps` steps, logging every step; its train rows and final eval."""
    dtype, mode = variant.split(":")
    run = args.work / variant.replace(":", "-")
    cmd = [
        *TRM, "train", args.preset, f"data={args.data}", f"max_steps={args.steps}", "log_every=1",
        f"eval_interval={10**9}", f"device={args.device}", f"model.dtype={dtype}", f"compile={mode == 'compile'}",
        *args.overrides, "--run-dir", str(run), "--no-progress",
    ]  # fmt: skip
    print("$ " + " ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: trm train failed ({proc.returncode})\n{proc.stdout[-2000:]}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return dict(
        train=[r for r in rows if r["split"] == "train"],
        eval=next((r for r in reversed(rows) if r["split"] == "eval"), {}),
        wall_s=time.perf_counter() - started,
    )


def relative(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True)]


def compare(base: dict, other: dict) -> dict:
    """Step-by-step relative differences of `other`'s losses to `base`'s."""
    steps = [r["step"] for r in base["train"]]
    if [r["step"] for r in other["train"]] != steps:
        raise SystemExit("the runs logged different steps")
    out = {}
    for key in ("lm_loss", "q_halt_loss"):
        rel = relative([r[key] for r in other["train"]], [r[key] for r in base["train"]])
        out[key] = dict(
            early_max_rel=max(rel[:EARLY]), max_rel=max(rel), mean_rel=sum(rel) / len(rel),
            max_at_step=steps[rel.index(max(rel))],
        )  # fmt: skip
    out["last_lm_loss"] = other["train"][-1]["lm_loss"]
    out["eval_exact"] = other["eval"].get("exact_accuracy")
    out["eval_token"] = other["eval"].get("accuracy")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", nargs="+", default=[BASE, *TOLERANCE], choices=[BASE, *TOLERANCE])
    p.add_argument("--work", type=Path, default=Path("precision_runs"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", help="trm overrides for every variant (key=value)")
    args = p.parse_args()
    variants = [BASE, *[v for v in args.variants if v != BASE]]
    runs = {v: train(v, args) for v in variants}
    base = runs[BASE]
    results = {
        "preset": args.preset, "data": args.data, "steps": args.steps, "device": args.device,
        "overrides": args.overrides, "base_last_lm_loss": base["train"][-1]["lm_loss"],
        "base_eval_exact": base["eval"].get("exact_accuracy"), "tolerance": TOLERANCE, "early_steps": EARLY,
        "wall_s": {v: r["wall_s"] for v, r in runs.items()}, "variants": {},
    }  # fmt: skip
    failed = []
    for v in variants[1:]:
        res = results["variants"][v] = compare(base, runs[v])
        lm, (early_tol, tol) = res["lm_loss"], TOLERANCE[v]
        ok = lm["early_max_rel"] <= early_tol and lm["max_rel"] <= tol
        failed += [] if ok else [v]
        print(
            f"{v:17s} lm_loss vs {BASE}: first {EARLY} steps max rel {lm['early_max_rel']:.2e}, all steps "
            f"{lm['max_rel']:.2e} (step {lm['max_at_step']}), mean {lm['mean_rel']:.2e}; q_halt_loss max rel "
            f"{res['q_halt_loss']['max_rel']:.2e}; eval exact {res['eval_exact']} vs {results['base_eval_exact']}  "
            f"[{'within' if ok else 'OUTSIDE'} {early_tol:g} / {tol:g}]",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
