"""The models: TRM (and its ablations), HRM and the transformer baselines, behind one step interface
(`trm.models.base`). Importing this package registers every architecture for `build_model` and
`RecursiveModel.from_pretrained`."""

from trm.models.base import RecursiveModel, StepOutput, build_model, load_checkpoint
from trm.models.hrm import HRM
from trm.models.transformer import Transformer
from trm.models.trm import TRM

__all__ = ["HRM", "TRM", "RecursiveModel", "StepOutput", "Transformer", "build_model", "load_checkpoint"]
