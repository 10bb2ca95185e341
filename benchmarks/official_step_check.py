"""Training steps of trm and of the official code, side by side from the same weights on the same batches.

    python benchmarks/official_step_check.py DATA --official CHECKOUT [--dtype bfloat16] [--steps 300] [--from RUN]

Both models start from the official model's initialisation (trm's through `trm convert`'s weight mapping), or
with `--from RUN` from a trained trm checkpoint's weights (mapped into the official model by the same names;
a trained model halts early, so this covers the halting path that a fresh model never takes in 300 steps),
take the same batches from trm's sampler, each with its own loss head (trm's DeepSupervision, the official
ACTLossHead) and its own AdamATan2, at a constant learning rate, with ACT exploration off (the two draw it from
different random streams). Prints both losses every few steps; they agree to the printed digits when the two
training steps compute the same thing (BENCHMARKS.md section 9).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from trm.checkpoint import read_official, warm_start
from trm.config import build_train_config
from trm.data.layout import load_split
from trm.data.sampling import TrainSampler
from trm.models.base import RecursiveModel
from trm.optim import AdamATan2
from trm.reference import COMPILE_PREFIX, build_official, official_config, official_state_dict
from trm.supervision import BATCH_KEYS, DeepSupervision


def to_official(official: torch.nn.Module, weights: dict[str, torch.Tensor], tmp: Path) -> dict[str, torch.Tensor]:
    """trm-named weights as the official model's state dict: each official tensor is filled with its own index,
    read back through trm's official-checkpoint reader, and so names the trm tensor it becomes."""
    own = official.state_dict()
    keys = list(own)
    torch.save({COMPILE_PREFIX + k: torch.full_like(v, i + 1) for i, (k, v) in enumerate(own.items())}, tmp / "ids.pt")
    out = dict(own)
    for name, ids in read_official(tmp / "ids.pt").items():
        k = keys[int(ids.flatten()[0]) - 1]
        out[k] = weights[name].reshape(own[k].shape).to(own[k].dtype)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--official", default=os.environ.get("TRM_OFFICIAL_DIR"))
    p.add_argument("--preset", default="sudoku9-cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--from", dest="start", type=Path, help="a trm run or checkpoint to start both from")
    args = p.parse_args()

    m = build_train_config(args.preset, [f"model.dtype={args.dtype}", "halt_exploration_prob=0"]).model
    torch.manual_seed(0)
    official = build_official(official_config(m, args.batch), path=args.official, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "init.pt"
        torch.save(official_state_dict(official), path)
        ours = RecursiveModel.from_state(m, read_official(path), "the official initialisation")
        if args.start:
            warm_start(ours, args.start)
            official.load_state_dict(to_official(official, ours.state_dict(), Path(tmp)))
    sup = DeepSupervision(ours).train()
    official.train()
    opts = [AdamATan2(x.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1) for x in (ours, official)]
    batches = iter(TrainSampler(load_split(args.data, "train"), args.batch, seed=0))
    no_exploration = torch.zeros(args.batch, dtype=torch.int32)
    ours_carry = official_carry = None
    for step in range(args.steps):
        batch = {k: v for k, v in next(batches).items() if k in BATCH_KEYS}
        if ours_carry is None:
            ours_carry, official_carry = sup.initial_carry(batch), official.initial_carry(batch)
        ours_carry, losses, _ = sup(ours_carry, batch, no_exploration)
        official_carry, official_loss, *_ = official(carry=official_carry, batch=batch, return_keys=[])
        for loss, opt in zip((losses.total, official_loss), opts, strict=True):
            (loss / args.batch).backward()
            opt.step()
            opt.zero_grad()
        if step % max(1, args.steps // 20) == 0 or step == args.steps - 1:
            a, b = losses.total.item() / args.batch, official_loss.item() / args.batch
            print(
                f"step {step + 1:4d}  trm {a:.6f}  official {b:.6f}  difference {a - b:+.2e}  "
                f"halted {int(ours_carry.halted.sum())} / {int(official_carry.halted.sum())}",
                flush=True,
            )


if __name__ == "__main__":
    main()
