"""Pictures of puzzles: titled grids in each task's colours, drawn pixel by pixel with Pillow (so every cell
is crisp and a test can find it): wrong cells outlined in red, changed cells ringed in green, an optional bar
under a grid (a halting probability). `trm eval --show`, `trm solve --show-dir` and the per-step traces
(`trm.trace`) all draw through `paint`. Curves (`trm plot`, `trm compare`, `trm bench --infer`) use
matplotlib through `pyplot`. Both come with `pip install 'trm[viz]'`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from trm.errors import TRMError

WRONG = "#FF0000"  # outline of a wrong cell
CHANGED = "#00FF00"  # ring inside a cell that changed since the previous step
BAR = "#0074D9"  # filled part of a panel's bar
BAR_BACK = "#DDDDDD"
GRID_LINE = "#555555"
MARGIN, GAP, LINE, BAR_HEIGHT = 8, 12, 14, 8  # pixels: sheet border, between panels, a title line, the bar
GRID_PX, MIN_CELL, MAX_CELL, MIN_PANEL = 320, 6, 40, 150  # largest grid side, cell limits, narrowest panel


def square(grid: np.ndarray) -> np.ndarray:
    """A grid as 2-D: Sudoku's flat grids are square."""
    grid = np.asarray(grid)
    if grid.ndim == 1:
        side = math.isqrt(len(grid))
        return grid.reshape(side, side)
    return grid


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; a missing matplotlib is one TRMError line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TRMError("plots need matplotlib: pip install 'trm[viz]'") from None
    return plt


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Write a figure (making its directory) and free it; an unwritable path is one TRMError line."""
    fig.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except OSError as err:
        raise TRMError(f"{path}: cannot write ({err.strerror})") from None
    finally:
        pyplot().close(fig)
    return path


def pil():
    """Pillow's Image and ImageDraw modules; a missing Pillow is one TRMError line."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise TRMError("pictures need Pillow: pip install 'trm[viz]'") from None
    return Image, ImageDraw


@cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size)  # a scalable font with FreeType (Pillow >= 10.1), else the bitmap one


@dataclass
class Panel:
    """One titled grid (1-D grids are read as square); `wrong` and `changed` are cell masks of its shape,
    `bar` a value in [0, 1] drawn under it. The title may hold several lines."""

    title: str
    grid: np.ndarray
    wrong: np.ndarray | None = None
    changed: np.ndarray | None = None
    bar: float | None = None


@dataclass(frozen=True)
class Layout:
    """Where everything goes: `count` equal boxes in rows of `columns`, each with `title_lines` of title, a
    grid of up to `rows` x `cols` cells of `cell` pixels at its top left, and (with `bar`) a bar below."""

    count: int
    columns: int
    rows: int
    cols: int
    cell: int
    title_lines: int
    bar: bool

    @classmethod
    def of(cls, panels: Sequence[Panel], columns: int | None = None, count: int | None = None) -> Layout:
        """The layout fitting every panel's grid; `count` boxes (default one per panel) so that frames of a
        GIF, each a few of the panels, share one size."""
        shapes = [square(p.grid).shape for p in panels]
        rows, cols = max(s[0] for s in shapes), max(s[1] for s in shapes)
        count = count or len(panels)
        cell = max(MIN_CELL, min(MAX_CELL, GRID_PX // max(rows, cols, 1)))
        lines = max(p.title.count("\n") + 1 for p in panels)
        bar = any(p.bar is not None for p in panels)
        return cls(count, min(columns or count, count), rows, cols, cell, lines, bar)

    @property
    def box(self) -> tuple[int, int]:
        width = max(self.cols * self.cell, MIN_PANEL)
        height = self.title_lines * LINE + self.rows * self.cell + (BAR_HEIGHT + 4 if self.bar else 0)
        return width + 1, height + 1

    @property
    def size(self) -> tuple[int, int]:
        (w, h), down = self.box, -(-self.count // self.columns)
        return 2 * MARGIN + self.columns * w + (self.columns - 1) * GAP, 2 * MARGIN + down * h + (down - 1) * GAP

    def origin(self, i: int) -> tuple[int, int]:
        """Top left of box `i`."""
        (w, h), (r, c) = self.box, divmod(i, self.columns)
        return MARGIN + c * (w + GAP), MARGIN + r * (h + GAP)

    def cell_box(self, i: int, r: int, c: int) -> tuple[int, int, int, int]:
        """Pixels (x0, y0, x1, y1), inclusive, of cell (r, c) of the grid in box `i`, lines included."""
        x, y = self.origin(i)
        x0, y0 = x + c * self.cell, y + self.title_lines * LINE + r * self.cell
        return x0, y0, x0 + self.cell, y0 + self.cell

    def bar_box(self, i: int) -> tuple[int, int, int, int]:
        """Pixels (x0, y0, x1, y1), inclusive, of the bar of box `i`, under the tallest grid's place."""
        x, y = self.origin(i)
        y0 = y + self.title_lines * LINE + self.rows * self.cell + 4
        return x, y0, x + max(self.cols * self.cell, MIN_PANEL), y0 + BAR_HEIGHT


def paint(
    panels: Sequence[Panel],
    colours: Sequence[str],
    symbols: str | None = None,
    columns: int | None = None,
    layout: Layout | None = None,
):
    """The panels as one RGB image (a PIL Image). `colours[v]` fills a cell of value v and `symbols[v]`, if
    given, is written in it. Text is drawn without anti-aliasing, so the image holds only the colours named
    here and in `colours` (a GIF keeps them exactly)."""
    Image, ImageDraw = pil()
    layout = layout or Layout.of(panels, columns)
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    cell = layout.cell
    symbol_font = _font(max(8, int(cell * 0.6)))
    for i, p in enumerate(panels):
        x, y = layout.origin(i)
        for k, text in enumerate(p.title.split("\n")):
            draw.text((x, y + k * LINE), text, fill="black", font=_font(LINE - 2))
        grid = square(p.grid)
        if grid.size == 0:
            draw.text((x, y + layout.title_lines * LINE), "(empty)", fill="black", font=_font(LINE - 2))
        wrong = None if p.wrong is None else square(p.wrong)
        changed = None if p.changed is None else square(p.changed)
        inset, ring, edge = max(2, cell // 6), max(2, cell // 8), max(2, cell // 10)
        for (r, c), v in np.ndenumerate(grid):
            x0, y0, x1, y1 = layout.cell_box(i, r, c)
            draw.rectangle((x0, y0, x1, y1), fill=colours[int(v)], outline=GRID_LINE)
            if symbols is not None and symbols[int(v)].strip() and cell >= 14:
                draw.text(((x0 + x1) / 2, (y0 + y1) / 2), symbols[int(v)], fill="black", font=symbol_font, anchor="mm")
            if changed is not None and changed[r, c]:
                draw.rectangle((x0 + inset, y0 + inset, x1 - inset, y1 - inset), outline=CHANGED, width=ring)
            if wrong is not None and wrong[r, c]:
                draw.rectangle((x0, y0, x1, y1), outline=WRONG, width=edge)
        if p.bar is not None:
            x0, y0, x1, y1 = layout.bar_box(i)
            draw.rectangle((x0, y0, x1, y1), fill=BAR_BACK)
            filled = round(min(max(p.bar, 0.0), 1.0) * (x1 - x0))
            if filled:
                draw.rectangle((x0, y0, x0 + filled - 1, y1), fill=BAR)
            draw.line(((x0 + x1) // 2, y0, (x0 + x1) // 2, y1), fill="black")  # the 0.5 threshold
    return image


def _writable(path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TRMError(f"{path.parent}: cannot create ({err.strerror})") from None
    return path


def save_image(image, path: Path) -> Path:
    """Write one image (PNG or any format Pillow knows by the suffix); an unwritable path is one line."""
    path = _writable(path)
    try:
        image.save(path)
    except OSError as err:
        raise TRMError(f"{path}: cannot write ({err.strerror or err})") from None
    return path


def save_gif(frames: Sequence, path: Path, frame_ms: int = 800) -> Path:
    """An animated GIF, one frame per image (all of one size), looping."""
    Image, _ = pil()
    path = _writable(path)
    first, *rest = [f.convert("P", palette=Image.Palette.ADAPTIVE, colors=256) for f in frames]
    try:
        first.save(path, save_all=True, append_images=rest, duration=frame_ms, loop=0, disposal=1)
    except OSError as err:
        raise TRMError(f"{path}: cannot write ({err.strerror or err})") from None
    return path


def save_png(
    path: Path,
    panels: Sequence[Panel | tuple[str, np.ndarray, np.ndarray | None]],
    colours: Sequence[str],
    symbols: str | None = None,
) -> Path:
    """One image of titled grids side by side; `panels` are Panels or (title, grid, wrong-cell mask or None)."""
    panels = [p if isinstance(p, Panel) else Panel(*p) for p in panels]
    return save_image(paint(panels, colours, symbols), path)


def example_png(task, path: Path, question: np.ndarray, pred: np.ndarray, truth: np.ndarray | None) -> Path:
    """Question, prediction (wrong cells outlined) and the true answer of one example, in `task`'s colours."""
    pred = np.asarray(pred)
    panels = [Panel("question", question)]
    wrong = None
    if truth is not None and np.asarray(truth).shape == pred.shape:
        wrong = np.asarray(truth) != pred
    panels.append(Panel("prediction", pred, wrong))
    if truth is not None:
        panels.append(Panel("answer", np.asarray(truth)))
    return save_png(path, panels, task.colours, task.symbols)


def show_examples(checkpoint: Path, model, ds, preds: np.ndarray, n: int, out_dir: Path | None) -> str:
    """The first `n` examples of a split with the model's predictions, as text (and PNGs in `out_dir`)."""
    from trm.tasks import task_for

    task = task_for(checkpoint, model.config)
    parts = []
    for i in range(min(n, len(preds))):
        question, truth, pred = (task.decode(np.asarray(a)) for a in (ds.inputs[i], ds.labels[i], preds[i]))
        parts.append(f"# example {i}\n{task.render_diff(pred, truth, question)}")
        if out_dir is not None:
            parts.append(f"(saved {example_png(task, Path(out_dir) / f'example_{i}.png', question, pred, truth)})")
    return "\n".join(parts)
