"""What every puzzle family provides to the CLI, the inference engine and the server."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from trm.errors import TRMError


class Task(Protocol):
    name: str
    colours: tuple[str, ...]  # PNG colour of each cell value of a decoded grid
    symbols: str | None  # character drawn in each cell value's PNG cell, or None
    checkable: bool  # answers can be checked without the solution (`check_tokens`)

    def split(self, text: str) -> list[str]:
        """The puzzles in a file or stdin, as texts for `parse`."""

    def parse(self, text: str) -> np.ndarray:
        """A puzzle from user text; raises a TRMError subclass with one clear line."""

    def encode(self, puzzle: np.ndarray) -> np.ndarray:
        """Model input tokens [seq_len]."""

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Model output tokens [seq_len] back to a grid."""

    def is_solution(self, answer: np.ndarray, puzzle: np.ndarray) -> bool: ...

    def check_tokens(self, preds: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Batched `is_solution` on tokens: predictions [B, L] against inputs [B, L] -> bool [B]; the inference
        engine's checker (halting policy `valid`, selection `valid`)."""

    def format(self, grid: np.ndarray) -> str:
        """One line."""

    def render(self, grid: np.ndarray, puzzle: np.ndarray | None = None) -> str:
        """Several lines, for a terminal."""

    def render_diff(self, pred: np.ndarray, truth: np.ndarray, question: np.ndarray | None = None) -> str:
        """A prediction with the cells that differ from the true answer marked, and a verdict line."""


def download_hf_csv(repo_id: str, split: str, error: type[TRMError], cache_dir: Path | None = None) -> Path:
    """`<split>.csv` of a Hugging Face data set (hub-cached); a missing hub package or no network is one
    `error` line. The tasks' public data sets (Sudoku-Extreme, Maze-Hard) are all in this CSV form."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise error(f"downloading {repo_id} needs huggingface_hub: pip install 'trm[hf]'") from None
    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id,
                filename=f"{split}.csv",
                repo_type="dataset",
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        )
    except Exception as err:  # offline, auth and hub errors all mean the same to the user
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(f"cannot download {repo_id} {split}.csv (offline?): {first}") from None
