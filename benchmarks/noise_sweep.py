"""Accuracy of K sampled trajectories per noise scale and mode (model-only Q-head selection, and vote), on a
checkpoint's test split: which noise to use for `--samples`.

    python benchmarks/noise_sweep.py CKPT DATA --samples 4 --noise 0.1 0.3 1.0 --modes init step both
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trm.bench_infer import InferCase, bench_inference, markdown
from trm.inference import InferenceConfig
from trm.models import load_checkpoint
from trm.tasks import task_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--modes", nargs="+", default=["init", "step", "both"])
    ap.add_argument("--max-examples", type=int)
    args = ap.parse_args()
    model, ckpt = load_checkpoint(args.checkpoint)
    cases = [InferCase("fixed (reference)", None)]
    for mode in args.modes:
        for noise in args.noise:
            cfg = InferenceConfig(samples=args.samples, noise=noise, noise_mode=mode)
            cases.append(InferCase(f"{args.samples} samples, noise {noise:g} {mode}", cfg, ("q", "vote")))
    task = task_for(ckpt, model.config)

    def show(r: dict) -> None:
        print(f"{r['name']}: exact {100 * r['exact']:.1f}%", flush=True)

    records = bench_inference(model, task, args.data, cases, max_examples=args.max_examples, progress=show)
    print(markdown(records))


if __name__ == "__main__":
    main()
