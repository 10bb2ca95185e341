"""Row recipes (`trm data arc --lazy`): a split that stores its source grids once and, per example, which
pair, augmentation and canvas offset make its row, instead of the rows themselves (~70x less disk, trm
only). `PuzzleDataset` reads such a split through `recipe_rows`, computing rows when they are indexed.

File `rows_recipe.npz`: grids uint8 [pairs, 2, 30, 30] (input and output, top-left), shapes uint8
[pairs, 2, 2] (their (h, w)), pair / aug int32 [examples], offset uint8 [examples, 2], augs uint8 [n, 11]
(dihedral id, then the colour map of colours 0..9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trm.data.grids import COLOUR0, MAX_SIZE, SEQ_LEN, TRANSPOSING, dihedral, draw
from trm.errors import DataError

ROWS_RECIPE = "rows_recipe.npz"  # in a split, instead of the inputs/labels arrays


def save_recipe(
    split_dir: Path,
    grids: np.ndarray,
    shapes: np.ndarray,
    pair: np.ndarray,
    aug: np.ndarray,
    offset: np.ndarray,
    augs: np.ndarray,
) -> None:
    """Write a split's recipe (call before its writer's `close`, which writes dataset.json last, so the split
    only looks complete once both exist). An eager build of the same split would shadow the recipe, so its
    row arrays are removed."""
    split_dir = Path(split_dir)
    tmp = split_dir / (ROWS_RECIPE + ".tmp.npz")
    np.savez(
        tmp,
        grids=np.asarray(grids, dtype=np.uint8),
        shapes=np.asarray(shapes, dtype=np.uint8).reshape(-1, 2, 2),
        pair=np.asarray(pair, dtype=np.int32),
        aug=np.asarray(aug, dtype=np.int32),
        offset=np.asarray(offset, dtype=np.uint8).reshape(-1, 2),
        augs=np.asarray(augs, dtype=np.uint8).reshape(-1, 11),
    )
    (split_dir / "dataset.json").unlink(missing_ok=True)  # an old split stops looking valid before it changes
    tmp.replace(split_dir / ROWS_RECIPE)
    for stale in ("inputs", "labels"):
        (split_dir / f"all__{stale}.npy").unlink(missing_ok=True)


class RecipeRows:
    """One side (inputs or labels) of a recipe split's rows, computed when indexed: `rows[i]`, `rows[a:b]`,
    `rows[index_array]` give uint8 token rows as the official layout would hold them."""

    dtype = np.dtype(np.uint8)
    itemsize = 1
    ndim = 2

    def __init__(self, recipe: dict[str, np.ndarray], side: int):
        self.grids, self.shapes = recipe["grids"][:, side], recipe["shapes"][:, side]
        self.pair, self.aug, self.offset, self.augs = recipe["pair"], recipe["aug"], recipe["offset"], recipe["augs"]
        self.shape = (len(self.pair), SEQ_LEN)
        self.max_token = COLOUR0 + int(self.grids.max(initial=0))

    def __len__(self) -> int:
        return len(self.pair)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        rows = np.arange(len(self))[key]
        out = np.zeros((len(rows), MAX_SIZE, MAX_SIZE), dtype=np.uint8)
        for j, e in enumerate(rows):
            p, a = self.pair[e], self.augs[self.aug[e]]
            h, w = self.shapes[p]
            grid = dihedral(a[1:][self.grids[p, :h, :w]], int(a[0]))
            draw(out[j], grid, tuple(self.offset[e]))
        return out.reshape(len(rows), SEQ_LEN)


def recipe_rows(path: Path) -> tuple[RecipeRows, RecipeRows]:
    """(inputs, labels) of a recipe split; a damaged or inconsistent recipe is one DataError line."""
    try:
        with np.load(path, allow_pickle=False) as f:
            recipe = {k: f[k] for k in ("grids", "shapes", "pair", "aug", "offset", "augs")}
    except Exception as err:  # zip, key and format errors all mean a damaged file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: corrupt recipe ({first})") from None
    n_pairs, n_augs = len(recipe["grids"]), len(recipe["augs"])
    problems = []
    if (
        recipe["grids"].ndim != 4
        or recipe["grids"].shape[1:] != (2, MAX_SIZE, MAX_SIZE)
        or recipe["grids"].max(initial=0) > 9
    ):
        problems.append("grids must be [pairs, 2, 30, 30] colours 0-9")
    if len(recipe["pair"]) and (recipe["pair"].min() < 0 or recipe["pair"].max() >= n_pairs):
        problems.append("a pair index is out of range")
    if len(recipe["aug"]) and (recipe["aug"].min() < 0 or recipe["aug"].max() >= n_augs):
        problems.append("an augmentation index is out of range")
    if not (len(recipe["pair"]) == len(recipe["aug"]) == len(recipe["offset"])):
        problems.append("pair, aug and offset differ in length")
    if recipe["augs"].ndim != 2 or recipe["augs"].shape[1] != 11 or (recipe["augs"][:, 0] > 7).any():
        problems.append("augs must be [n, 11] rows of (dihedral 0-7, colour map)")
    if not problems and len(recipe["pair"]):
        dims = recipe["shapes"].max(axis=1)[recipe["pair"]].astype(np.int64)  # [E, 2] largest (h, w) of the pair
        swap = np.isin(recipe["augs"][recipe["aug"], 0], TRANSPOSING)
        dims[swap] = dims[swap][:, ::-1]
        if (recipe["offset"].astype(np.int64) + dims > MAX_SIZE).any():
            problems.append("an offset puts a grid outside the 30x30 canvas")
    if problems:
        raise DataError(f"{path}: inconsistent recipe ({problems[0]})")
    return RecipeRows(recipe, 0), RecipeRows(recipe, 1)
