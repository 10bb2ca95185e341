"""The training loop: deep supervision with one optimizer step per supervision step, EMA, periodic
evaluation and checkpoints, exact resume.

A run directory holds `config.json` (the TrainConfig), `metrics.jsonl`, `train_state.pt` (everything needed
to continue exactly: raw weights, optimizer and EMA state, step, RNG states, sampler position and the
rolling carry) and `checkpoints/step_<N>/` (inference checkpoints with EMA weights, `save_pretrained`
format), with `checkpoints/last` naming the newest.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from trm.config import ModelConfig, TrainConfig
from trm.data import PuzzleDataset, TrainSampler, load_split
from trm.errors import CheckpointError, ConfigError
from trm.evaluate import evaluate
from trm.inference.engine import InferenceConfig
from trm.models.trm import TRM, pick_device
from trm.optim import EMA, AdamATan2, SignSGDEmbedding, lr_at
from trm.supervision import Carry, DeepSupervision
from trm.tasks import TASK_FILE
from trm.tasks.arc_eval import VoteCollector

STATE_NAME = "train_state.pt"
CONFIG_NAME = "config.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit_model_config(model: ModelConfig, ds: PuzzleDataset) -> ModelConfig:
    """Sizes that the data decides (vocabulary, sequence length, identifiers) come from the data set."""
    meta = ds.metadata
    return model.model_copy(
        update={
            "vocab_size": meta.vocab_size,
            "seq_len": meta.seq_len,
            "num_puzzle_identifiers": meta.num_puzzle_identifiers,
        }
    )


def steps_per_epoch(ds: PuzzleDataset, batch_size: int) -> float:
    """One epoch = one random augmentation of every group, with all its examples (official estimate)."""
    return ds.metadata.total_groups * ds.metadata.mean_puzzle_examples / batch_size


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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class Trainer:
    """Holds everything that changes during training, so it can be saved and restored as one state."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: bool = True):
        if cfg.data is None:
            raise ConfigError("no training data: pass data=DIR (a data set built with `trm data ...`)")
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        self.device = pick_device(cfg.device)
        seed_everything(cfg.seed)
        self.train_ds = load_split(Path(cfg.data), "train")
        eval_root = Path(cfg.eval_data or cfg.data)
        self.eval_ds = load_split(eval_root, "test") if (eval_root / "test").exists() else None
        if cfg.global_batch_size > self.train_ds.num_examples:
            tqdm.write(f"note: global_batch_size {cfg.global_batch_size} > {self.train_ds.num_examples} examples")
        self.model_cfg = fit_model_config(cfg.model, self.train_ds)
        self.model = TRM(self.model_cfg).to(self.device)
        self.sup = DeepSupervision(self.model, cfg.loss_type)
        if cfg.compile:
            self.sup.compile()  # in place, as the official code compiles its loss head: names stay the same
        self.opt = AdamATan2(
            self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
        )
        self.sparse = (
            SignSGDEmbedding(self.model.puzzle_emb, lr=cfg.puzzle_emb_lr, weight_decay=cfg.puzzle_emb_weight_decay)
            if self.model.puzzle_emb is not None
            else None
        )
        self.ema = EMA(self.model, cfg.ema_rate) if cfg.ema else None
        self.sampler = TrainSampler(self.train_ds, cfg.global_batch_size, seed=cfg.seed)
        per_epoch = steps_per_epoch(self.train_ds, cfg.global_batch_size)
        self.total_steps = cfg.max_steps or max(1, int(cfg.epochs * per_epoch))
        self.eval_every = max(1, int(cfg.eval_interval * per_epoch))
        self.step = 0
        self.carry: Carry | None = None

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        carry = None
        if self.carry is not None:
            c = self.carry
            carry = {"y": c.y, "z": c.z, "steps": c.steps, "halted": c.halted, "data": c.data}
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sparse": self.sparse.state_dict() if self.sparse else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "sampler": self.sampler.state_dict(),
            "carry": carry,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.sparse and state["sparse"]:
            self.sparse.load_state_dict(state["sparse"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.sampler.load_state_dict(state["sampler"])
        if state["carry"] is not None:
            c = {k: v for k, v in state["carry"].items()}
            self.carry = Carry(
                c["y"].to(self.device),
                c["z"].to(self.device),
                c["steps"].to(self.device),
                c["halted"].to(self.device),
                {k: v.to(self.device) for k, v in c["data"].items()},
            )
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def save(self) -> Path:
        """Write the resumable training state and an inference checkpoint (EMA weights) for this step."""
        _atomic_save(self.state_dict(), self.run_dir / STATE_NAME)
        ckpt = self.run_dir / "checkpoints" / f"step_{self.step}"
        if self.ema:
            with self.ema.swapped(self.model):
                self.model.save_pretrained(ckpt)
        else:
            self.model.save_pretrained(ckpt)
        task_file = Path(self.cfg.data) / TASK_FILE  # lets `trm solve` parse and render this task
        if task_file.is_file():
            shutil.copyfile(task_file, ckpt / TASK_FILE)
        (self.run_dir / "checkpoints" / "last").write_text(ckpt.name + "\n")
        return ckpt

    # -- loop --------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.carry is None:
            self.carry = self.sup.initial_carry(batch)
        self.carry, losses, metrics = self.sup(self.carry, batch)
        (losses.total / cfg.global_batch_size).backward()
        self.step += 1
        lr_scale = lr_at(self.step, 1.0, cfg.lr_warmup_steps, self.total_steps, cfg.lr_min_ratio)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_scale
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.sparse:
            self.sparse.lr = cfg.puzzle_emb_lr * lr_scale
            self.sparse.step()
            self.sparse.zero_grad()
        if self.ema:
            self.ema.update(self.model)
        metrics["lr"] = torch.tensor(cfg.lr * lr_scale, device=self.device)
        return metrics

    def run_eval(self) -> dict[str, float]:
        if self.eval_ds is None:
            return {}
        cfg = self.cfg
        bar = tqdm(
            total=min(self.eval_ds.num_examples, cfg.eval_max_examples or math.inf),
            desc="eval",
            leave=False,
            disable=not self.progress,
            unit="ex",
        )
        votes = VoteCollector.for_data(self.eval_ds.root)  # ARC data: also the voting score
        with self.ema.swapped(self.model) if self.ema else contextlib.nullcontext():
            res = evaluate(
                self.model,
                self.eval_ds,
                cfg.global_batch_size,
                inference=InferenceConfig(
                    policy=("q-continue" if cfg.model.q_continue else "q") if cfg.eval_halt else "fixed"
                ),
                max_examples=cfg.eval_max_examples,
                loss_type=cfg.loss_type,
                progress=bar.update,
                on_batch=votes,
            )
        bar.close()
        if votes is not None and (arc_score := votes.result()) is not None:
            res.metrics.update(arc_score.metrics())
        return res.metrics

    def fit(self) -> dict[str, float]:
        cfg = self.cfg
        logger = MetricsLogger(self.run_dir, cfg)
        sums: dict[str, torch.Tensor] = {}  # on the device: no host sync per step, only per log line
        window = 0
        last_eval: dict[str, float] = {}
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not self.progress, unit="step")
        batches = iter(self.sampler)
        self.model.train()
        start, start_step = time.perf_counter(), self.step
        try:
            while self.step < self.total_steps:
                metrics = self.train_step(next(batches))
                for k, v in metrics.items():
                    v = v.detach().float()  # float64 is missing on MPS
                    sums[k] = sums[k] + v if k in sums else v
                window += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    logged = train_log_metrics({k: float(v) for k, v in sums.items()}, cfg.global_batch_size, window)
                    logged["epoch"] = self.sampler.epoch
                    logged["steps_per_s"] = (self.step - start_step) / (time.perf_counter() - start)
                    logger.log("train", self.step, logged)
                    bar.set_postfix(loss=f"{logged['lm_loss']:.3f}", exact=f"{logged['exact_accuracy']:.3f}")
                    sums, window = {}, 0
                periodic = self.step % self.eval_every == 0 and self.total_steps - self.step >= self.eval_every // 2
                if periodic or self.step == self.total_steps:
                    last_eval = self.run_eval()
                    if last_eval:
                        logger.log("eval", self.step, last_eval)
                        tqdm.write(f"step {self.step}: " + format_metrics(last_eval))
                    self.save()
        finally:
            bar.close()
            logger.close()
        return last_eval


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


def save_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_NAME).write_text(cfg.model_dump_json(indent=2) + "\n")


def train(cfg: TrainConfig, run_dir: Path, progress: bool = True) -> dict[str, float]:
    """Start a fresh run in `run_dir` (which must not already hold one)."""
    if (run_dir / STATE_NAME).exists():
        raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --run-dir")
    save_run_config(run_dir, cfg)
    return Trainer(cfg, run_dir, progress).fit()


def resume(run_dir: Path, progress: bool = True) -> dict[str, float]:
    """Continue a run exactly where its last checkpoint left it."""
    cfg_path, state_path = run_dir / CONFIG_NAME, run_dir / STATE_NAME
    if not cfg_path.is_file() or not state_path.is_file():
        raise CheckpointError(f"{run_dir}: no run to resume (needs {CONFIG_NAME} and {STATE_NAME})")
    cfg = TrainConfig.model_validate_json(cfg_path.read_text())
    trainer = Trainer(cfg, run_dir, progress)
    try:
        state = torch.load(state_path, map_location=trainer.device, weights_only=False)
    except Exception as err:  # pickle and zip errors vary; the message is what matters
        raise CheckpointError(f"{state_path}: corrupt training state ({err})") from None
    trainer.load_state_dict(state)
    return trainer.fit()
