"""The CLI's commands: each turns parsed arguments into calls of the library and prints the result. Data set
building lives in `build`, evaluation and solving in `infer`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from trm.commands.build import data
from trm.commands.comparison import compare
from trm.commands.infer import eval, solve  # noqa: A004 - the command's name
from trm.errors import CheckpointError, ConfigError
from trm.models import load_checkpoint
from trm.serve.command import serve

__all__ = ["bench", "compare", "convert", "data", "demo", "eval", "info", "plot", "push", "serve", "solve", "train"]


def demo(args: argparse.Namespace) -> int:
    from trm.demo import run_demo

    run_demo(args.out, steps=args.steps, seed=args.seed)
    return 0


def train(args: argparse.Namespace) -> int:
    from trm.config import build_train_config
    from trm.distributed import launched_as_main
    from trm.train import resume
    from trm.train import train as run_train
    from trm.train_log import format_metrics

    progress = not args.no_progress
    if args.resume:
        if args.preset or args.overrides:
            raise ConfigError("--resume continues a run with its saved config; give no preset or overrides")
        metrics = resume(args.resume, progress=progress)
    else:
        if not args.preset:
            raise ConfigError("give a preset (see `trm info --presets`) or --resume RUN_DIR")
        cfg = build_train_config(args.preset, args.overrides)
        run_dir = args.run_dir or Path("runs") / args.preset
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--run-dir {run_dir}: a file; give a directory (new, or one to hold this run)")
        metrics = run_train(cfg, run_dir, progress=progress)
        if launched_as_main():  # under torchrun, rank 0 alone speaks
            print(f"run directory: {run_dir}")
    if metrics and launched_as_main():
        print("final eval: " + format_metrics(metrics))
    return 0


def convert(args: argparse.Namespace) -> int:
    from trm.checkpoint import convert_official
    from trm.data import load_split

    count = None
    if args.fit_data:
        split = "train" if (args.fit_data / "train").is_dir() else "test"
        meta = load_split(args.fit_data, split).metadata
        count, args.seq_len = meta.num_puzzle_identifiers, args.seq_len or meta.seq_len
    out, notes = convert_official(
        args.official, args.out, config_path=args.config, seq_len=args.seq_len, num_puzzle_identifiers=count
    )
    for line in notes:
        print(line)
    print(f"converted checkpoint written to {out}")
    return 0


def bench(args: argparse.Namespace) -> int:
    if args.infer:
        return _bench_infer(args)
    presets = ([args.preset] if args.preset else []) + (args.presets or [])
    if not presets:
        raise ConfigError("give a preset to time (see `trm info --presets`) or --infer CKPT DATA")
    import platform
    import time

    from trm import bench as timing
    from trm.config import build_train_config
    from trm.data import write_json
    from trm.models.base import pick_device

    for preset in presets:
        build_train_config(preset, args.overrides)  # every preset and override checked before any timing
    device = pick_device(args.device)
    dtypes = args.dtype or timing.default_dtypes(device)
    for dt in dtypes:
        if dt not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"unknown dtype {dt!r} (float32, bfloat16 or float16)")
    if min(args.batch) < 1 or args.repeats < 1 or (args.infer_steps or 1) < 1:
        raise ConfigError("--batch, --repeats and --infer-steps must be at least 1")
    if unknown := set(args.modes) - set(timing.MODES):
        raise ConfigError(f"unknown mode {sorted(unknown)[0]!r} ({', '.join(timing.MODES)})")
    print(
        f"# {', '.join(presets)} {' '.join(args.overrides)}: {platform.machine()} {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, dtypes {', '.join(dtypes)}"
        + (f", official code from {args.reference}" if args.reference else "")
    )
    records = timing.run(
        presets, args.batch, dtypes, args.overrides, device=str(device), reference=args.reference,
        repeats=args.repeats, infer_steps=args.infer_steps, modes=tuple(args.modes),
    )  # fmt: skip
    for r in records:
        r.update(torch=torch.__version__, threads=torch.get_num_threads(), date=time.strftime("%Y-%m-%d"))
    table = timing.markdown(records)
    print(table)
    names = {"trm_vs_official": "trm vs official", "fast_path_vs_float32": "trm's other dtypes vs its float32 path"}
    ratios = timing.summary(records)
    if ratios:
        print("geometric means: " + ", ".join(f"{names[k]} {v:.2f}x" for k, v in ratios.items()))
    if args.json:
        write_json(args.json, records)
    if args.md:
        args.md.write_text(table)
    return 0


def _bench_infer(args: argparse.Namespace) -> int:
    import platform
    import time

    from trm.bench_infer import bench_inference, default_suite, markdown, plot
    from trm.data import write_json
    from trm.models.base import pick_device
    from trm.tasks import task_for

    ckpt_path, data = args.infer
    if args.preset or args.overrides:
        raise ConfigError("--infer takes a checkpoint and a data set, not a preset")
    if args.batch_size < 1 or any(k < 1 for k in args.samples) or (args.max_examples or 1) < 1:
        raise ConfigError("--batch-size, --samples and --max-examples must be at least 1")
    device = pick_device(args.device)
    model, ckpt = load_checkpoint(ckpt_path, device)
    try:
        task = task_for(ckpt, model.config)
    except CheckpointError:
        task = None
    options = {"samples": tuple(args.samples), "noise": args.noise, "noise_mode": args.noise_mode}
    if args.policies:
        options["policies"] = tuple(args.policies)
    cases = default_suite(
        model.config.N_sup, bool(task is not None and task.checkable), q_continue=model.config.q_continue, **options
    )
    print(f"# {ckpt}: {len(cases)} configurations, torch {torch.__version__}, {torch.get_num_threads()} threads")

    def show(r: dict) -> None:
        valid = "" if r["valid"] is None else f" valid {100 * r['valid']:.1f}%"
        print(
            f"{r['name']:42s} exact {100 * r['exact']:5.1f}%{valid}  steps {r['mean_steps']:5.2f}  "
            f"steps/puzzle {r['compute']:6.2f}  {r['puzzles_per_s']:7.1f} puzzles/s",
            flush=True,
        )

    records = bench_inference(model, task, data, cases, args.batch_size, args.max_examples, progress=show)
    table = markdown(records)
    print(table)
    meta = {
        "checkpoint": str(ckpt),
        "data": str(data),
        "device": str(device),
        "dtype": str(model.compute_dtype).replace("torch.", ""),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        write_json(args.json, {**meta, "records": records})
        print(f"records written to {args.json}")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table)
        print(f"table written to {args.md}")
    if args.plot:
        print(f"plot written to {plot(records, args.plot, f'{ckpt.name} on {Path(data).name}')}")
    return 0


def plot(args: argparse.Namespace) -> int:
    from trm.plot import plot_runs

    out = args.out or (args.runs[0] / "curves.png" if len(args.runs) == 1 else Path("curves.png"))
    print(f"curves of {len(args.runs)} run(s) written to {plot_runs(args.runs, out)}")
    return 0


def info(args: argparse.Namespace) -> int:
    from trm.config import build_train_config, list_presets
    from trm.models import build_model

    if args.presets or not args.target:
        print("presets: " + ", ".join(list_presets()))
        return 0
    from trm.hub import parse_hub_id

    target = Path(args.target)
    if target.exists() or parse_hub_id(args.target):
        model, path = load_checkpoint(target, torch.device("cpu"))
        print(f"checkpoint: {path}")
        print(yaml.safe_dump({"model": model.config.model_dump()}, sort_keys=False), end="")
    else:
        cfg = build_train_config(args.target)
        model = build_model(cfg.model)
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
    print(f"trainable parameters: {model.num_parameters():,}")
    return 0


def push(args: argparse.Namespace) -> int:
    from trm.hub import push as upload

    url = upload(args.checkpoint, args.repo_id, private=args.private, token=args.token)
    print(f"pushed {args.checkpoint} to {url}")
    return 0
