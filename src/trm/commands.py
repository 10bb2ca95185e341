"""The CLI's commands: each turns parsed arguments into calls of the library and prints the result."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from trm.errors import CheckpointError, ConfigError, TRMError
from trm.models.trm import load_checkpoint


def demo(args: argparse.Namespace) -> int:
    from trm.demo import run_demo

    run_demo(args.out, steps=args.steps, seed=args.seed)
    return 0


def _labelled_list(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """A plain puzzle list, each labelled by trm's exact solver; a bad line names its line number."""
    from tqdm import tqdm

    from trm.tasks import sudoku

    pairs = []
    for i, text in enumerate(tqdm(sudoku.read_puzzle_list(path), desc=f"solving {path.name}", unit="puzzle")):
        try:
            puzzle = sudoku.parse_puzzle(text)
            pairs.append((puzzle, sudoku.solution_of(puzzle)))
        except sudoku.SudokuError as err:
            raise sudoku.SudokuError(f"{path}: puzzle {i + 1}: {err}") from None
    return pairs


def _sudoku_source(args: argparse.Namespace, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    from trm.tasks import sudoku

    if args.csv or args.hf:
        path = args.csv or sudoku.download_sudoku_extreme("train")
        rows = sudoku.read_csv(path, min_rating=args.min_rating or None, subsample=args.subsample, rng=rng)
        return [(p, s) for p, s, _ in rows]
    if args.puzzles:
        pairs = _labelled_list(args.puzzles)
    else:
        from tqdm import tqdm

        with tqdm(total=args.generate, desc=f"generating {args.size}x{args.size}", unit="puzzle") as bar:
            made = sudoku.generate(
                args.generate, args.size, rng, args.min_rating, progress=bar.update, givens=args.givens
            )
        pairs = [(p, s) for p, s, _ in made]
    if args.subsample and args.subsample < len(pairs):
        pairs = [pairs[i] for i in rng.choice(len(pairs), args.subsample, replace=False)]
    return pairs


def data(args: argparse.Namespace) -> int:
    if args.task == "maze":
        return _data_maze(args)
    if args.task == "arc":
        return _data_arc(args)
    from trm.tasks import sudoku

    rng = np.random.default_rng(args.seed)
    train = _sudoku_source(args, rng)
    if args.test_csv:
        test = [(p, s) for p, s, _ in sudoku.read_csv(args.test_csv, subsample=args.test_subsample, rng=rng)]
    elif args.test_puzzles:
        test = _labelled_list(args.test_puzzles)
    elif args.hf and args.test_fraction is None:
        test = [
            (p, s)
            for p, s, _ in sudoku.read_csv(
                sudoku.download_sudoku_extreme("test"), subsample=args.test_subsample, rng=rng
            )
        ]
    else:
        fraction = 0.1 if args.test_fraction is None else args.test_fraction
        if not 0 <= fraction < 1:
            raise ConfigError(f"--test-fraction must be in [0, 1), got {fraction}")
        n_test = int(round(len(train) * fraction))
        order = rng.permutation(len(train))
        test = [train[i] for i in order[:n_test]]
        train = [train[i] for i in order[n_test:]]
    if args.test_subsample and args.test_subsample < len(test):
        test = [test[i] for i in rng.choice(len(test), args.test_subsample, replace=False)]
    if not train:
        raise ConfigError("no training puzzles left after filtering")
    summary = sudoku.build_dataset(args.out, train, test, aug=args.aug, seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _data_maze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trm.tasks import maze

    rng = np.random.default_rng(args.seed)

    def made(n: int, what: str) -> list:
        with tqdm(total=n, desc=f"generating {what} {args.size}x{args.size}", unit="maze") as bar:
            return maze.generate(n, args.size, rng, min_path=args.min_path, progress=bar.update)

    if args.csv or args.hf:
        train = maze.read_csv(args.csv or maze.download_maze_hard("train"), subsample=args.subsample, rng=rng)
    else:
        train = made(args.generate, "train")
    if args.test_csv or (args.hf and not args.test_generate):
        test = maze.read_csv(args.test_csv or maze.download_maze_hard("test"))
    elif args.test_generate:
        test = made(args.test_generate, "test")
    else:
        n_test = max(1, len(train) // 10)
        test, train = train[:n_test], train[n_test:]
    summary = maze.build_dataset(args.out, train, test, aug=args.aug)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _progress(description: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="task" if description == "augmenting" else "group")

    def tick(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return tick


def _data_arc(args: argparse.Namespace) -> int:
    import time

    from trm.tasks import arc

    subsets = args.subsets or arc.default_subsets(args.source)
    test_set = args.test_set or next((s for s in ("evaluation2", "evaluation") if s in subsets), "none")
    if test_set == "none":
        test_set = None
    elif test_set not in subsets:
        raise ConfigError(f"--test-set {test_set} is not among the subsets {' '.join(subsets)}")
    start = time.perf_counter()
    tasks = {subset: arc.load_subset(args.source, subset) for subset in subsets}
    if args.tasks:
        missing = set(args.tasks) - {t.name for items in tasks.values() for t in items}
        if missing:
            raise ConfigError(f"--tasks: no task {sorted(missing)[0]!r} in the subsets {' '.join(subsets)}")
        tasks = {s: [t for t in items if t.name in args.tasks] for s, items in tasks.items()}
    summary = arc.build_dataset(
        args.out,
        tasks,
        test_set,
        aug=args.aug,
        seed=args.seed,
        translate=not args.no_translate,
        progress=_progress,
        lazy=args.lazy,
    )
    info = dataclasses.asdict(summary)
    info["seconds"] = round(time.perf_counter() - start, 1)
    info["disk_bytes"] = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(json.dumps(info, indent=2))
    return 0


def train(args: argparse.Namespace) -> int:
    from trm.config import build_train_config
    from trm.train import format_metrics, resume
    from trm.train import train as run_train

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
        metrics = run_train(cfg, run_dir, progress=progress)
        print(f"run directory: {run_dir}")
    if metrics:
        print("final eval: " + format_metrics(metrics))
    return 0


def inference_config(args: argparse.Namespace, **extra):
    """The InferenceConfig of the shared engine options (a bad value is one ConfigError line)."""
    from trm.inference import InferenceConfig

    return InferenceConfig(
        policy=args.halt,
        max_steps=args.max_steps,
        samples=args.samples,
        noise=args.noise,
        noise_mode=args.noise_mode,
        select=args.select,
        batch_size=args.batch_size,
        seed=args.seed,
        **extra,
    )


def _distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device): under torchrun, join the process group (NCCL on GPUs, gloo on CPU)."""
    import os

    from trm.models.trm import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, device


def _hooks(*hooks):
    """One `evaluate(on_batch=...)` hook calling each given one (None entries skipped); None if none."""
    live = [h for h in hooks if h is not None]

    def each(batch: dict, res, n_real: int) -> None:
        for hook in live:
            hook(batch, res, n_real)

    return each if live else None


def eval(args: argparse.Namespace) -> int:  # noqa: A001 - the command's name
    from tqdm import tqdm

    from trm.data import load_split
    from trm.evaluate import SolutionCounter, check_fits, evaluate
    from trm.inference import Engine, checker_for
    from trm.tasks import task_for
    from trm.tasks.arc_eval import VoteCollector, write_submission

    rank, world, device = _distributed(args.device)
    try:
        checkpoints = [args.checkpoint, *args.ensemble]
        for path in checkpoints:  # a typo in a path fails before any work
            if not Path(path).exists():
                raise CheckpointError(f"{path}: no such checkpoint")
        ds = load_split(args.data, args.split)
        collector = VoteCollector.for_data(args.data) if args.split == "test" else None
        if collector is None and (args.submission or args.ensemble):
            raise ConfigError("--submission and --ensemble need an ARC data set (with test_puzzles.json)")
        if world > 1 and (args.show or args.save_outputs):
            raise ConfigError("--show and --save-outputs run in a single process (not under torchrun)")
        if args.ensemble and args.save_outputs:
            raise ConfigError("--save-outputs saves one checkpoint's outputs; give no --ensemble with it")
        if args.attempts < 1:
            raise ConfigError(f"--attempts must be at least 1, got {args.attempts}")
        inference = inference_config(args)  # a bad engine option fails before any work
        total = min(ds.num_examples, args.max_examples or ds.num_examples)
        shown: dict[int, np.ndarray] = {}  # predictions of the first --show examples (first checkpoint only)

        def keep_for_show(batch: dict, res, n_real: int) -> None:
            for i, position in enumerate(batch["position"][:n_real].tolist()):
                if position < args.show:
                    shown[position] = res.preds[i].cpu().numpy()

        for path in checkpoints:
            model, ckpt = load_checkpoint(path, device)
            check_fits(model, ds)  # before the progress bar, so a mismatch is one clean line
            try:
                task = task_for(ckpt, model.config)
            except CheckpointError:
                task = None  # a checkpoint of an unknown task still gets the generic metrics
            # the solution counter sees this process's rows only; ARC answers have no checker
            counter = SolutionCounter(task) if task is not None and task.checkable and world == 1 else None
            checker = checker_for(task) if task is not None else None
            Engine(model, inference, checker)  # a policy the task cannot serve fails before the progress bar
            with tqdm(total=total, desc=f"eval {ckpt.name}", unit="ex", file=sys.stderr, disable=rank != 0) as bar:
                res = evaluate(
                    model,
                    ds,
                    args.batch_size,
                    inference=inference,
                    max_examples=args.max_examples,
                    save_outputs=args.save_outputs is not None,
                    progress=lambda n: bar.update(min(n * world, bar.total - bar.n)),
                    on_batch=_hooks(collector, counter, keep_for_show if path == checkpoints[0] else None),
                    rank=rank,
                    world_size=world,
                    blank_identifiers=args.blank_identifiers,
                    checker=checker,
                )
            if rank == 0 and len(checkpoints) > 1:
                print(f"# {ckpt}")
            if counter is not None:
                res.metrics.update(counter.metrics())
            if rank == 0:
                for key, value in res.metrics.items():
                    print(f"{key:16s} {value:.6g}")
            if path == checkpoints[0]:
                first = (model, ckpt)
        score = collector.result(attempts=args.attempts, all_or_nothing=args.all_or_nothing) if collector else None
        if rank != 0:
            return 0
        if score is not None:
            what = "all-or-nothing" if args.all_or_nothing else "fractional credit per test input"
            print(f"ARC voting over {len(checkpoints)} checkpoint(s), {score.tasks} tasks, {what}:")
            for key, value in score.metrics().items():
                print(f"{key:16s} {value:.6g}")
            if args.submission:
                write_submission(args.submission, score.submission)
                print(f"submission written to {args.submission}")
        if args.save_outputs:
            np.savez_compressed(args.save_outputs, **res.outputs)
            print(f"outputs written to {args.save_outputs}")
        if shown:
            from trm.render import show_examples

            model, ckpt = first
            preds = np.stack([shown[k] for k in sorted(shown)])
            print(show_examples(ckpt, model, ds, preds, args.show, args.show_dir))
        return 0
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _read_puzzle_arg(text: str, task) -> list[str]:
    """A puzzle given inline, or a file of them, or `-` for stdin; the task knows how its files split."""
    if text == "-":
        return task.split(sys.stdin.read())
    if Path(text).is_file():
        return task.split(Path(text).read_text())
    return [text]


def solve(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from trm.inference import policy_for, solve_puzzles
    from trm.models.trm import pick_device
    from trm.tasks import task_for

    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    task = task_for(ckpt, model.config)
    config = inference_config(args, trace=args.trace)
    if task.name == "arc":
        return _solve_arc(args, model, task, config)
    puzzles = _read_puzzle_arg(args.puzzle, task)
    if not puzzles:
        raise TRMError("no puzzles given")
    brief = len(puzzles) > 10 and not args.trace  # many puzzles: one line each, not a grid each
    out = _open_output(args.out)
    started = time.perf_counter()
    valid = steps = compute = 0
    bar = tqdm(total=len(puzzles), desc="solving", unit="puzzle", file=sys.stderr, disable=len(puzzles) < 2)
    try:
        for i, sol in enumerate(solve_puzzles(model, task, puzzles, config)):
            bar.update(1)
            valid, steps, compute = valid + sol.valid, steps + sol.steps, compute + sol.compute
            if out is not None:
                out.write(json.dumps(_solution_record(i, task, sol)) + "\n")
            if brief:
                print(f"{i + 1}\t{task.format(sol.answer)}\tvalid={int(sol.valid)}\tsteps={sol.steps}")
                continue
            if len(puzzles) > 1:
                print(f"# puzzle {i + 1}: {puzzles[i]}")
            if args.trace:
                for step, (grid, q) in enumerate(zip(sol.trace, sol.q_trace, strict=True), 1):
                    ok = task.is_solution(grid, sol.puzzle)
                    print(f"step {step}: {task.format(grid)}  valid={ok}  halt probability {q:.3f}")
            print(task.render(sol.answer, sol.puzzle))
            print(f"answer: {task.format(sol.answer)}")
            print(
                f"valid solution: {'yes' if sol.valid else 'no'}   supervision steps: {sol.steps}   "
                f"confidence: {sol.confidence:.3f}"
            )
    finally:
        bar.close()
        if out is not None:
            out.close()
    seconds = time.perf_counter() - started
    n = len(puzzles)
    policy = policy_for(config.policy, model.config.q_continue).name
    print(
        f"{n} puzzle(s): {valid} valid ({100 * valid / n:.1f}%), mean steps {steps / n:.2f}, "
        f"supervision steps per puzzle {compute / n:.2f}, {n / seconds:.1f} puzzles/s (policy {policy}, "
        f"step cap {config.max_steps or model.config.N_sup}, {config.samples} trajectory(ies) per puzzle)"
    )
    if args.out:
        print(f"answers written to {args.out}")
    return 0


def _open_output(path: Path | None):
    """A text file opened for writing, or None; an unwritable path is one clear line."""
    if path is None:
        return None
    try:
        return open(path, "w")  # noqa: SIM115 - closed by the caller
    except OSError as err:
        raise TRMError(f"{path}: cannot write ({err.strerror})") from None


def _solution_record(i: int, task, sol) -> dict:
    return {
        "index": i,
        "puzzle": task.format(sol.puzzle),
        "answer": task.format(sol.answer),
        "valid": bool(sol.valid),
        "steps": sol.steps,
        "compute": sol.compute,
        "confidence": round(sol.confidence, 6),
    }


def _solve_arc(args: argparse.Namespace, model, task, inference) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from trm.adapt import AdaptConfig, solve_new_task
    from trm.inference import Engine, Request
    from trm.tasks import arc
    from trm.tasks.arc_eval import write_submission

    for flag, value, low in (
        ("--aug", args.aug, 0),
        ("--adapt-steps", args.adapt_steps, 0),
        ("--adapt-batch", args.adapt_batch, 1),
    ):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    Engine(model, inference)  # a policy or selection ARC cannot serve (no checker) fails before fine-tuning
    tasks = arc.load_tasks(args.puzzle)
    cfg = AdaptConfig(
        aug=args.aug,
        steps=args.adapt_steps,
        batch_size=args.adapt_batch,
        seed=args.seed,
        inference=replace(inference, trace=False),
    )
    submission, solved, known = {}, {"learned": 0, "blank": 0}, 0
    for item in tasks:
        with tqdm(total=cfg.steps, desc=f"adapting {item.name}", unit="step", file=sys.stderr) as bar:

            def tick(step: int, loss: float, bar=bar) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")

            learned, blank, adapted = solve_new_task(model, item, cfg, blank=args.blank, progress=tick)
        submission[item.name] = [
            {f"attempt_{k + 1}": g.tolist() for k, g in enumerate(learned.attempts(i))} for i in range(len(item.test))
        ]
        print(f"# task {item.name}: {len(item.train)} demonstrations, {len(item.test)} test inputs")
        print(f"embedding loss after fine-tuning (mean of the last 10 steps): {learned.final_loss:.4f}")
        for i, (x, truth) in enumerate(item.test):
            attempts, ranked = learned.attempts(i), learned.candidates(i)
            votes = ", ".join(f"{n} votes / q {q:.2f}" for _, n, q in ranked[:2])
            print(f"test input {i + 1}: {len(ranked)} candidates ({votes})")
            panels = [("input", x), ("attempt 1", attempts[0]), ("attempt 2", attempts[1])]
            if truth is not None:
                panels.append(("answer", truth))
            print(arc.side_by_side(panels, colour=sys.stdout.isatty()))
            if truth is not None:
                known += 1
                solved["learned"] += learned.solved(i)
                line = f"learned identity: {'solved' if learned.solved(i) else 'not solved'} in 2 attempts"
                if blank is not None:
                    solved["blank"] += blank.solved(i)
                    line += f"; blank identity: {'solved' if blank.solved(i) else 'not solved'}"
                print(line)
            elif blank is not None:
                same = np.array_equal(blank.attempts(i)[0], attempts[0])
                print(f"blank identity's attempt 1 {'equals' if same else 'differs from'} the learned one")
            if args.trace:
                (traced,) = Engine(adapted, inference).run([Request(arc.encode_grid(x), 1)])
                steps = [(f"step {k}", arc.crop(p)) for k, p in enumerate(traced.chosen.trace or [], 1)]
                print("answer after each supervision step (original orientation, learned identity):")
                print(arc.side_by_side(steps, colour=sys.stdout.isatty()))
            if args.show_dir:
                from trm.render import save_png

                png = save_png(
                    args.show_dir / f"{item.name}_{i + 1}.png",
                    [(t, g, (g != truth) if truth is not None and g.shape == truth.shape and t != "input" else None)
                     for t, g in panels],
                    arc.PALETTE,
                )  # fmt: skip
                print(f"(saved {png})")
    if known:
        summary = f"solved {solved['learned']} of {known} test inputs with the learned identity"
        if args.blank:
            summary += f", {solved['blank']} with the blank identity"
        print(summary)
    if args.out:
        write_submission(args.out, submission)
        print(f"attempts written to {args.out}")
    return 0


def convert(args: argparse.Namespace) -> int:
    from trm.checkpoint import convert_official

    out = convert_official(args.official, args.out, config_path=args.config, seq_len=args.seq_len)
    print(f"converted checkpoint written to {out}")
    return 0


def bench(args: argparse.Namespace) -> int:
    if args.infer:
        return _bench_infer(args)
    if not args.preset:
        raise ConfigError("give a preset to time (see `trm info --presets`) or --infer CKPT DATA")
    from trm.bench import compare, trm_workload

    print(f"{args.preset} {' '.join(args.overrides)}  torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("batch  train step (s)  inference (puzzles/s)")
    for batch in args.batch:
        res = compare([trm_workload(args.preset, batch, args.overrides)], repeats=args.repeats)["trm"]
        print(f"{batch:5d}  {res['train_s']:14.4f}  {batch / res['infer_s']:21.1f}")
    return 0


def _bench_infer(args: argparse.Namespace) -> int:
    import platform
    import time

    from trm.bench_infer import bench_inference, default_suite, markdown, plot
    from trm.data import write_json
    from trm.models.trm import pick_device
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


def info(args: argparse.Namespace) -> int:
    from trm.config import build_train_config, list_presets
    from trm.models.trm import TRM

    if args.presets or not args.target:
        print("presets: " + ", ".join(list_presets()))
        return 0
    target = Path(args.target)
    if target.exists():
        model, path = load_checkpoint(target, torch.device("cpu"))
        print(f"checkpoint: {path}")
        print(yaml.safe_dump({"model": model.config.model_dump()}, sort_keys=False), end="")
    else:
        cfg = build_train_config(args.target)
        model = TRM(cfg.model)
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
    print(f"trainable parameters: {model.num_parameters():,}")
    return 0
