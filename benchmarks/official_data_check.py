"""Check that a data set written by trm loads and iterates in the official TRM data loader.

    TRM_OFFICIAL_DIR=/path/to/TinyRecursiveModels python benchmarks/official_data_check.py DATA_DIR

Prints the official loader's metadata and the shapes of one train and one test batch, and checks that the
test batches reproduce trm's arrays in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from trm.data import load_split  # noqa: E402
from trm.reference import official_dir  # noqa: E402


def main() -> None:
    data = sys.argv[1]
    sys.path.insert(0, str(official_dir()))
    from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig

    for split in ("train", "test"):
        cfg = PuzzleDatasetConfig(
            seed=0,
            dataset_paths=[data],
            global_batch_size=16,
            test_set_mode=split == "test",
            epochs_per_iter=1,
            rank=0,
            num_replicas=1,
        )
        ds = PuzzleDataset(cfg, split=split)
        set_name, batch, size = next(iter(ds))
        print(split, ds.metadata.model_dump(), {k: tuple(v.shape) for k, v in batch.items()}, size)
        if split == "test":
            ours = load_split(Path(data), "test")
            np.testing.assert_array_equal(batch["inputs"].numpy()[:size], ours.inputs[:size].astype(np.int32))
    print("ok: the official loader reads this data set")


if __name__ == "__main__":
    main()
