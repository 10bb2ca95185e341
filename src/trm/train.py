"""The training loop: deep supervision with one optimizer step per supervision step, EMA, periodic
evaluation and checkpoints, exact resume; data-parallel under torchrun, with gradient accumulation, a
wall-clock budget, a depth curriculum and warm starts.

A run directory holds `config.json` (the TrainConfig), `metrics.jsonl`, `train_state.pt` (everything needed
to continue exactly: raw weights, optimizer and EMA state, step, RNG states, sampler position and the
rolling carry of the whole global batch) and `checkpoints/step_<N>/` (inference checkpoints with EMA
weights, `save_pretrained` format), with `checkpoints/last` naming the newest.

Data parallel and accumulation keep the mathematics of one process with one batch of `global_batch_size`
rows: each of the W processes takes its contiguous slice of every global batch and splits it into
micro-batches of `micro_batch_size` rows, each with its own rolling carry; ACT exploration is drawn for the
whole global batch (`exploration_min_steps`) and sliced; gradients are summed over micro-batches and
averaged over processes by DDP, the loss being scaled so the result is the sum over the global batch
divided by its size (official); the puzzle-embedding rows and gradients are gathered over micro-batches
and processes before the sign-SGD step. Only rank 0 logs and writes files.

Fault tolerance (`trm.run_state`): the state is also saved every `save_every` seconds of the run and when
SIGINT or SIGTERM arrives, always atomically and with a checksum, never with NaN or infinite weights or
losses; it includes the logging window in progress, so a run resumed from any step logs and ends exactly as
an uninterrupted one. Resuming first removes what a kill in the middle of a write left behind and drops the
metric lines logged after the state was saved.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from pydantic import ValidationError
from tqdm import tqdm

from trm import distributed
from trm.checkpoint import warm_start
from trm.config import ModelConfig, TrainConfig, validation_message
from trm.data import PuzzleDataset, TrainSampler, load_split
from trm.distributed import Dist
from trm.errors import CheckpointError, ConfigError
from trm.evaluate import evaluate
from trm.inference.engine import InferenceConfig
from trm.integrity import write_atomic
from trm.models import build_model
from trm.models.base import pick_device
from trm.optim import EMA, AdamATan2, SignSGDEmbedding, cosine_scale
from trm.progress import progress
from trm.run_state import (
    CONFIG_NAME,
    STATE_NAME,
    RunState,
    StopSignals,
    TrainingInterrupted,
    clean_partial_writes,
    load_shared_state,
    run_dir_lock,
)
from trm.supervision import Carry, DeepSupervision, exploration_min_steps
from trm.tasks.arc_eval import VoteCollector
from trm.train_log import METRICS_NAME, MetricsLogger, format_metrics, train_log_metrics


class EvalStopped(Exception):
    """A stop signal arrived during an evaluation (one process): the trainer saves its state and stops."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


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


def depth_at(cfg: TrainConfig, progress: float) -> tuple[int, int, int]:
    """(T, n, N_sup) at this fraction of training: the first curriculum stage not yet over, else the model's."""
    m = cfg.model
    for stage in cfg.depth_schedule:
        if progress < stage.until:
            return stage.T or m.T, stage.n or m.n, stage.N_sup or m.N_sup
    return m.T, m.n, m.N_sup


class Trainer(RunState):
    """Holds everything that changes during training, so it can be saved and restored as one state."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: bool = True, dist: Dist | None = None):
        if cfg.data is None:
            raise ConfigError("no training data: pass data=DIR (a data set built with `trm data ...`)")
        self.dist = d = dist or Dist(device=pick_device(cfg.device))
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress and d.is_main
        self.device = d.device
        B = cfg.global_batch_size
        if B % d.world_size:
            raise ConfigError(f"global_batch_size {B} is not a multiple of the {d.world_size} processes")
        self.local_batch = B // d.world_size
        self.micro_batch = cfg.micro_batch_size or self.local_batch
        if self.local_batch % self.micro_batch:
            raise ConfigError(
                f"micro_batch_size {self.micro_batch} does not divide the {self.local_batch} rows each of the "
                f"{d.world_size} process(es) takes of global_batch_size {B}"
            )
        seed_everything(cfg.seed)
        with distributed.together(d):  # each machine reads its own copy of the data and of init_from
            self.train_ds = load_split(Path(cfg.data), "train")
            eval_root = Path(cfg.eval_data or cfg.data)
            self.eval_ds = load_split(eval_root, "test") if (eval_root / "test").exists() else None
            if self.train_ds.num_examples < B:
                self.say(f"note: global_batch_size {B} > {self.train_ds.num_examples} examples")
            self.model_cfg = fit_model_config(cfg.model, self.train_ds)
            self.model = build_model(self.model_cfg, self.device)
            if cfg.init_from:
                for line in warm_start(self.model, cfg.init_from):
                    self.say(line)
        self.model.to(self.device)
        self.sup = DeepSupervision(self.model, cfg.loss_type, cfg.supervision_decay)
        if cfg.compile:
            self.sup.compile()  # in place, as the official code compiles its loss head: names stay the same
        self.step_fn = distributed.data_parallel(d, self.sup)
        self.opt = AdamATan2(
            self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
        )
        self.sparse = (
            SignSGDEmbedding(self.model.puzzle_emb, lr=cfg.puzzle_emb_lr, weight_decay=cfg.puzzle_emb_weight_decay)
            if self.model.puzzle_emb is not None
            else None
        )
        self.ema = EMA(self.model, cfg.ema_rate) if cfg.ema else None
        self.sampler = TrainSampler(self.train_ds, B, seed=cfg.seed, rank=d.rank, world_size=d.world_size)
        per_epoch = steps_per_epoch(self.train_ds, B)
        epochs_steps = None if cfg.max_time else max(1, int(cfg.epochs * per_epoch))  # a budget replaces epochs
        self.total_steps: int | None = cfg.max_steps or epochs_steps
        self.eval_every = max(1, int(cfg.eval_interval * per_epoch))
        self.step = 0
        self.elapsed = 0.0  # training seconds spent by earlier processes of this run (resume)
        self._t0 = time.perf_counter()
        self._saved_at = -1  # the step of the newest checkpoint
        self._state_at, self._state_clock = -1, 0.0  # the step and run clock of the newest saved state
        self._start_step = 0
        self.carries: list[Carry | None] = [None] * (self.local_batch // self.micro_batch)
        self._sums: dict[str, torch.Tensor] = {}  # the logging window so far, on the device (no sync per step)
        self._window = 0
        self.logger: MetricsLogger | None = None  # rank 0's, while fit runs
        self._metrics_lines: int | None = None  # lines of the metrics log when the resumed state was saved

    def say(self, line: str) -> None:
        if self.dist.is_main:
            tqdm.write(line)

    # -- schedule ----------------------------------------------------------------------------------------
    def _clock(self) -> float:
        """Seconds of this run so far on this process's clock (for logs and the bar)."""
        return self.elapsed + time.perf_counter() - self._t0

    def elapsed_now(self) -> float:
        """Seconds of this run so far; under torchrun rank 0's clock, so every rank decides alike."""
        return distributed.broadcast_float(self.dist, self._clock())

    def progress_at(self, step: int, elapsed: float) -> float:
        """The fraction of the run done: of max_steps (or the epochs), of max_time, whichever is further."""
        done = [step / self.total_steps] if self.total_steps else []
        if self.cfg.max_time:
            done.append(elapsed / self.cfg.max_time)
        return min(1.0, max(done))

    def lr_scale(self, step: int, elapsed: float) -> float:
        """Linear warm-up over lr_warmup_steps, then cosine to lr_min_ratio over the rest of the run (official
        schedule in steps; over the budget under max_time)."""
        cfg, warm = self.cfg, self.cfg.lr_warmup_steps
        if step < warm:
            return step / warm
        if cfg.max_time:
            return cosine_scale(self.progress_at(step, elapsed), cfg.lr_min_ratio)
        return cosine_scale((step - warm) / max(1, self.total_steps - warm), cfg.lr_min_ratio)

    def _set_depth(self, T: int, n: int, N_sup: int) -> None:
        self.model.T, self.model.n, self.sup.N_sup = T, n, N_sup

    def _full_depth(self) -> None:
        m = self.model_cfg
        self._set_depth(m.T, m.n, m.N_sup)

    # -- loop --------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor], elapsed: float = 0.0) -> dict[str, torch.Tensor]:
        """One optimizer step on this process's rows of one global batch, micro-batch by micro-batch."""
        cfg, d = self.cfg, self.dist
        T, n, N_sup = depth_at(cfg, self.progress_at(self.step, elapsed))
        self._set_depth(T, n, N_sup)
        lo = d.rank * self.local_batch
        explore = exploration_min_steps(
            cfg.seed, self.step, cfg.global_batch_size, N_sup, cfg.model.halt_exploration_prob
        )[lo : lo + self.local_batch].to(self.device, non_blocking=True)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        sums: dict[str, torch.Tensor] = {}
        last = len(self.carries) - 1
        for m in range(last + 1):
            rows = slice(m * self.micro_batch, (m + 1) * self.micro_batch)
            chunk = {k: v[rows] for k, v in batch.items()} if last else batch
            if self.carries[m] is None:
                self.carries[m] = self.sup.initial_carry(chunk)
            # DDP averages gradients at the last micro-batch's backward only
            accumulate = self.step_fn.no_sync() if d.active and m < last else contextlib.nullcontext()
            with accumulate:
                self.carries[m], losses, metrics = self.step_fn(self.carries[m], chunk, explore[rows])
                (losses.total / self.local_batch).backward()
            if self.sparse:
                self.sparse.collect()
            for k, v in metrics.items():
                sums[k] = sums[k] + v if k in sums else v
        self.step += 1
        lr_scale = self.lr_scale(self.step, elapsed)
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
        sums["lr"] = torch.full((), cfg.lr * lr_scale, device=self.device)  # a fill: no host-to-GPU copy, no sync
        return sums

    def run_eval(self, stop: StopSignals | None = None) -> dict[str, float]:
        """The held-out metrics (EMA weights). In one process a stop signal abandons the evaluation at the next
        pool of finished puzzles (EvalStopped), so that a signal during a long evaluation is answered within
        seconds; under torchrun the ranks finish it together first (stopping alone, one would hang the rest)."""
        if self.eval_ds is None:
            return {}
        cfg, d = self.cfg, self.dist
        self._full_depth()
        bar = progress(
            total=min(self.eval_ds.num_examples, cfg.eval_max_examples or math.inf),
            desc="eval",
            leave=False,
            disable=not self.progress,
            unit="ex",
        )
        votes = VoteCollector.for_data(self.eval_ds.root)  # ARC data: also the voting score

        def check() -> None:
            if stop is not None and stop.signum is not None and not d.active:
                raise EvalStopped(stop.signum)

        def finished(k: int) -> None:
            bar.update(min(k * d.world_size, bar.total - bar.n))
            check()

        with bar, self.ema.swapped(self.model) if self.ema else contextlib.nullcontext():
            check()
            res = evaluate(
                self.model,
                self.eval_ds,
                self.micro_batch * d.world_size,  # the pool fits where a training micro-batch fits
                inference=InferenceConfig(
                    policy=("q-continue" if cfg.model.q_continue else "q") if cfg.eval_halt else "fixed"
                ),
                max_examples=cfg.eval_max_examples,
                loss_type=cfg.loss_type,
                progress=finished,
                on_batch=votes,
                rank=d.rank,
                world_size=d.world_size,
            )
        if votes is not None and (arc_score := votes.result()) is not None:
            res.metrics.update(arc_score.metrics())
        return res.metrics

    def _log_train(self) -> dict:
        """Average the logging window's sums over the global batch (summed over ranks: one collective), and
        start a new window; a NaN or infinite loss stops the run here, before anything is saved."""
        sums, window = self._sums, self._window
        self._sums, self._window = {}, 0
        lr = sums.pop("lr")
        keys = sorted(sums)
        packed = distributed.all_reduce_sum(self.dist, torch.stack([sums[k].double() for k in keys]))
        totals = dict(zip(keys, packed.tolist(), strict=True)) | {"lr": float(lr)}
        if bad := [k for k, v in totals.items() if not math.isfinite(v)]:
            self._diverged(f"{bad[0]} is {totals[bad[0]]}")
        logged = train_log_metrics(totals, self.cfg.global_batch_size, window)
        logged["epoch"] = self.sampler.epoch
        logged["elapsed_s"] = self._clock()
        logged["steps_per_s"] = (self.step - self._start_step) / max(1e-9, time.perf_counter() - self._t0)
        if self.logger is not None:
            self.logger.log("train", self.step, logged)
        return logged

    def _finished(self, elapsed: float) -> bool:
        if self.total_steps is not None and self.step >= self.total_steps:
            return True
        return self.cfg.max_time is not None and elapsed >= self.cfg.max_time

    def _poll(self, stop: StopSignals) -> tuple[float, int | None]:
        """Rank 0's run clock and the signal, if any rank got one: one small collective under torchrun, so
        every rank decides alike when the budget is spent, when to save and when to stop."""
        d = self.dist
        if not d.active:
            return self._clock(), stop.signum
        t = torch.tensor([self._clock() if d.is_main else 0.0, float(stop.signum is not None)], dtype=torch.float64)
        clock, signalled = distributed.all_reduce_sum(d, t.to(self.device, non_blocking=True)).tolist()
        return clock, (stop.signum or signal.SIGTERM) if signalled else None

    def _interrupt(self, signum: int) -> NoReturn:
        if self._state_at != self.step:
            self.save(checkpoint=False)
        raise TrainingInterrupted(
            f"interrupted at step {self.step} ({signal.Signals(signum).name}), state saved; "
            f"resume with trm train --resume {self.run_dir}",
            signum,
        )

    def _prepare_run_dir(self) -> MetricsLogger:
        """Bring the run directory back to the saved step: what a kill mid-write left is cleaned up, and the
        metric lines logged after the state was saved (or half-written) are dropped, as the run logs them
        again."""
        for line in clean_partial_writes(self.run_dir, (STATE_NAME, CONFIG_NAME, METRICS_NAME)):
            self.say(line)
        logger = MetricsLogger(self.run_dir, self.cfg)
        logger.rewind(self.step, self._metrics_lines)
        return logger

    def fit(self) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        self.logger = self._prepare_run_dir() if d.is_main else None
        by_time = self.total_steps is None  # a pure time budget: the bar counts seconds
        bar = progress(
            total=round(cfg.max_time) if by_time else self.total_steps,
            initial=round(self.elapsed) if by_time else self.step,
            desc="train",
            disable=not self.progress,
            unit="s" if by_time else "step",
        )
        self.model.train()
        self._t0, self._start_step = time.perf_counter(), self.step
        try:
            with StopSignals(notice=self.progress) as stop:
                return self._loop(stop, bar)
        finally:
            bar.close()
            if self.logger is not None:
                self.logger.close()
                self.logger = None

    def _loop(self, stop: StopSignals, bar: tqdm) -> dict[str, float]:
        """Train to the end of the run; the final evaluation's metrics."""
        cfg, by_time = self.cfg, self.total_steps is None
        last_eval: dict[str, float] = {}
        batches = iter(self.sampler)
        elapsed, _ = self._poll(stop)
        if self.step and self._saved_at != self.step and self._eval_due() and not self._finished(elapsed):
            last_eval = self._evaluate_and_save(stop)  # a signal cut this evaluation short: run it again
            elapsed, signum = self._poll(stop)  # as after any evaluation: the clock moved, a signal may have come
            if signum is not None:
                self._interrupt(signum)
        while not self._finished(elapsed):
            sums = self._sums  # on the device: no host sync per step, only per log line
            for k, v in self.train_step(next(batches), elapsed).items():
                v = v.detach().float()  # float64 is missing on MPS
                sums[k] = sums[k] + v if k in sums else v
            self._window += 1
            bar.update(round(self._clock()) - bar.n if by_time else 1)
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                logged = self._log_train()
                bar.set_postfix(loss=f"{logged['lm_loss']:.3f}", exact=f"{logged['exact_accuracy']:.3f}",
                                steps_per_s=f"{logged['steps_per_s']:.2f}")  # fmt: skip
            if self._eval_due():
                last_eval = self._evaluate_and_save(stop)
            elapsed, signum = self._poll(stop)
            if signum is not None:
                self._interrupt(signum)
            if elapsed - self._state_clock >= cfg.save_every and not self._finished(elapsed):
                self.save(checkpoint=False)  # (at the end, the final save follows)
        if self._window:
            self._log_train()
        if self._saved_at != self.step:  # the end of the run: final evaluation and checkpoint
            last_eval = self._evaluate_and_save(stop)
        return last_eval

    def _eval_due(self) -> bool:
        """A periodic evaluation at this step (none within half an interval of the end, which has its own)."""
        remaining = self.total_steps - self.step if self.total_steps else math.inf
        return self.step % self.eval_every == 0 and remaining >= self.eval_every // 2

    def _evaluate_and_save(self, stop: StopSignals) -> dict[str, float]:
        """Evaluate, log, write the checkpoint and the state; a signal during the evaluation saves the state
        and stops (the evaluation runs again on resume)."""
        clock = self._clock()
        try:
            metrics = self.run_eval(stop)
        except EvalStopped as stopped:
            self._interrupt(stopped.signum)
        if metrics and self.logger is not None:
            self.logger.log("eval", self.step, {**metrics, "elapsed_s": clock})
            self.say(f"step {self.step}: " + format_metrics(metrics))
        self.model.train()
        self.save()
        return metrics


def save_run_config(run_dir: Path, cfg: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / CONFIG_NAME, (cfg.model_dump_json(indent=2) + "\n").encode(), "run config")


def train(cfg: TrainConfig, run_dir: Path, progress: bool = True) -> dict[str, float]:
    """Start a fresh run in `run_dir` (which must not already hold one); under torchrun, data-parallel."""
    d = distributed.init(cfg.device)

    def work() -> dict[str, float]:
        trainer = Trainer(cfg, run_dir, progress, d)  # checks the config against the data before writing
        with run_dir_lock(d, run_dir):  # checked under the lock: another run may be starting there right now
            if distributed.broadcast_object(d, (run_dir / STATE_NAME).exists()):  # rank 0's directory decides
                raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another --run-dir")
            if d.is_main:  # with the sizes the data decided (a seq_len=... given is replaced by the data's)
                save_run_config(run_dir, cfg.model_copy(update={"model": trainer.model_cfg}))
            return trainer.fit()

    return distributed.run_then_leave(d, work)


def resume(run_dir: Path, progress: bool = True) -> dict[str, float]:
    """Continue a run exactly where its last saved state left it (with any number of processes); a run
    stopped before its first save starts again from its config.

    Under torchrun every rank continues from global rank 0's config and state, so the other machines need the
    data, not a copy of the run directory. A rank joins the process group on the device its own copy of the
    config names, without one on the device `auto` finds: a run on the CPU of machines that have GPUs needs
    the config on every machine (gloo and NCCL ranks cannot meet)."""
    cfg_path = run_dir / CONFIG_NAME
    text, problem = None, None
    if cfg_path.is_file():
        try:
            text = _read_run_config(cfg_path)
            hint = _parse_run_config(cfg_path, text).device
        except CheckpointError as err:  # raised below on every rank, once all have joined
            problem, hint = str(err), "auto"
    else:
        hint = "auto"
    if not distributed.launched_under_torchrun() and (problem or text is None):
        raise CheckpointError(problem or f"{run_dir}: no run to resume (needs {CONFIG_NAME})")
    d = distributed.init(hint)

    def work() -> dict[str, float]:
        text0, problem0 = distributed.broadcast_object(d, (text, problem))  # global rank 0's
        if problem0 or text0 is None:
            raise CheckpointError(problem0 or f"{run_dir}: no run to resume on global rank 0 (needs {CONFIG_NAME})")
        cfg = _parse_run_config(cfg_path, text0)
        if not distributed.all_agree(d, pick_device(cfg.device).type == d.device.type):
            raise ConfigError(f"the run trains on {cfg.device}, and not every process joined on that device type")
        trainer = Trainer(cfg, run_dir, progress, d)
        with run_dir_lock(d, run_dir):
            state = load_shared_state(d, run_dir / STATE_NAME)
            if state is None:
                trainer.say(f"{run_dir}: no state saved yet; the run starts again from its {CONFIG_NAME}")
            else:
                trainer.load_state_dict(state)
            return trainer.fit()

    return distributed.run_then_leave(d, work)


def _read_run_config(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the run config ({err.strerror})") from None


def _parse_run_config(path: Path, text: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate_json(text)
    except ValidationError as err:
        raise CheckpointError(f"{path}: not a run config ({validation_message(err)})") from None
