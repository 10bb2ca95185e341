"""trm: Tiny Recursive Models (TRM) and HRM for grid puzzles, from a laptop CPU to a GPU node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trm.config import ModelConfig, TrainConfig
    from trm.models.trm import TRM

__version__ = "0.1.0"
__all__ = ["TRM", "ModelConfig", "TrainConfig", "__version__"]

_LAZY = {"TRM": "trm.models.trm", "ModelConfig": "trm.config", "TrainConfig": "trm.config"}


def __getattr__(name: str) -> Any:
    """`trm.TRM` and the configs load torch and pydantic on first use, so that `trm` (the CLI) starts before
    torch is imported: a Ctrl-C during that import is then the CLI's one line, not a traceback."""
    if name not in _LAZY:
        raise AttributeError(f"module 'trm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
