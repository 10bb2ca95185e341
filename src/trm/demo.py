"""`trm demo`: the whole pipeline on a laptop CPU in minutes.

Generates unique-solution 6x6 Sudoku puzzles, writes them in the official data layout (training puzzles
augmented), trains a small TRM-MLP from the `sudoku6-demo` preset, and solves puzzles it never saw.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from trm.config import build_train_config
from trm.data import load_split
from trm.evaluate import evaluate
from trm.inference import solve_puzzles
from trm.models.trm import TRM
from trm.tasks import sudoku
from trm.train import train

SIZE = 6
N_TRAIN = 1000
N_TEST = 500
AUG = 100
PRESET = "sudoku6-demo"


def run_demo(out: Path, steps: int | None = None, seed: int = 0) -> float:
    """Returns the held-out exact accuracy."""
    started = time.perf_counter()
    work = Path(out) / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    rng = np.random.default_rng(seed)

    print(f"[1/4] generating {N_TRAIN + N_TEST} unique-solution {SIZE}x{SIZE} puzzles")
    pairs = [(p, s) for p, s, _ in sudoku.generate_distinct(N_TRAIN + N_TEST, SIZE, rng)]
    train_pairs, test_pairs = pairs[:N_TRAIN], pairs[N_TRAIN:]

    print(f"[2/4] writing the data set ({N_TRAIN} training puzzles x {AUG + 1} augmentations, {N_TEST} held out)")
    data_dir = work / "data"
    sudoku.build_dataset(data_dir, train_pairs, test_pairs, aug=AUG, seed=seed)

    overrides = [f"data={data_dir}", f"seed={seed}"] + ([f"max_steps={steps}"] if steps else [])
    cfg = build_train_config(PRESET, overrides)
    run_dir = work / "run"
    print(f"[3/4] training TRM ({PRESET}) in {run_dir}")
    train(cfg, run_dir)

    print("[4/4] solving the held-out puzzles with the EMA weights")
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text().strip()
    model = TRM.from_pretrained(ckpt).eval()
    result = evaluate(model, load_split(data_dir, "test"), batch_size=250)
    exact = result.metrics["exact_accuracy"]
    task = sudoku.SudokuTask(SIZE)
    shown = next(solve_puzzles(model, task, [sudoku.format_puzzle(test_pairs[0][0])]))
    print(f"\npuzzle (never seen in training): {sudoku.format_puzzle(shown.puzzle)}")
    print(task.render(shown.answer, shown.puzzle))
    print(f"valid solution: {'yes' if shown.valid else 'no'}  (supervision steps: {shown.steps})")
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\nheld-out exact accuracy: {exact:.4f} on {int(result.metrics['count'])} puzzles "
        f"(token accuracy {result.metrics['accuracy']:.4f}); total time {minutes:.1f} min"
    )
    print(f"checkpoint: {ckpt}\ntry: trm solve {ckpt} {sudoku.format_puzzle(test_pairs[1][0])}")
    return exact
