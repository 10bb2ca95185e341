"""`trm serve`: load a checkpoint, name its task when it has no task.json (`--task`), and run the web server.
FastAPI and uvicorn are imported only here and in `trm.serve.app`, so the rest of trm runs without them."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from trm.config import ModelConfig
from trm.errors import CheckpointError, ConfigError, TRMError
from trm.tasks import TASK_FILE, task_for
from trm.tasks.base import Task

TASKS = ("sudoku", "maze", "arc")
_VOCAB = {"sudoku": 11, "maze": 6, "arc": 12}  # tokens each task's encoding needs


def task_named(name: str, config: ModelConfig) -> Task:
    """The task `name` at the model's size (Sudoku and mazes are square: side = sqrt(seq_len))."""
    from trm.tasks.arc import Arc
    from trm.tasks.maze import MazeTask
    from trm.tasks.sudoku import SudokuTask

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r} ({', '.join(TASKS)})")
    if config.vocab_size < _VOCAB[name]:
        raise ConfigError(f"--task {name} needs {_VOCAB[name]} tokens; the model has {config.vocab_size}")
    if name == "arc":
        if config.seq_len != 900:
            raise ConfigError(f"--task arc needs seq_len 900 (a 30x30 canvas); the model has {config.seq_len}")
        return Arc()
    side = math.isqrt(config.seq_len)
    if side * side != config.seq_len:
        raise ConfigError(f"--task {name}: the model's seq_len {config.seq_len} is not a square grid")
    return SudokuTask(side) if name == "sudoku" else MazeTask(side)


def load_task(checkpoint: Path, config: ModelConfig, name: str | None) -> Task:
    """The checkpoint's task: its task.json, else `name` (required then, unless the shape tells it)."""
    has_file = (checkpoint / TASK_FILE).is_file()
    if name is None:
        try:
            return task_for(checkpoint, config)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; name it with --task ({', '.join(TASKS)})") from None
    task = task_named(name, config)
    if has_file and (known := task_for(checkpoint, config)).name != name:
        raise ConfigError(f"--task {name}, but {checkpoint / TASK_FILE} says {known.name}")
    return task


def describe(task: Task) -> str:
    size = getattr(task, "size", None)
    return f"{task.name} {size}x{size}" if size else task.name


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from trm.serve.app import create_app
    except ImportError as err:
        raise TRMError(f"trm serve needs the serve extra ({err.name} is missing): pip install 'trm[serve]'") from None
    from trm.commands.infer import inference_config
    from trm.models.base import load_checkpoint, pick_device

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    for flag, value in (("--max-body", args.max_body), ("--max-queue", args.max_queue)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    config = inference_config(args)  # a bad engine option fails before the model loads
    if args.no_batching:
        config = replace(config, batch_size=1)
    model, ckpt = load_checkpoint(args.checkpoint, pick_device(args.device))
    task = load_task(ckpt, model.config, args.task)
    app = create_app(
        model,
        task,
        config,
        checkpoint=str(ckpt),
        max_body=args.max_body,
        max_queue=args.max_queue,
        batch_wait=0.0 if args.no_batching else args.batch_wait_ms / 1000,
    )
    batching = "one puzzle at a time" if config.batch_size == 1 else f"batches of up to {config.batch_size} rows"
    print(
        f"trm serve: {ckpt} ({describe(task)}, {model.config.arch}), {batching}, policy {config.policy}; "
        f"page at http://{args.host}:{args.port}/ , API schema at /docs",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
