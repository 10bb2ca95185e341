"""The demo's 6x6 data recipe (its generator, unique puzzles, x100 augmentation, 1,000 training puzzles) with
5,000 held-out puzzles instead of 500, so that two codes near the ceiling can be ranked (BENCHMARKS.md
section 9, sixth round).

    python benchmarks/make_sudoku6_5000.py OUT_DIR [--seed 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from trm.tasks import sudoku

N_TRAIN, N_TEST = 1000, 5000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    pairs = [(p, s) for p, s, _ in sudoku.generate_distinct(N_TRAIN + N_TEST, 6, rng)]
    print(sudoku.build_dataset(args.out, pairs[:N_TRAIN], pairs[N_TRAIN:], aug=100, seed=args.seed))


if __name__ == "__main__":
    main()
