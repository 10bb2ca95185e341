"""What a training run reports: the metrics log (JSONL always; TensorBoard and Weights & Biases when asked
for and installed) and the official way of averaging train metrics over a logging window."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from trm.config import TrainConfig


class MetricsLogger:
    """JSONL always; TensorBoard and Weights & Biases when asked for and installed."""

    def __init__(self, run_dir: Path, cfg: TrainConfig):
        self.path = run_dir / "metrics.jsonl"
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

    def log(self, split: str, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"split": split, "step": step, **metrics}) + "\n")
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
