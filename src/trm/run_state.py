"""Run-directory files that survive a crash, a kill or a full disk, the signals that stop a run cleanly, and
`RunState`, what a `trm.train.Trainer` saves and restores.

Every write goes to a temporary file (or directory) beside its target, is flushed and fsynced, and replaces
the target in one rename, the directory then fsynced: a reader finds the old file or the new one, never half
of one, and a failed write (a full disk) leaves the old one as it was. The training state ends with the
SHA-256 of its bytes, checked when it is read; checkpoint directories carry a `SHA256SUMS` file
(`sha256sum -c SHA256SUMS` checks one, `verify_checksums` from Python).

`TRM_TEST_SLOW_SAVE=SECONDS` pauses half-way through writing the training state, so tests can kill a run
in the middle of a save at a moment they choose.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np
import torch
from safetensors import SafetensorError

from trm import distributed
from trm.errors import CheckpointError, ConfigError, TRMError
from trm.integrity import TMP, cannot_save, fsync_dir, write_atomic, write_checksums
from trm.supervision import Carry
from trm.tasks import TASK_FILE

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]

STATE_NAME = "train_state.pt"
CONFIG_NAME = "config.json"
LOCK_NAME = ".lock"
CARRY_FIELDS = ("y", "z", "steps", "halted")
OLD = ".old"  # the suffix of a checkpoint being replaced
_TRAILER = b"\n#trm-sha256:"  # + 64 hex digits + b"\n" after the torch.save bytes
_TRAILER_LEN = len(_TRAILER) + 65


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after its state was saved; the CLI prints the message and exits
    with 128 + the signal number (a KeyboardInterrupt, so it passes through every `except Exception`)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class TrainingDiverged(TRMError):
    """The loss or the weights became NaN or infinite; the state on disk is the last good one."""


def _own_cuda_rng(saved: Any, device: torch.device) -> torch.Tensor | None:
    """The saved CUDA generator state (rank 0's GPU's) that this process restores on its own GPU: a state holds
    one, as restoring one per GPU that rank 0 saw failed on a machine that shows fewer. States of older versions
    hold that list: this GPU's entry, or the last. None off CUDA. (Training draws nothing from it: its random
    numbers come from seeded CPU generators.)"""
    if saved is None or device.type != "cuda":
        return None
    if isinstance(saved, (list, tuple)):
        return saved[min(device.index or 0, len(saved) - 1)] if saved else None
    return saved


def save_state(state: dict[str, Any], path: Path) -> None:
    """`torch.save` bytes plus their SHA-256, written atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with buf.getbuffer() as payload:
        digest = hashlib.sha256(payload).hexdigest().encode()
    buf.write(_TRAILER + digest + b"\n")
    with buf.getbuffer() as data:
        write_atomic(path, data, "training state", pause=float(os.environ.get("TRM_TEST_SLOW_SAVE", 0)))


def load_state(path: Path) -> dict[str, Any]:
    """The training state at `path`, its checksum checked (a state from before checksums loads unchecked);
    any damage is one CheckpointError line naming the file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the training state ({err.strerror})") from None
    payload = memoryview(data)
    tail = data[-_TRAILER_LEN:]
    if tail.startswith(_TRAILER):
        payload = payload[:-_TRAILER_LEN]
        if hashlib.sha256(payload).hexdigest().encode() != tail[len(_TRAILER) : -1]:
            raise CheckpointError(f"{path}: corrupt training state (SHA-256 checksum mismatch: damaged on disk)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as err:  # pickle and zip errors vary; the message is what matters
        raise CheckpointError(f"{path}: corrupt training state ({err})") from None


def state_digest(path: Path) -> bytes | None:
    """The SHA-256 trailer a saved state ends with (None: no file, unreadable, or saved without one)."""
    try:
        with path.open("rb") as f:
            f.seek(max(path.stat().st_size - _TRAILER_LEN, 0))
            tail = f.read()
    except OSError:
        return None
    return tail if tail.startswith(_TRAILER) else None


def load_shared_state(d: distributed.Dist, path: Path) -> dict[str, Any] | None:
    """The state every rank of a run resumes from: rank 0's file at `path` (None: it has none).

    Each rank reads its own copy when all copies have rank 0's checksum (one shared file system, the usual
    case); otherwise (machines without a shared run directory, or a stale copy on one) rank 0 reads it and
    sends it to all. A rank that cannot read it makes every rank raise, so none waits for it forever."""
    if not d.active:
        return load_state(path) if path.is_file() else None
    digest = state_digest(path)
    main = distributed.broadcast_object(d, digest if path.is_file() else b"")
    if main == b"":
        return None
    state, error = None, None
    local = distributed.all_agree(d, main is not None and digest == main)
    if local or d.is_main:
        try:
            state = load_state(path)
        except CheckpointError as err:
            error = str(err)
    if not local:
        error, state = distributed.broadcast_object(d, (error, state if error is None else None))
    if not distributed.all_agree(d, error is None):
        raise CheckpointError(error or f"{path}: another rank of the run could not read its training state")
    return state


def write_dir_atomic(final: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory under a temporary name with `fill`, add `SHA256SUMS`, sync it and rename it into
    place; one of the same name (a step redone after a resume) is replaced. Fails as one CheckpointError."""
    tmp, old = final.with_name(final.name + TMP), final.with_name(final.name + OLD)
    try:
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        fill(tmp)
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        write_checksums(tmp, files)
        for p in tmp.iterdir():
            with p.open("rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise cannot_save(final, "checkpoint", err) from err
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final.parent)


def clean_partial_writes(run_dir: Path, names: Iterable[str]) -> list[str]:
    """Undo what a kill in the middle of a write left in a run directory: the temporary files of `names`
    and of checkpoints are removed, a checkpoint moved aside to be replaced goes back. Returns what it did."""
    done = []
    for name in names:
        tmp = run_dir / (name + TMP)
        if tmp.is_file():
            tmp.unlink()
            done.append(f"removed the half-written {tmp}")
    ckpts = run_dir / "checkpoints"
    for tmp in [*ckpts.glob("step_*" + TMP), ckpts / ("last" + TMP)]:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
            done.append(f"removed the half-written {tmp}")
    for old in ckpts.glob("step_*" + OLD):
        final = old.with_name(old.name.removesuffix(OLD))
        if final.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, final)
            done.append(f"restored {final}")
    return done


@contextlib.contextmanager
def run_dir_lock(d: distributed.Dist, run_dir: Path) -> Iterator[None]:
    """Global rank 0 holds an exclusive lock on the run directory while a run trains there: a second `trm train`
    or `--resume` into it meanwhile is one error line (on every rank) instead of two runs writing the same files.
    The system releases the lock when the process ends, however it ends."""
    handle = None
    with distributed.together(d):
        if d.is_main and fcntl is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(run_dir / LOCK_NAME, "a")  # noqa: SIM115 - closed below, when the run ends
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise ConfigError(
                    f"{run_dir}: another trm train is running in this run directory; let it end or use another "
                    "--run-dir"
                ) from None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


class StopSignals:
    """The first SIGINT or SIGTERM asks training to stop at the next step boundary (it saves, then raises
    TrainingInterrupted); a second SIGINT stops at once (every write is atomic, so nothing is left corrupt).
    With `notice` (an interactive run) the first one says so on the terminal at once. Python delivers signals
    to the main thread only: elsewhere nothing is installed."""

    def __init__(self, notice: bool = False) -> None:
        self.signum: int | None = None
        self.notice = notice
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        first, self.signum = self.signum is None, signum
        if first and self.notice:  # os.write: print() could be inside a write to stderr already
            with contextlib.suppress(OSError):  # a closed pipe (`| tee` ended by the same Ctrl-C) must not lose it
                os.write(2, b"\ntrm: stopping after this step, with the state saved (Ctrl-C again stops at once)\n")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


class RunState:
    """What a `trm.train.Trainer` saves and restores, mixed into it (it reads the trainer's model, optimizers,
    EMA, sampler, carries and clocks): the whole state for exact resume, written with its checkpoint, never
    when the weights or the losses are NaN or infinite."""

    def _global_carry(self) -> dict[str, Any] | None:
        """The carry of the whole global batch, in its row order, on rank 0 (collective: every rank calls)."""
        if any(c is None for c in self.carries):
            return None
        local = {f: torch.cat([getattr(c, f) for c in self.carries]) for f in CARRY_FIELDS}
        local["data"] = {k: torch.cat([c.data[k] for c in self.carries]) for k in self.carries[0].data}
        d = self.dist
        out = {f: distributed.gather_rows(d, local[f]) for f in CARRY_FIELDS}
        out["data"] = {k: distributed.gather_rows(d, v) for k, v in local["data"].items()}
        return out if d.is_main else None

    def _load_carry(self, carry: dict[str, Any]) -> None:
        rows = carry["steps"].shape[0]
        if rows != self.cfg.global_batch_size:
            raise CheckpointError(f"saved carry has {rows} rows, global_batch_size is {self.cfg.global_batch_size}")
        lo = self.dist.rank * self.local_batch
        for m in range(len(self.carries)):
            part = slice(lo + m * self.micro_batch, lo + (m + 1) * self.micro_batch)
            fields = [carry[f][part].to(self.device) for f in CARRY_FIELDS]
            self.carries[m] = Carry(*fields, {k: v[part].to(self.device) for k, v in carry["data"].items()})

    def _window_state(self) -> dict[str, Any]:
        """The logging window in progress, summed over ranks (collective), so a resumed run, with any number
        of processes, logs the same averages as an uninterrupted one."""
        sums = {k: v.detach().clone() for k, v in self._sums.items()}
        keys = sorted(k for k in sums if k != "lr")  # the learning rate is the same on every rank
        if keys:
            packed = distributed.all_reduce_sum(self.dist, torch.stack([sums[k] for k in keys]))
            sums.update(zip(keys, packed.unbind(), strict=True))
        return {"steps": self._window, "sums": {k: v.cpu() for k, v in sums.items()}}

    def state_dict(self) -> dict[str, Any]:
        """The whole training state (collective under torchrun: the carry is gathered to rank 0)."""
        return {
            "step": self.step,
            "checkpoint_step": self._saved_at,
            "metrics_lines": self.logger.lines if self.logger is not None else None,
            "log_window": self._window_state(),
            "elapsed": self.elapsed_now(),
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sparse": self.sparse.state_dict() if self.sparse else None,
            "ema": self.ema.state_dict() if self.ema else None,
            "sampler": self.sampler.state_dict(),
            "carry": self._global_carry(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by any number of processes and micro-batches with the same global batch."""
        self.step = self._state_at = state["step"]
        self._saved_at = state.get("checkpoint_step", self.step)  # states before wall-clock saves: always
        self.elapsed, self._t0 = float(state.get("elapsed", 0.0)), time.perf_counter()
        self._state_clock, self._metrics_lines = self.elapsed, state.get("metrics_lines")
        window = state.get("log_window") or {"steps": 0, "sums": {}}
        self._window = window["steps"]
        self._sums = {k: v.to(self.device) for k, v in window["sums"].items()} if self.dist.is_main else {}
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # a data set rebuilt with another grid size or vocabulary since the save
            shapes = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
            raise CheckpointError(
                f"{self.run_dir / STATE_NAME}: the saved weights do not fit the model this run's data set builds "
                f"({shapes[:200]}); was the data set rebuilt with other puzzles?"
            ) from None
        self.opt.load_state_dict(state["opt"])
        if self.sparse and state["sparse"]:
            self.sparse.load_state_dict(state["sparse"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.sampler.load_state_dict(state["sampler"])
        if state["carry"] is not None:
            self._load_carry(state["carry"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if (cuda := _own_cuda_rng(rng["cuda"], self.device)) is not None:
            torch.cuda.set_rng_state(cuda, self.device)
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def save(self, checkpoint: bool = True) -> Path | None:
        """Write the resumable training state and, unless `checkpoint` is false, first an inference checkpoint
        (EMA weights) for this step, whose path it returns; rank 0 writes, every rank takes part (the carry is
        gathered). Raises TrainingDiverged, writing nothing, if the weights or the window's losses are not
        finite."""
        self._full_depth()
        ckpt = self.run_dir / "checkpoints" / f"step_{self.step}"
        if checkpoint:
            self._saved_at = self.step  # before the state is taken: it records its newest checkpoint
        state = self.state_dict()
        self._check_finite(state)
        if self.dist.is_main:  # the checkpoint first: a kill before the state is written redoes both
            if checkpoint:
                write_dir_atomic(ckpt, self._fill_checkpoint)
                write_atomic(ckpt.parent / "last", (ckpt.name + "\n").encode(), "checkpoint pointer")
            save_state(state, self.run_dir / STATE_NAME)
        distributed.barrier(self.dist)
        self._state_at, self._state_clock = self.step, state["elapsed"]
        return ckpt if checkpoint else None

    def _fill_checkpoint(self, directory: Path) -> None:
        with self.ema.swapped(self.model) if self.ema else contextlib.nullcontext():
            self.model.save_pretrained(directory)
        task_file = Path(self.cfg.data) / TASK_FILE  # lets `trm solve` parse and render this task
        if task_file.is_file():
            shutil.copyfile(task_file, directory / TASK_FILE)

    def _diverged(self, what: str) -> NoReturn:
        kept = (
            f"the last good state (step {self._state_at}) is kept in {self.run_dir / STATE_NAME}"
            if self._state_at >= 0
            else "no state had been saved yet"
        )
        raise TrainingDiverged(f"training diverged: {what} by step {self.step}; stopped, {kept} (a lower lr?)")

    def _check_finite(self, state: dict[str, Any]) -> None:
        """Never save a poisoned state: the window's losses and every weight must be finite (the same on every
        rank: the window is summed over ranks, the weights are replicated)."""
        for key, value in state["log_window"]["sums"].items():
            if not torch.isfinite(value).all():
                self._diverged(f"{key} is {value.item()}")
        weights = [t for t in state["model"].values() if t.is_floating_point()]
        if weights and not torch.stack([torch.isfinite(t).all() for t in weights]).all():
            self._diverged("the weights are not finite")
