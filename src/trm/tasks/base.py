"""What every puzzle family provides to the CLI, the inference engine and the server."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Task(Protocol):
    name: str

    def split(self, text: str) -> list[str]:
        """The puzzles in a file or stdin, as texts for `parse`."""

    def parse(self, text: str) -> np.ndarray:
        """A puzzle from user text; raises a TRMError subclass with one clear line."""

    def encode(self, puzzle: np.ndarray) -> np.ndarray:
        """Model input tokens [seq_len]."""

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Model output tokens [seq_len] back to a grid."""

    def is_solution(self, answer: np.ndarray, puzzle: np.ndarray) -> bool: ...

    def format(self, grid: np.ndarray) -> str:
        """One line."""

    def render(self, grid: np.ndarray, puzzle: np.ndarray | None = None) -> str:
        """Several lines, for a terminal."""
