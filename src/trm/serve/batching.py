"""One background worker owns the inference engine; requests from any thread are queued to it and answered
through futures, so concurrent clients share the engine's batched supervision steps instead of queueing for
one forward pass each. A request that arrives while the pool is busy joins it at the next step (continuous
batching); one that finds the engine idle waits `wait` seconds for company first.

Every live puzzle's answer after each step is handed to its `on_step` callback (on the worker thread), so a
client can watch the answer refine while the batch is still running.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from trm.errors import TRMError
from trm.inference.engine import Answer, Checker, Engine, InferenceConfig, Request

log = logging.getLogger(__name__)

StepCallback = Callable[[int, np.ndarray, float], None]  # (step, answer tokens [L], halting probability)


class QueueFull(TRMError):
    """More puzzles outstanding than the server accepts; the client should retry later."""


class StreamingEngine(Engine):
    """The engine plus a view of its live rows' traces so far (the engine keeps them with `trace=True`)."""

    def live_traces(self) -> Iterator[tuple[Any, list[np.ndarray], list[float]]]:
        """(request key, answers so far, halting probabilities so far) of every live clean trajectory."""
        for meta in self._meta:
            if meta["sample"] == 0:
                yield self.pending[meta["index"]].request.key, meta["trace"], meta["q_trace"]


@dataclass
class _Job:
    inputs: np.ndarray
    identifier: int
    on_step: StepCallback | None
    future: Future = field(default_factory=Future)
    reported: int = 0  # steps already handed to on_step


@dataclass
class Stats:
    """What the worker has done: forward passes (engine steps), rows they carried, the largest batch."""

    forward_passes: int = 0
    rows: int = 0
    largest_batch: int = 0
    answered: int = 0

    def record(self, rows: int) -> None:
        self.forward_passes += 1
        self.rows += rows
        self.largest_batch = max(self.largest_batch, rows)


class Batcher:
    """`submit(tokens)` from any thread returns a Future of the engine's Answer (with its trace). The engine's
    pool size (`config.batch_size`) is the largest batch; 1 runs the puzzles one at a time."""

    def __init__(
        self,
        model: nn.Module,
        config: InferenceConfig,
        checker: Checker | None = None,
        max_queue: int = 1024,
        wait: float = 0.002,
    ):
        self.engine = StreamingEngine(model, replace(config, trace=True), checker)
        self.max_queue, self.wait = max_queue, wait
        self.stats = Stats()
        self._inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._outstanding = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="trm-engine", daemon=True)
        self._thread.start()

    @property
    def outstanding(self) -> int:
        """Puzzles submitted and not yet answered."""
        return self._outstanding

    def submit(self, inputs: np.ndarray, identifier: int = 0, on_step: StepCallback | None = None) -> Future:
        with self._lock:
            if self._stop.is_set():
                raise QueueFull("the server is shutting down")
            if self._outstanding >= self.max_queue:
                raise QueueFull(f"{self._outstanding} puzzles are waiting (the limit); retry shortly")
            self._outstanding += 1
            job = _Job(np.asarray(inputs), identifier, on_step)
            self._inbox.put(job)  # under the lock: `close` cannot slip between the check and the put
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker; puzzles still outstanding fail with QueueFull."""
        with self._lock:
            self._stop.set()
        self._thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            if self.engine.idle:
                try:
                    job = self._inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
                self._take(job)
                if self.wait > 0:
                    time.sleep(self.wait)  # let requests that arrive together share the first step
            self._drain()
            before = self.engine.row_steps
            try:
                finished = self.engine.step()
            except Exception as err:  # a failing step fails its puzzles, never the worker
                log.exception("inference step failed")
                self._fail_live(err)
                continue
            if self.engine.row_steps > before:
                self.stats.record(self.engine.row_steps - before)
            for job, trace, q_trace in self.engine.live_traces():
                self._report(job, trace, q_trace)
            for answer in finished:
                self._finish(answer)
        self._drain()
        self._fail_live(QueueFull("the server is shutting down"))

    def _take(self, job: _Job) -> None:
        try:
            self.engine.submit(Request(job.inputs, job.identifier, key=job))
        except Exception as err:  # a bad request (identifier out of range, ...) fails alone
            self._resolve(job, error=err)

    def _drain(self) -> None:
        while True:
            try:
                self._take(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _report(self, job: _Job, trace: list[np.ndarray], q_trace: list[float]) -> None:
        while job.reported < len(trace):
            if job.on_step is not None:
                try:
                    job.on_step(job.reported + 1, trace[job.reported], q_trace[job.reported])
                except Exception:  # a broken listener loses its stream, the batch goes on
                    log.exception("step callback failed")
                    job.on_step = None
            job.reported += 1

    def _finish(self, answer: Answer) -> None:
        job: _Job = answer.request.key
        clean = next(t for t in answer.trajectories if t.sample == 0)
        self._report(job, clean.trace or [], clean.q_trace or [])
        self.stats.answered += 1
        self._resolve(job, result=answer)

    def _resolve(self, job: _Job, result: Answer | None = None, error: BaseException | None = None) -> None:
        with self._lock:
            self._outstanding -= 1
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _fail_live(self, err: BaseException) -> None:
        """Fail every puzzle in the engine and start a fresh one, so the next requests are served."""
        for pending in self.engine.pending.values():
            self._resolve(pending.request.key, error=err)
        self.engine = StreamingEngine(self.engine.model, self.engine.cfg, self.engine.checker)
