"""trm: Tiny Recursive Models (TRM) and HRM for grid puzzles, from a laptop CPU to a GPU node."""

from trm.config import ModelConfig, TrainConfig
from trm.models.trm import TRM

__version__ = "0.1.0"
__all__ = ["TRM", "ModelConfig", "TrainConfig", "__version__"]
