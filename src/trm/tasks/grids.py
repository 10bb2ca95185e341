"""What every grid puzzle shares: the 8 symmetries of the square (the official ids and order)."""

from __future__ import annotations

import numpy as np

from trm.errors import TRMError

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # t -> the transform that undoes t


def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """The official dihedral transform t of a 2-d grid (any shape): 0 identity, 1 rot90 (np.rot90,
    counter-clockwise), 2 rot180, 3 rot270, 4 fliplr, 5 flipud, 6 transpose, 7 anti-transpose.
    `DIHEDRAL_INVERSE[t]` undoes t. Returns a contiguous array."""
    if t == 0:
        out = grid
    elif t in (1, 2, 3):
        out = np.rot90(grid, k=t)
    elif t == 4:
        out = np.fliplr(grid)
    elif t == 5:
        out = np.flipud(grid)
    elif t == 6:
        out = grid.T
    elif t == 7:
        out = np.fliplr(np.rot90(grid, k=1))
    else:
        raise TRMError(f"dihedral transform {t} outside 0..7")
    return np.ascontiguousarray(out)
