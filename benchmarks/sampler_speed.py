"""Sampler cost on Sudoku-sized data (1M single-example groups, seq_len 81): building an epoch's plan and
drawing a 768-row batch from the memory map.

    python benchmarks/sampler_speed.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from trm.data import DatasetMetadata, TrainSampler, load_split


def main(n: int = 1_000_000, seq_len: int = 81, batch: int = 768) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "train"
        d.mkdir()
        rng = np.random.default_rng(0)
        np.save(d / "all__inputs.npy", rng.integers(0, 11, (n, seq_len), dtype=np.uint8))
        np.save(d / "all__labels.npy", rng.integers(0, 11, (n, seq_len), dtype=np.uint8))
        np.save(d / "all__puzzle_identifiers.npy", np.zeros(n, np.int32))
        np.save(d / "all__puzzle_indices.npy", np.arange(n + 1, dtype=np.int32))
        np.save(d / "all__group_indices.npy", np.arange(n + 1, dtype=np.int32))
        meta = DatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=11,
            seq_len=seq_len,
            num_puzzle_identifiers=1,
            total_groups=n,
            mean_puzzle_examples=1.0,
            total_puzzles=n,
            sets=["all"],
        )
        (d / "dataset.json").write_text(meta.model_dump_json())
        sampler = TrainSampler(load_split(Path(tmp), "train"), batch, seed=0)
        t0 = time.perf_counter()
        it = iter(sampler)
        next(it)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(200):
            next(it)
        per_batch = (time.perf_counter() - t0) / 200
        print(
            f"{n:,} groups: first batch (epoch plan included) {first * 1e3:.1f} ms, "
            f"then {per_batch * 1e3:.3f} ms per {batch}-row batch"
        )


if __name__ == "__main__":
    main()
