"""Pictures of puzzles: a question, the model's answer and the true answer, as terminal text (each task's
own `render_diff`) and as PNG (matplotlib, optional: `pip install 'trm[viz]'`), cells in the task's colours
and wrong cells outlined in red."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trm.errors import TRMError

WRONG = "#FF0000"


def _square(grid: np.ndarray) -> np.ndarray:
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
        raise TRMError("pictures need matplotlib: pip install 'trm[viz]'") from None
    return plt


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Write a figure (making its directory) and free it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def save_png(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    colours: Sequence[str],
    symbols: str | None = None,
) -> Path:
    """One image of titled grids side by side; `panels` holds (title, grid of cell values, wrong-cell mask or
    None). `colours[v]` fills a cell of value v; `symbols[v]`, if given, is written in it."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    cmap = ListedColormap(list(colours))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, grid, wrong) in zip(axes[0], panels, strict=True):
        grid = _square(grid)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if grid.size == 0:
            ax.text(0.5, 0.5, "(empty)", ha="center", va="center")
            continue
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest")
        ax.set_xticks(np.arange(-0.5, grid.shape[1]), minor=True)
        ax.set_yticks(np.arange(-0.5, grid.shape[0]), minor=True)
        ax.grid(which="minor", color="#555555", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
        if symbols is not None:
            for (r, c), v in np.ndenumerate(grid):
                ax.text(c, r, symbols[int(v)], ha="center", va="center", fontsize=max(4, 90 // max(grid.shape)))
        if wrong is not None:
            for r, c in zip(*np.nonzero(_square(wrong)), strict=True):
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=WRONG, linewidth=1.5))
    return save_figure(fig, path, dpi=100)


def example_png(task, path: Path, question: np.ndarray, pred: np.ndarray, truth: np.ndarray | None) -> Path:
    """Question, prediction (wrong cells outlined) and the true answer of one example, in `task`'s colours."""
    pred = np.asarray(pred)
    panels: list[tuple[str, np.ndarray, np.ndarray | None]] = [("question", question, None)]
    wrong = None
    if truth is not None and np.asarray(truth).shape == pred.shape:
        wrong = np.asarray(truth) != pred
    panels.append(("prediction", pred, wrong))
    if truth is not None:
        panels.append(("answer", np.asarray(truth), None))
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
