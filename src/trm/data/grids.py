"""What grid puzzles share: the 8 symmetries of the square (the official ids and order), and the official
30x30 canvas that ARC rows are drawn on.

Canvas tokens: 0 PAD, 1 EOS, 2..11 colours 0..9. A grid sits at an offset (top-left unless translated); a
row of EOS directly below it and a column of EOS directly right of it (where they fit) mark its shape.
"""

from __future__ import annotations

import numpy as np

from trm.errors import TRMError

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # t -> the transform that undoes t
TRANSPOSING = (1, 3, 6, 7)  # dihedral ids that swap a grid's height and width

MAX_SIZE = 30
SEQ_LEN = MAX_SIZE * MAX_SIZE
PAD, EOS, COLOUR0 = 0, 1, 2  # token of colour c is c + COLOUR0


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


def draw(canvas: np.ndarray, grid: np.ndarray, offset: tuple[int, int]) -> None:
    """Draw a grid of colours 0..9 into a [30, 30] token canvas at `offset`, with its EOS row and column."""
    (r, c), (h, w) = offset, grid.shape
    canvas[r : r + h, c : c + w] = grid + COLOUR0
    if r + h < MAX_SIZE:
        canvas[r + h, c : c + w] = EOS
    if c + w < MAX_SIZE:
        canvas[r : r + h, c + w] = EOS
