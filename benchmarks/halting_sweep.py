"""Choose a halting policy from recorded trajectories: run every test puzzle for K supervision steps once,
record each step's answer and Q values, then replay any number of policies on the records (the same
`trm.inference.halting` objects the engine uses; a policy decides from the steps so far, so its answer and
step count on a clean trajectory are exactly what the engine would give with that step cap). The engine's
throughput follows the mean steps (BENCHMARKS.md section 7), so this ranks policies by accuracy per compute
in a minute instead of one engine run each.

    python benchmarks/halting_sweep.py CKPT DATA --steps 32 --cap 8 32 [--policies P ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from trm.data import IGNORE_LABEL, collate, load_split
from trm.inference import checker_for, parse_policy
from trm.inference.halting import StepView
from trm.models import load_checkpoint
from trm.tasks import task_for

DEFAULT = [
    "fixed", "q", "q:0.8", "q:0.9", "q:0.95", "stable:1", "stable:2", "stable:3", "q+stable:1", "q+stable:2",
    "q:0.9+stable:1", "q:0.8+stable:1", "q|stable:2", "q:0.9|stable:2", "q:0.9|stable:1", "q+min:2", "valid",
    "valid|stable:2", "valid|q+stable:1",
]  # fmt: skip


@torch.no_grad()
def record(model, inputs: np.ndarray, ids: np.ndarray, steps: int, batch: int = 256) -> dict[str, np.ndarray]:
    """preds [N, K, L], q_halt and q_continue [N, K] after each of K supervision steps."""
    out = {"preds": [], "q_halt": [], "q_continue": []}
    for lo in range(0, len(inputs), batch):
        x = torch.from_numpy(inputs[lo : lo + batch].astype(np.int32))
        i = torch.from_numpy(ids[lo : lo + batch].astype(np.int32))
        y, z = model.initial_state(len(x))
        p, qh, qc = [], [], []
        for _ in range(steps):
            o = model(y, z, x, i)
            y, z = o.y, o.z
            p.append(o.logits.argmax(-1))
            qh.append(o.q_halt)
            qc.append(o.q_continue)
        out["preds"].append(torch.stack(p, 1).numpy())
        out["q_halt"].append(torch.stack(qh, 1).numpy())
        out["q_continue"].append(torch.stack(qc, 1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def replay(policy: str, rec: dict[str, np.ndarray], cap: int, valid: np.ndarray | None) -> np.ndarray:
    """The step (1-based) at which each puzzle halts under `policy` with step cap `cap`."""
    pol = parse_policy(policy)
    n = len(rec["preds"])
    halted_at = np.zeros(n, dtype=np.int64)
    stable = np.zeros(n, dtype=np.int64)
    for s in range(cap):
        if s > 0:
            same = (rec["preds"][:, s] == rec["preds"][:, s - 1]).all(-1)
            stable = np.where(same, stable + 1, 0)
        view = StepView(
            torch.from_numpy(rec["q_halt"][:, s]),
            torch.from_numpy(rec["q_continue"][:, s]),
            torch.full((n,), s + 1),
            torch.from_numpy(stable),
            (lambda s=s: torch.from_numpy(valid[:, s])) if valid is not None else (lambda: torch.zeros(n, dtype=bool)),
        )
        done = pol(view).numpy() | (s + 1 >= cap)
        halted_at = np.where((halted_at == 0) & done, s + 1, halted_at)
    return halted_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=32, help="steps recorded (the largest cap)")
    ap.add_argument("--cap", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--policies", nargs="+", default=DEFAULT)
    ap.add_argument("--max-examples", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    model, ckpt = load_checkpoint(args.checkpoint)
    task = task_for(ckpt, model.config)
    ds = load_split(args.data, "test")
    n = min(ds.num_examples, args.max_examples or ds.num_examples)
    inputs, ids = np.asarray(ds.inputs[:n]), ds.example_puzzle_ids()[:n]
    labels = collate(inputs, np.asarray(ds.labels[:n]), ids, n, ds.metadata)["labels"].numpy()
    rec = record(model, inputs, ids, args.steps)
    mask = labels != IGNORE_LABEL
    right = ((rec["preds"] == labels[:, None]) | ~mask[:, None]).all(-1)  # [N, K]
    checker = checker_for(task)
    valid = None
    if checker is not None:
        valid = np.stack([checker(rec["preds"][:, s], inputs) for s in range(args.steps)], 1)
    fixed = right[:, model.config.N_sup - 1].mean()
    print(f"# {ckpt}: {n} puzzles, fixed N_sup={model.config.N_sup}: exact {100 * fixed:.1f}%")
    print(f"{'policy':24s} {'cap':>4s} {'exact':>7s} {'vs fixed':>9s} {'steps':>6s} {'N_sup/steps':>11s}")
    rows = []
    for cap in args.cap:
        for policy in args.policies:
            if "valid" in policy and valid is None:
                continue
            at = replay(policy, rec, cap, valid)
            exact = right[np.arange(n), at - 1].mean()
            row = {"policy": policy, "cap": cap, "exact": float(exact), "mean_steps": float(at.mean())}
            rows.append(row)
            print(
                f"{policy:24s} {cap:4d} {100 * exact:6.1f}% {100 * (exact - fixed):+8.1f} {at.mean():6.2f} "
                f"{model.config.N_sup / at.mean():10.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(ckpt), "fixed": float(fixed), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
