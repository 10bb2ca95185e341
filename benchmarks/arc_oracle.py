"""Score a perfect oracle (every test row predicts its true augmented output) on a built ARC data set with
trm's evaluator: pass@K must be 1.0 for every K. Also times the voting evaluator.

    python benchmarks/arc_oracle.py DATA_DIR [--wrong-after K]

With --wrong-after K, augmentation number >= K of every group predicts one fixed wrong grid instead, to show
the voting rule (the wrong grid wins wherever it has more votes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from trm.data import load_split, read_identifiers
from trm.tasks import arc
from trm.tasks.arc_eval import Votes, score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--wrong-after", type=int)
    args = parser.parse_args()
    start = time.perf_counter()
    ds, names = load_split(args.data, "test"), read_identifiers(args.data)
    tasks = arc.read_test_puzzles(args.data)
    ids = ds.example_puzzle_ids()
    preds = np.array(ds.labels)
    if args.wrong_after is not None:
        puzzle = np.repeat(np.arange(len(ds.puzzle_identifiers)), np.diff(ds.puzzle_indices))
        first = np.repeat(ds.group_indices[:-1], np.diff(ds.group_indices))[puzzle]
        wrong = np.full((1, 1), 7, dtype=np.uint8)
        for i in np.nonzero(puzzle - first >= args.wrong_after)[0]:
            preds[i] = arc.encode_grid(arc.split_name(names[ids[i]])[1].apply(wrong))
    loaded = time.perf_counter()
    votes = Votes()
    votes.add_batch(names, ids, ds.inputs, preds, np.zeros(len(preds)))
    voted = time.perf_counter()
    res = score(votes, tasks)
    done = time.perf_counter()
    print(f"{ds.num_examples} test rows, {res.tasks} tasks")
    for key, value in res.metrics().items():
        print(f"{key:14s} {value:.4f}")
    print(f"load {loaded - start:.1f} s, votes {voted - loaded:.1f} s, scoring {done - voted:.1f} s")


if __name__ == "__main__":
    main()
