"""Training-step time and inference throughput of trm vs the official TRM code, side by side on this CPU.

    TRM_OFFICIAL_DIR=/path/to/TinyRecursiveModels python benchmarks/sudoku_speed.py \
        --presets sudoku-mlp sudoku-att --batches 32 128 --repeats 5

Both sides run float32 on the CPU, the same config and the same batch; each round runs every workload once,
so machine noise hits both alike; medians are reported with the trm/official ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from official import build_official, load_official, official_config  # noqa: E402

from trm.bench import Workload, compare, sudoku_batch, trm_workload  # noqa: E402
from trm.config import build_train_config  # noqa: E402
from trm.optim import AdamATan2  # noqa: E402


def official_workload(
    ns, preset: str, batch_size: int, infer_steps: int | None = None, compile_model: bool = False
) -> Workload:
    cfg = build_train_config(preset)
    torch.manual_seed(0)
    model = build_official(ns, official_config(cfg.model, batch_size))
    runner = torch.compile(model) if compile_model else model  # as pretrain.py does
    opt = AdamATan2(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sparse = ns.sparse.CastedSparseEmbeddingSignSGD_Distributed(
        model.model.puzzle_emb.buffers(),
        world_size=1,
        lr=cfg.puzzle_emb_lr,
        weight_decay=cfg.puzzle_emb_weight_decay,
    )
    batch = sudoku_batch(batch_size, cfg.model.seq_len, cfg.model.vocab_size)
    state = {}

    def train_step() -> None:
        model.train()
        if "carry" not in state:
            state["carry"] = model.initial_carry(batch)
        state["carry"], loss, _, _, _ = runner(carry=state["carry"], batch=batch, return_keys=[])
        (loss / batch_size).backward()
        opt.step()
        sparse.step()
        opt.zero_grad(set_to_none=True)
        sparse.zero_grad()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            carry = model.initial_carry(batch)
            for _ in range(infer_steps or cfg.model.N_sup):
                carry, _, _, _, done = runner(carry=carry, batch=batch, return_keys=[])
            assert infer_steps or done

    return Workload("official", train_step, infer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["sudoku-mlp", "sudoku-att"])
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--official", help="official checkout (default: $TRM_OFFICIAL_DIR)")
    parser.add_argument("--infer-steps", type=int, help="time this many supervision steps, scale to N_sup")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides (the official default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    ns = load_official(args.official)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, float32"
    )
    print(
        "| preset | batch | trm step (s) | official step (s) | trm speed-up (train) "
        "| trm puzzles/s | official puzzles/s | trm speed-up (inference) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for preset in args.presets:
        for batch in args.batches:
            workloads = [
                trm_workload(preset, batch, [f"compile={args.compile}"], infer_steps=args.infer_steps),
                official_workload(ns, preset, batch, args.infer_steps, compile_model=args.compile),
            ]
            res = compare(workloads, repeats=args.repeats, warmup=args.warmup)
            t, o = res["trm"], res["official"]
            scale = build_train_config(preset).model.N_sup / (
                args.infer_steps or build_train_config(preset).model.N_sup
            )
            t["infer_s"], o["infer_s"] = t["infer_s"] * scale, o["infer_s"] * scale
            row = dict(
                preset=preset,
                batch=batch,
                trm_train_s=t["train_s"],
                official_train_s=o["train_s"],
                trm_puzzles_s=batch / t["infer_s"],
                official_puzzles_s=batch / o["infer_s"],
            )
            rows.append(row)
            print(
                f"| {preset} | {batch} | {t['train_s']:.3f} | {o['train_s']:.3f} | "
                f"{o['train_s'] / t['train_s']:.2f}x | {row['trm_puzzles_s']:.1f} | "
                f"{row['official_puzzles_s']:.1f} | {row['trm_puzzles_s'] / row['official_puzzles_s']:.2f}x |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
