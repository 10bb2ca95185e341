"""What a training run reports: the metrics log (JSONL always; TensorBoard and Weights & Biases when asked
for and installed) and the official way of averaging train metrics over a logging window."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm

from trm.config import TrainConfig
from trm.errors import CheckpointError
from trm.integrity import write_atomic

METRICS_NAME = "metrics.jsonl"


class MetricsLogger:
    """JSONL always; TensorBoard and Weights & Biases when asked for and installed."""

    def __init__(self, run_dir: Path, cfg: TrainConfig):
        self.path = run_dir / METRICS_NAME
        self.lines = 0  # written by this run so far (counted from the kept ones after a rewind)
        self.tb = self.wandb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                tqdm.write("tensorboard is not installed (pip install 'trm[logging]'); logging to JSONL only")
        if cfg.wandb:
            try:
                import wandb

                self.wandb = wandb.init(project="trm", name=run_dir.name, config=cfg.model_dump(), dir=str(run_dir))
            except ImportError:
                tqdm.write("wandb is not installed (pip install 'trm[logging]'); logging to JSONL only")

    def rewind(self, step: int, lines: int | None) -> None:
        """Keep what the log held when the state being resumed was saved, its first `lines` lines (for a state
        that did not count them: the lines up to its `step`); what a stopped process logged after the save,
        or was killed in the middle of, goes, as the resumed run logs it again. Rewritten atomically."""
        try:
            logged = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{self.path}: cannot read the metrics log ({err})") from None
        keep = logged[:lines] if lines is not None else [line for line in logged if _step_of(line) <= step]
        self.lines = len(keep)
        if self.lines < len(logged):
            write_atomic(self.path, "".join(line + "\n" for line in keep).encode(), "metrics log")

    def log(self, split: str, step: int, metrics: dict[str, float]) -> None:
        try:
            with self.path.open("a") as f:
                f.write(json.dumps({"split": split, "step": step, **metrics}) + "\n")
            self.lines += 1
        except OSError as err:
            raise CheckpointError(f"{self.path}: cannot write the metrics log ({err.strerror})") from err
        for key, value in metrics.items():
            if self.tb is not None:
                self.tb.add_scalar(f"{split}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{split}/{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _step_of(line: str) -> float:
    """The step of a metrics line; infinite for a line that is not one (half-written when a run was killed)."""
    try:
        row = json.loads(line)
    except ValueError:
        return math.inf
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else math.inf


def train_log_metrics(sums: dict[str, float], batch_size: int, n_steps: int) -> dict[str, float]:
    """Official train logging: losses per sample of the batch, the rest per halted sample; both averaged
    over the `n_steps` steps of the logging window."""
    count = max(sums.get("count", 0.0), 1.0)
    out = {}
    for k, v in sums.items():
        if k.endswith("_loss"):
            out[k] = v / batch_size / n_steps
        elif k == "lr":
            out[k] = v / n_steps
        elif k != "count":
            out[k] = v / count
    out["count"] = sums.get("count", 0.0) / n_steps
    return out


def format_metrics(metrics: dict[str, float]) -> str:
    keys = ["ARC/pass@1", "ARC/pass@2", "exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss"]
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
