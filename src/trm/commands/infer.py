"""`trm eval` and `trm solve`: the inference engine's options, evaluation (also under torchrun) and solving."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from trm.errors import CheckpointError, ConfigError, TRMError
from trm.integrity import TMP
from trm.models import load_checkpoint
from trm.models.base import resolve_checkpoint
from trm.progress import progress


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


def _hooks(*hooks):
    """One `evaluate(on_batch=...)` hook calling each given one (None entries skipped); None if none."""
    live = [h for h in hooks if h is not None]

    def each(batch: dict, res, n_real: int) -> None:
        for hook in live:
            hook(batch, res, n_real)

    return each if live else None


def eval(args: argparse.Namespace) -> int:  # noqa: A001 - the command's name
    from trm import distributed
    from trm.data import load_split
    from trm.evaluate import SolutionCounter, check_fits, evaluate
    from trm.inference import Engine, checker_for
    from trm.tasks import task_for
    from trm.tasks.arc_eval import VoteCollector, write_submission

    d = distributed.init(args.device)
    rank, world, device = d.rank, d.world_size, d.device
    try:
        # a typo in a path fails before any work; a Hub id is downloaded now
        checkpoints = [resolve_checkpoint(path) for path in (args.checkpoint, *args.ensemble)]
        ds = load_split(args.data, args.split)
        collector = VoteCollector.for_data(args.data) if args.split == "test" else None
        if collector is None and (args.submission or args.ensemble):
            raise ConfigError("--submission and --ensemble need an ARC data set (with test_puzzles.json)")
        if world > 1 and (args.show or args.save_outputs):
            raise ConfigError("--show and --save-outputs run in a single process (not under torchrun)")
        if args.ensemble and args.save_outputs:
            raise ConfigError("--save-outputs saves one checkpoint's outputs; give no --ensemble with it")
        if args.save_outputs and args.save_outputs.is_dir():
            raise ConfigError(f"--save-outputs {args.save_outputs}: a directory; give a file name (FILE.npz)")
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
            with progress(total=total, desc=f"eval {ckpt.name}", unit="ex", disable=rank != 0) as bar:
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
            target = args.save_outputs.with_name(args.save_outputs.name.removesuffix(".npz") + ".npz")
            np.savez_compressed(target, **res.outputs)  # (numpy adds .npz to a name without it)
            print(f"outputs written to {target}")
        if shown:
            from trm.render import show_examples

            model, ckpt = first
            preds = np.stack([shown[k] for k in sorted(shown)])
            print(show_examples(ckpt, model, ds, preds, args.show, args.show_dir))
        return 0
    finally:
        distributed.shutdown(d)


def _read_puzzle_arg(text: str, task) -> list[str]:
    """A puzzle given inline, or a file of them, or `-` for stdin; the task knows how its files split."""
    if text == "-":
        return task.split(sys.stdin.read().removeprefix("\ufeff"))
    path = Path(text)
    if path.is_file():
        try:
            return task.split(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is not a cell
        except UnicodeDecodeError:
            raise TRMError(f"{text}: not a puzzle file (not UTF-8 text)") from None
    if path.is_dir():
        raise TRMError(f"{text}: a directory, not a puzzle or a file of puzzles")
    if "/" in text or path.suffix.lower() in (".txt", ".csv", ".json", ".jsonl"):
        raise TRMError(f"{text}: no such file")
    return [text]


def solve(args: argparse.Namespace) -> int:
    import time

    from trm.inference import policy_for, solve_puzzles
    from trm.models.base import pick_device
    from trm.tasks import task_for
    from trm.trace import from_solution, is_picture, numbered, save_trace, trace_text

    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    task = task_for(ckpt, model.config)
    picture = is_picture(args.out)  # --out FILE.png / FILE.gif: the trace as a picture instead of the answers
    config = inference_config(args, trace=args.trace or picture)
    if task.name == "arc":
        return _solve_arc(args, model, task, config)
    puzzles = _read_puzzle_arg(args.puzzle, task)
    if not puzzles:
        raise TRMError("no puzzles given")
    brief = len(puzzles) > 10 and not args.trace  # many puzzles: one line each, not a grid each
    started = time.perf_counter()
    valid = steps = compute = 0
    bar = progress(total=len(puzzles), desc="solving", unit="puzzle", disable=len(puzzles) < 2)
    with _answers_file(None if picture else args.out) as out, bar:
        for i, sol in enumerate(solve_puzzles(model, task, puzzles, config)):
            bar.update(1)
            valid, steps, compute = valid + sol.valid, steps + sol.steps, compute + sol.compute
            if out is not None:
                out.write(json.dumps(_solution_record(i, task, sol)) + "\n")
            traced = from_solution(task, sol) if args.trace or picture else None
            if picture:
                save_trace(traced, numbered(args.out, i + 1 if len(puzzles) > 1 else None))
            if brief:
                print(f"{i + 1}\t{task.format(sol.answer)}\tvalid={int(sol.valid)}\tsteps={sol.steps}")
                continue
            if len(puzzles) > 1:
                print(f"# puzzle {i + 1}: {puzzles[i]}")
            if args.trace:
                print(trace_text(traced))
            print(task.render(sol.answer, sol.puzzle))
            print(f"answer: {task.format(sol.answer)}")
            print(
                f"valid solution: {'yes' if sol.valid else 'no'}   supervision steps: {sol.steps}   "
                f"confidence: {sol.confidence:.3f}"
            )
    seconds = time.perf_counter() - started
    n = len(puzzles)
    policy = policy_for(config.policy, model.config.q_continue).name
    print(
        f"{n} puzzle(s): {valid} valid ({100 * valid / n:.1f}%), mean steps {steps / n:.2f}, "
        f"supervision steps per puzzle {compute / n:.2f}, {n / seconds:.1f} puzzles/s (policy {policy}, "
        f"step cap {config.max_steps or model.config.N_sup}, {config.samples} trajectory(ies) per puzzle)"
    )
    if args.out is not None and not picture:
        print(f"answers written to {args.out}")
    if picture:
        where = args.out if len(puzzles) == 1 else f"{numbered(args.out, 'N')} (N: the puzzle's number)"
        print(f"trace written to {where}")
    return 0


@contextlib.contextmanager
def _answers_file(path: Path | None) -> Iterator[TextIO | None]:
    """The answers stream into a temporary file beside `path`, which replaces `path` only once every puzzle is
    answered: a failure or Ctrl-C on the way leaves a file already there as it was. An unwritable path is one
    clear line."""
    if path is None:
        yield None
        return
    tmp = path.with_name(path.name + TMP)
    try:
        f = open(tmp, "w")  # noqa: SIM115 - closed below
    except OSError as err:
        raise TRMError(f"{path}: cannot write ({err.strerror})") from None
    try:
        with f:
            yield f
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


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
    from trm.trace import Trace, is_picture, numbered, save_trace, trace_text

    Engine(model, inference)  # a policy or selection ARC cannot serve (no checker) fails before fine-tuning
    picture = is_picture(args.out)  # --out FILE.png / FILE.gif: trace pictures instead of the submission
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
        with progress(total=cfg.steps, desc=f"adapting {item.name}", unit="step") as bar:

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
            if args.trace or picture:
                (traced,) = Engine(adapted, inference).run([Request(arc.encode_grid(x), 1)])
                steps = [arc.crop(p) for p in traced.chosen.trace]
                trace = Trace(task, x, steps, traced.chosen.q_trace, truth)
                if args.trace:
                    print("answer after each supervision step (original orientation, learned identity):")
                    print(trace_text(trace))
                if picture:
                    key = f"{item.name}_{i + 1}" if len(tasks) > 1 or len(item.test) > 1 else None
                    print(f"(trace saved to {save_trace(trace, numbered(args.out, key))})")
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
    if args.out and not picture:
        write_submission(args.out, submission)
        print(f"attempts written to {args.out}")
    return 0
