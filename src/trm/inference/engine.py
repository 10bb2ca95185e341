"""The continuous-batching inference engine.

A pool of up to B rows (slots). Each row is one trajectory of one puzzle: its (y, z), its step count, how
long its prediction has been stable, and (when traced) its answers so far. After every supervision step the
rows that are done (halting policy, or the step cap) leave the pool, and rows waiting in the queue take
their places, so the pool stays full and throughput follows the mean number of steps, not the maximum.

Test-time scaling runs K trajectories per puzzle as K rows of the same pool: trajectory 0 starts from the
model's (y_init, z_init) like the fixed path; trajectories 1..K-1 add Gaussian noise of scale `noise` to
the initial (y, z) and/or to z after every step. Each noisy row draws from its own generator, seeded by
(seed, the puzzle's tokens and identifier, trajectory), so a puzzle's answer never depends on which puzzles
share its batch or where it sits in the queue.
When a puzzle's trajectories are all done, one is chosen: by the Q head (highest final q_halt), by majority
vote over the answers (model-only selections), or by the task's checker (checker-assisted).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from trm.errors import ConfigError
from trm.inference.halting import Policy, StepView, parse_policy, policy_for

Checker = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (pred tokens [B, L], input tokens [B, L]) -> bool [B]
SELECTIONS = ("q", "vote", "valid")
NOISE_MODES = ("init", "step", "both")


@dataclass
class InferenceConfig:
    """How to think: the halting policy (a name, see `trm.inference.halting`; "adaptive" is the default
    adaptive policy of the model's kind), the step cap (default: the model's N_sup), trajectories per puzzle
    and their noise, how one trajectory is chosen, and the pool size."""

    policy: str = "fixed"
    max_steps: int | None = None
    samples: int = 1
    noise: float = 0.0
    noise_mode: Literal["init", "step", "both"] = "init"
    select: Literal["q", "vote", "valid"] = "q"
    batch_size: int = 256
    seed: int = 0
    trace: bool = False
    keep_logits: bool = False

    def __post_init__(self) -> None:
        for name, value in (("max_steps", self.max_steps), ("samples", self.samples), ("batch_size", self.batch_size)):
            if value is not None and (not isinstance(value, Integral) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name.replace('_', '-')} must be an integer of at least 1, got {value}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):  # also refuses NaN and inf
            raise ConfigError(f"noise must be a finite non-negative scale, got {self.noise}")
        if self.samples > 1 and self.noise == 0:
            raise ConfigError(
                f"samples {self.samples} needs a noise scale > 0: without noise the trajectories are identical"
            )
        if self.noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {self.noise_mode!r}")
        if self.select not in SELECTIONS:
            raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        parse_policy(self.policy)  # an unknown policy fails here, before any work


@dataclass
class Request:
    """One puzzle: its input tokens [L] and puzzle identifier; `key` comes back with the answer."""

    inputs: np.ndarray
    puzzle_identifier: int = 0
    key: Any = None


@dataclass
class Trajectory:
    sample: int
    preds: np.ndarray  # [L] answer tokens at the last step
    steps: int
    q_halt: float  # logit at the last step
    q_continue: float
    logits: torch.Tensor | None = None  # [L, vocab] at the last step, with keep_logits
    trace: list[np.ndarray] | None = None  # answer tokens after every step, with trace
    q_trace: list[float] | None = None  # sigmoid(q_halt) after every step, with trace

    @property
    def confidence(self) -> float:
        return float(torch.sigmoid(torch.tensor(self.q_halt)))


@dataclass
class Answer:
    """A solved puzzle: the chosen trajectory and all of them; `compute` counts supervision steps over all."""

    index: int  # submission order
    request: Request
    chosen: Trajectory
    trajectories: list[Trajectory]
    valid: bool | None = None  # the checker's verdict when it chose the answer (select "valid"), else None
    latency_s: float = 0.0  # from its first row entering the pool to the answer

    @property
    def preds(self) -> np.ndarray:
        return self.chosen.preds

    @property
    def steps(self) -> int:
        return self.chosen.steps

    @property
    def compute(self) -> int:
        return sum(t.steps for t in self.trajectories)

    @property
    def confidence(self) -> float:
        return self.chosen.confidence


@dataclass
class _Pending:
    request: Request
    done: list[Trajectory] = field(default_factory=list)
    started: float | None = None  # perf_counter when its first row entered the pool


class Engine:
    """`submit` puzzles, call `step` until `idle` (each call is one supervision step of the whole pool and
    returns the puzzles it finished), or iterate `run(requests)`. The model is any module with TRM's step
    interface: `initial_state(b)`, `forward(y, z, inputs, ids) -> (y, z, logits, q_halt, q_continue)`, a
    `device` (the engine's) and `config.N_sup`, `config.seq_len`, `config.vocab_size`."""

    def __init__(self, model: nn.Module, config: InferenceConfig | None = None, checker: Checker | None = None):
        self.model, self.cfg, self.checker = model, config or InferenceConfig(), checker
        self.policy: Policy = policy_for(self.cfg.policy, bool(getattr(model.config, "q_continue", False)))
        if self.checker is None and (self.policy.needs_checker or self.cfg.select == "valid"):
            what = f"halting policy {self.policy.name}" if self.policy.needs_checker else "--select valid"
            raise ConfigError(f"{what} needs a task whose answers can be checked without the solution")
        self.max_steps = self.cfg.max_steps or model.config.N_sup
        self.device = model.device
        self.queue: deque[tuple[int, int]] = deque()  # (puzzle index, trajectory) rows waiting
        self.pending: dict[int, _Pending] = {}
        self.submitted = 0
        self.row_steps = 0  # supervision steps run over all rows (compute spent)
        self._rows: dict[str, torch.Tensor] | None = None  # the pool, all rows live
        self._meta: list[dict[str, Any]] = []  # per row: index, sample, generator, trace lists

    # -- queue ---------------------------------------------------------------------------------------------
    def submit(self, request: Request) -> int:
        """Queue one puzzle, checked first: on CUDA a token outside the vocabulary would not be an IndexError
        but a device-side assert that leaves the GPU unusable for every other puzzle in the pool."""
        cfg = self.model.config
        tokens = np.asarray(request.inputs)
        if tokens.shape != (cfg.seq_len,):
            raise ConfigError(f"a puzzle of shape {tokens.shape}; the model reads {cfg.seq_len} tokens in a row")
        if tokens.size and not (tokens.min() >= 0 and tokens.max() < cfg.vocab_size):
            raise ConfigError(f"tokens must lie in 0..{cfg.vocab_size - 1}, got {tokens.min()}..{tokens.max()}")
        table = getattr(cfg, "num_puzzle_identifiers", None)
        if table is not None and not 0 <= request.puzzle_identifier < table:
            raise ConfigError(
                f"puzzle identifier {request.puzzle_identifier} is outside the model's {table} identifiers"
            )
        index = self.submitted
        self.submitted += 1
        self.pending[index] = _Pending(request)
        self.queue.extend((index, k) for k in range(self.cfg.samples))
        return index

    @property
    def live(self) -> int:
        return len(self._meta)

    @property
    def idle(self) -> bool:
        return not self.queue and not self._meta

    def run(self, requests: Iterable[Request]) -> Iterator[Answer]:
        """Every request's answer, in the order they finish; the queue is filled lazily from `requests`."""
        source = iter(requests)
        end = object()
        exhausted = False
        while True:
            while not exhausted and len(self.queue) < self.cfg.batch_size:
                nxt = next(source, end)
                if nxt is end:
                    exhausted = True
                else:
                    self.submit(nxt)
            if self.idle:
                return
            yield from self.step()

    # -- the pool ------------------------------------------------------------------------------------------
    def _generator(self, request: Request, sample: int) -> torch.Generator | None:
        """Trajectory `sample`'s noise source, seeded by the puzzle itself (its tokens and identifier), the
        trajectory and the seed: the same puzzle draws the same noise wherever it sits in the queue."""
        if sample == 0 or self.cfg.noise == 0:
            return None
        tokens = np.ascontiguousarray(request.inputs, dtype=np.int64).tobytes()
        tag = f"{self.cfg.seed}/{sample}/{request.puzzle_identifier}/".encode()
        seed = int.from_bytes(hashlib.blake2b(tag + tokens, digest_size=8).digest(), "little")
        return torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)

    def _noise(self, gens: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
        draws = [torch.randn(like.shape[1:], generator=g) for g in gens]
        return (self.cfg.noise * torch.stack(draws)).to(like.device, like.dtype)

    def _refill(self) -> None:
        room = self.cfg.batch_size - self.live
        take = [self.queue.popleft() for _ in range(min(room, len(self.queue)))]
        if not take:
            return
        y, z = self.model.initial_state(len(take))
        meta, now = [], time.perf_counter()
        for index, sample in take:
            pending = self.pending[index]
            pending.started = pending.started or now
            gen = self._generator(pending.request, sample)
            meta.append({"index": index, "sample": sample, "gen": gen})
            if self.cfg.trace:
                meta[-1].update(trace=[], q_trace=[])
        noisy = [i for i, m in enumerate(meta) if m["gen"] is not None]
        if noisy and self.cfg.noise_mode in ("init", "both"):
            gens = [meta[i]["gen"] for i in noisy]
            y[noisy] += self._noise(gens, y)
            z[noisy] += self._noise(gens, z)
        reqs = [self.pending[index].request for index, _ in take]
        new = {
            "y": y,
            "z": z,
            "inputs": torch.from_numpy(np.stack([r.inputs for r in reqs]).astype(np.int32)).to(self.device),
            "ids": torch.tensor([r.puzzle_identifier for r in reqs], dtype=torch.int32, device=self.device),
            "steps": torch.zeros(len(take), dtype=torch.int32, device=self.device),
            "stable": torch.zeros(len(take), dtype=torch.int32, device=self.device),
        }
        new["preds"] = torch.zeros_like(new["inputs"], dtype=torch.long)
        if self._rows is None:
            self._rows = new
        else:
            self._rows = {k: torch.cat((self._rows[k], v)) for k, v in new.items()}
        self._meta += meta

    @torch.no_grad()
    def step(self) -> list[Answer]:
        """One supervision step of every live row (after filling free slots); returns the finished puzzles."""
        self._refill()
        if not self._meta:
            return []
        r = self._rows
        out = self.model(r["y"], r["z"], r["inputs"], r["ids"])
        preds = out.logits.argmax(-1)
        steps = r["steps"] + 1
        same = (preds == r["preds"]).all(-1) & (steps > 1)
        stable = torch.where(same, r["stable"] + 1, 0)
        cache: dict[str, torch.Tensor] = {}

        def valid() -> torch.Tensor:
            if "v" not in cache:
                ok = self.checker(preds.cpu().numpy(), r["inputs"].cpu().numpy())
                cache["v"] = torch.from_numpy(np.asarray(ok, dtype=bool)).to(self.device)
            return cache["v"]

        view = StepView(out.q_halt, out.q_continue, steps, stable, valid)
        done = self.policy(view) | (steps >= self.max_steps)
        self.row_steps += len(self._meta)
        if self.cfg.trace:
            p, q = preds.cpu().numpy(), torch.sigmoid(out.q_halt.float()).cpu().numpy()
            for i, m in enumerate(self._meta):
                m["trace"].append(p[i])
                m["q_trace"].append(float(q[i]))
        flags = done.tolist()  # the one host sync of the step's bookkeeping
        rows = [i for i, d in enumerate(flags) if d]
        finished = self._emit(rows, preds, steps, out)
        state = {"y": out.y, "z": out.z, "inputs": r["inputs"], "ids": r["ids"], "steps": steps}
        state.update(stable=stable, preds=preds)
        if rows:
            kept = [i for i, d in enumerate(flags) if not d]
            self._meta = [self._meta[i] for i in kept]
            idx = torch.tensor(kept, dtype=torch.long, device=self.device)
            state = {k: v[idx] for k, v in state.items()} if kept else None
        self._rows = state
        if self._meta and self.cfg.noise_mode in ("step", "both"):
            noisy = [i for i, m in enumerate(self._meta) if m["gen"] is not None]
            if noisy:
                # the latent state; a model that carries none (single latent, transformer) gets it on y
                key = "z" if self._rows["z"].numel() else "y"
                state = self._rows[key].clone()
                state[noisy] += self._noise([self._meta[i]["gen"] for i in noisy], state)
                self._rows[key] = state
        return finished

    def _emit(self, rows: list[int], preds: torch.Tensor, steps: torch.Tensor, out: Any) -> list[Answer]:
        """The trajectories of the finished `rows`, and the puzzles whose trajectories are now all done."""
        if not rows:
            return []
        p, s = preds[rows].cpu().numpy(), steps[rows].tolist()
        qh, qc = out.q_halt[rows].float().tolist(), out.q_continue[rows].float().tolist()
        finished = []
        for j, i in enumerate(rows):
            m = self._meta[i]
            traj = Trajectory(m["sample"], p[j], s[j], qh[j], qc[j])
            if self.cfg.keep_logits:
                traj.logits = out.logits[i].clone()
            if self.cfg.trace:
                traj.trace, traj.q_trace = m["trace"], m["q_trace"]
            pending = self.pending[m["index"]]
            pending.done.append(traj)
            if len(pending.done) == self.cfg.samples:
                del self.pending[m["index"]]
                finished.append(self._choose(m["index"], pending))
        return finished

    def _choose(self, index: int, pending: _Pending) -> Answer:
        trajs = sorted(pending.done, key=lambda t: t.sample)
        chosen, valid = choose(trajs, self.cfg.select, self.checker, pending.request.inputs)
        latency = time.perf_counter() - (pending.started or 0.0)
        return Answer(index, pending.request, chosen, trajs, valid, latency)


def choose(
    trajs: list[Trajectory], select: str, checker: Checker | None, inputs: np.ndarray
) -> tuple[Trajectory, bool | None]:
    """One puzzle's answer among its trajectories (in trajectory order), and (select "valid" only) whether
    the checker accepted it. q: the highest final q_halt (the first on ties, so the clean trajectory, sample
    0, wins a tie); vote: the most frequent answer, ties broken by the mean halting probability, then its
    member with the highest q_halt; valid: the highest-q answer the checker accepts, else as q."""

    def checks(ts: list[Trajectory]) -> list[bool]:
        rows = np.broadcast_to(inputs, (len(ts), len(inputs)))
        return [bool(v) for v in checker(np.stack([t.preds for t in ts]), rows)]

    by_q = max(trajs, key=lambda t: t.q_halt)  # max keeps the first on ties
    chosen, valid = by_q, None
    if select == "vote" and len(trajs) > 1:
        groups: dict[bytes, list[Trajectory]] = {}
        for t in trajs:
            groups.setdefault(np.asarray(t.preds).tobytes(), []).append(t)
        best = max(groups.values(), key=lambda g: (len(g), np.mean([t.confidence for t in g])))
        chosen = max(best, key=lambda t: t.q_halt)
    elif select == "valid":
        ok = [t for t, v in zip(trajs, checks(trajs), strict=True) if v]
        chosen = max(ok, key=lambda t: t.q_halt) if ok else by_q
        valid = bool(ok)
    return chosen, valid
