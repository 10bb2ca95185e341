"""Puzzle families. Each module parses, generates, augments, renders and scores one family; `task_for` finds
the task of a checkpoint from the `task.json` its data set wrote (copied into the checkpoint)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from trm.config import ModelConfig
from trm.errors import CheckpointError
from trm.tasks.arc import Arc
from trm.tasks.base import Task
from trm.tasks.maze import MazeTask
from trm.tasks.sudoku import SudokuTask

TASK_FILE = "task.json"


def task_from_info(info: dict) -> Task:
    if info.get("task") == "sudoku":
        return SudokuTask(int(info["size"]))
    if info.get("task") == "maze":
        return MazeTask(int(info["size"]))
    if info.get("task") == "arc":
        return Arc()
    raise CheckpointError(f"unknown task {info.get('task')!r} in {TASK_FILE}")


def task_for(checkpoint_dir: Path, config: ModelConfig) -> Task:
    path = Path(checkpoint_dir) / TASK_FILE
    if path.is_file():
        try:
            return task_from_info(json.loads(path.read_text()))
        except CheckpointError:
            raise
        except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:  # incl. JSONDecodeError
            raise CheckpointError(f"{path}: malformed task file ({type(err).__name__}: {err})") from None
    for size in (4, 6, 9):  # checkpoints converted from the official code carry no task file
        if config.seq_len == size * size:
            return SudokuTask(size)
    side = math.isqrt(config.seq_len)  # vocabulary 6 tells a maze from ARC at seq_len 900
    if config.vocab_size == 6 and side * side == config.seq_len:
        return MazeTask(side)
    if config.vocab_size == 12 and config.seq_len == 900:
        return Arc()
    raise CheckpointError(f"{checkpoint_dir}: no {TASK_FILE}, and seq_len {config.seq_len} is no known task")
