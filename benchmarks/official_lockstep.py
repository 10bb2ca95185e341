"""A whole trm training run and the official training loop in lockstep: same initial weights, same batches,
same ACT exploration draws, each code's own training step, schedule and EMA; then both evaluated.

    python benchmarks/official_lockstep.py DATA --official CHECKOUT [--preset P] [--set key=value ...]
        [--every 50] [--steps N] [--out FILE] [--replay STREAMS [--replay-parts all|batches|draws] [--trm-only]]

trm's side is `trm.train.Trainer.train_step` (the step `trm train` runs: warm-up + cosine lr, AdamATan2, EMA,
exploration from `exploration_min_steps`). The official side is pretrain.py's `train_batch` plus `EMAHelper`,
set up as in learn_official.py (its shims and CPU model). The official model starts from trm's initial weights
(mapped by `official_step_check.to_official`; for a seed they are the official code's own initialisation, in
float32 and in bfloat16), each step is fed the batch trm's sampler gave trm, and its
exploration line (`torch.rand_like(...) < p` times `torch.randint_like(...)`) is fed trm's draws for that step.
So every random stream is shared and only the code differs: if the two training steps compute the same thing,
the losses agree (to bf16 round-off growing slowly through training) and so do the final accuracies. This is
how BENCHMARKS.md section 9 separates "the codes differ" from "the random streams differ" at identical settings.

The other way round, `--replay FILE` feeds both steps the streams of a real official run (recorded by
`learn_official.py --record-streams FILE` with the same recipe and seed): its loader's batches and its model's
exploration draws, or with `--replay-parts batches` / `draws` one of them beside trm's other stream, to find
which stream moves the result. `--trm-only` skips the official step (once the lockstep has shown the steps
equal, this halves the time).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import trm.train
from trm.checkpoint import read_official
from trm.config import build_train_config
from trm.reference import official_state_dict
from trm.supervision import BATCH_KEYS
from trm.train import Trainer

HERE = Path(__file__).resolve().parent
CPU = torch.device("cpu")  # the lockstep runs on the CPU: it compares arithmetic, not speed


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


learn_official = _script("learn_official")
learn_per_minute = _script("learn_per_minute")
step_check = _script("official_step_check")


@contextlib.contextmanager
def exploration(min_steps: torch.Tensor) -> Iterator[None]:
    """Make the official exploration line draw `min_steps` (0 = no exploration for that row)."""
    rand_like, randint_like = torch.rand_like, torch.randint_like
    torch.rand_like = lambda x, **_: torch.where(min_steps > 0, 0.0, 1.0).to(x.dtype).view_as(x)
    torch.randint_like = lambda x, low=0, high=None, **_: torch.where(min_steps > 0, min_steps, low).to(x.dtype)
    try:
        yield
    finally:
        torch.rand_like, torch.randint_like = rand_like, randint_like


def trm_named(official_model: torch.nn.Module, tmp: Path) -> dict[str, torch.Tensor]:
    path = tmp / "official.pt"
    torch.save(official_state_dict(official_model), path)
    return read_official(path)


def max_weight_diff(trainer: Trainer, official_model: torch.nn.Module, tmp: Path) -> float:
    """Over the trained parameters (the fixed initial states are stored in bf16 by the official bf16 model)."""
    ours = dict(trainer.model.named_parameters())
    theirs = trm_named(official_model, tmp)
    return max(float((p.detach().float() - theirs[k].float()).abs().max()) for k, p in ours.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--official", default=os.environ.get("TRM_OFFICIAL_DIR"), help="default: $TRM_OFFICIAL_DIR")
    p.add_argument("--preset", default="sudoku9-cpu")
    p.add_argument("--set", nargs="*", default=[], help="trm overrides (e.g. global_batch_size=64 epochs=38 seed=1)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: the schedule)")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--out", type=Path)
    p.add_argument("--replay", type=Path, help="streams of an official run (learn_official.py --record-streams)")
    p.add_argument("--replay-parts", choices=["all", "batches", "draws"], default="all")
    p.add_argument("--trm-only", action="store_true", help="train trm only (on the replayed streams)")
    args = p.parse_args()
    if not args.official:
        p.error("--official CHECKOUT (or TRM_OFFICIAL_DIR) is needed")
    replay = torch.load(args.replay) if args.replay else None
    replay_batches = replay is not None and args.replay_parts in ("all", "batches")
    replay_draws = replay is not None and args.replay_parts in ("all", "draws")
    if replay_draws:  # trm's step takes the recorded draws (Trainer.train_step slices them like its own)
        trm.train.exploration_min_steps = lambda seed, step, rows, N_sup, prob: replay["min_steps"][step]

    overrides = [*args.set, *learn_per_minute.OFFICIAL_ONLY]
    cfg = build_train_config(args.preset, [f"data={args.data}", "eval_interval=100000", *overrides])
    if cfg.model.dtype not in ("float32", "bfloat16"):
        raise SystemExit("pass model.dtype=float32 or model.dtype=bfloat16 (the official code has no `auto`)")
    opts = learn_official.parse_args(
        [
            "--data",
            str(args.data),
            "--minutes",
            "1e9",
            "--out",
            "-",
            "--official",
            args.official,
            *learn_per_minute.official_args(args.preset, args.set),
            "--dtype",
            cfg.model.dtype,
        ]
    )
    off = learn_official.import_official(args.official)
    pt = off.pretrain
    config = learn_official.pretrain_config(off, opts)
    kw = dict(global_batch_size=config.global_batch_size, rank=0, world_size=1)
    _, train_meta = pt.create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=1, **kw)
    eval_loader, _ = pt.create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1, **kw)
    pt.create_model = learn_official.device_create_model(off, "cpu")
    state = pt.init_train_state(config, train_meta, rank=0, world_size=1)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trainer = Trainer(cfg, tmp / "run", progress=False)
        state.model.load_state_dict(step_check.to_official(state.model, trainer.model.state_dict(), tmp))
        if trainer.total_steps != state.total_steps:
            raise SystemExit(f"schedules differ: trm {trainer.total_steps} steps, official {state.total_steps}")
        ema = off.ema.EMAHelper(mu=config.ema_rate)
        ema.register(state.model)
        state.model.train()
        trainer.sup.train()
        B, steps = cfg.global_batch_size, args.steps or state.total_steps
        if replay is not None and (len(replay["min_steps"]) < steps or replay["inputs"].shape[1] != B):
            raise SystemExit(f"{args.replay}: {tuple(replay['inputs'].shape[:2])} steps x rows, not {steps} x {B}")
        recorded = (replay.get("seed"), replay.get("prob")) if replay is not None else None
        if recorded and recorded != (cfg.seed, cfg.model.halt_exploration_prob):
            raise SystemExit(f"{args.replay}: recorded under seed, exploration {recorded}, not {cfg.seed}, "
                             f"{cfg.model.halt_exploration_prob}")  # fmt: skip
        batches = iter(trainer.sampler)
        log, t0 = [], time.perf_counter()
        print(f"lockstep: {steps} of {state.total_steps} steps, batch {B}, dtype {cfg.model.dtype}", flush=True)
        for i in range(steps):
            batch = {k: v for k, v in next(batches).items() if k in BATCH_KEYS}
            if replay_batches:
                batch = {k: replay[k][i] for k in BATCH_KEYS}
            m = cfg.model
            draws = trm.train.exploration_min_steps(cfg.seed, trainer.step, B, m.N_sup, m.halt_exploration_prob)
            ours = trainer.train_step(batch)
            if not args.trm_only:
                if state.carry is None:
                    state.carry = state.model.initial_carry(batch)
                with exploration(draws):
                    moved = {k: learn_official._OnDevice(v, CPU) for k, v in batch.items()}
                    theirs = pt.train_batch(config, state, moved, B, rank=0, world_size=1)
                ema.update(state.model)
            if trainer.step % args.every == 0 or trainer.step == steps:
                row = dict(step=trainer.step, trm_lm_loss=float(ours["lm_loss"]) / B)
                if not args.trm_only:
                    row["official_lm_loss"] = float(theirs["train/lm_loss"])
                row["trm_halted"] = int(trainer.carries[0].halted.sum())
                if not args.trm_only:
                    row["official_halted"] = int(state.carry.halted.sum())
                    row["max_weight_diff"] = max_weight_diff(trainer, state.model, tmp)
                row["seconds"] = round(time.perf_counter() - t0, 1)
                log.append(row)
                print(
                    "  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                    flush=True,
                )
        ours_eval = trainer.run_eval()
        theirs_eval = {} if args.trm_only else learn_official.evaluate(off, ema.ema_copy(state.model), eval_loader, CPU)
    result = dict(
        overrides=overrides,
        steps=steps,
        streams=f"{args.replay} ({args.replay_parts}; trm's for the rest)" if replay is not None else "trm's",
        log=log,
        trm_exact=ours_eval.get("exact_accuracy"),
        official_exact=theirs_eval.get("exact_accuracy"),
    )
    print(f"held-out exact: trm {result['trm_exact']:.4f}  official {result['official_exact']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
