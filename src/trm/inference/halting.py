"""Halting policies: when a trajectory in the inference engine stops thinking.

A policy sees, after each supervision step, the live rows' view of the step (`StepView`) and answers a bool
mask of rows that are done. The engine also stops every row at its step cap, whatever the policy says.

Policies by name (`parse_policy`):

    fixed          never halt early: run to the step cap (the fixed-step path)
    q[:t]          the trained Q head: sigmoid(q_halt) > t (t = 0.5 by default, i.e. q_halt > 0, as trained)
    q-continue     HRM-style: q_halt > q_continue (needs a model trained with the Q-continue head)
    stable[:k]     the prediction has not changed for k steps in a row (k = 2 by default)
    valid          the task's checker accepts the answer without its solution (Sudoku constraints and
                   givens; a shortest S-to-G maze path); not for ARC, whose answers cannot be checked
    min:m          at least m steps (combine with AND to delay another policy)
    giveup:t       the Q head is sure the answer is wrong: sigmoid(q_halt) < t (combine with min:m, so that a
                   puzzle the model calls hopeless after m steps stops spending compute)

Combinations: `a+b` halts when both do (AND), `a|b` when either does (OR); `+` binds tighter than `|`, so
`q+stable:1|valid` is `(q AND stable:1) OR valid`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trm.errors import ConfigError

# Chosen by measurement (BENCHMARKS.md section 7, `trm bench --infer` and benchmarks/halting_sweep.py): stop at
# once when the Q head is very sure (sigmoid(q_halt) > 0.99), else when it says "right" and the answer has not
# changed for a step. The Q head alone halts wrong answers; asking for stability fixes that, and the 0.99 escape
# saves the confirming step on the puzzles the model is sure of.
DEFAULT_POLICY = "q:0.99|q+stable:1"


def adaptive_policy(q_continue: bool) -> str:
    """The default adaptive policy ("adaptive", bare `--halt`); a model trained with the HRM-style Q-continue
    head halts by its own rule, q_halt > q_continue, instead of q_halt > 0."""
    return DEFAULT_POLICY.replace("q+", "q-continue+", 1) if q_continue else DEFAULT_POLICY


def policy_for(spec: str | None, q_continue: bool) -> Policy:
    """The policy a model runs for `spec`: "adaptive" becomes the default of the model's kind."""
    return parse_policy(adaptive_policy(q_continue) if spec == "adaptive" else spec)


@dataclass
class StepView:
    """What a policy may read about the live rows after one supervision step."""

    q_halt: torch.Tensor  # [B] logits
    q_continue: torch.Tensor  # [B] logits
    steps: torch.Tensor  # [B] supervision steps taken, this one included
    stable: torch.Tensor  # [B] consecutive steps whose prediction equals the step before's
    valid: Callable[[], torch.Tensor]  # [B] bool, computed on first use (a task checker costs CPU time)


@dataclass(frozen=True)
class Policy:
    """A named rule `view -> done mask`; `needs_checker` when it asks the task's checker."""

    name: str
    decide: Callable[[StepView], torch.Tensor]
    needs_checker: bool = False

    def __call__(self, view: StepView) -> torch.Tensor:
        return self.decide(view)

    def __repr__(self) -> str:
        return self.name


def _logit(p: float) -> float:
    """logit(p), so that sigmoid(q) > p is compared as q > logit(p): p = 0.5 is exactly the trained q > 0."""
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def _combine(parts: list[Policy], and_: bool) -> Policy:
    """AND (`+`) or OR (`|`) of policies; AND stops asking once no row is left to halt (a checker is costly)."""
    if len(parts) == 1:
        return parts[0]

    def decide(view: StepView) -> torch.Tensor:
        out = parts[0](view)
        for p in parts[1:]:
            if and_ and not bool(out.any()):
                break
            out = (out & p(view)) if and_ else (out | p(view))
        return out

    name = ("+" if and_ else "|").join(p.name for p in parts)
    return Policy(name, decide, any(p.needs_checker for p in parts))


def _number(name: str, arg: str, kind: type) -> float | int:
    try:
        return kind(arg)
    except ValueError:
        raise ConfigError(
            f"halting policy {name}:{arg}: {arg!r} is not a{'n integer' if kind is int else ' number'}"
        ) from None


def _atom(text: str) -> Policy:
    name, _, arg = text.strip().partition(":")
    if name == "fixed" and not arg:
        return Policy("fixed", lambda v: torch.zeros_like(v.steps, dtype=torch.bool))
    if name == "q":
        t = _number(name, arg, float) if arg else 0.5
        if not 0.0 <= t < 1.0:
            raise ConfigError(f"halting policy q:{arg}: the threshold is a probability in [0, 1)")
        cut = _logit(t) if t > 0 else -math.inf
        return Policy("q" if t == 0.5 else f"q:{t:g}", lambda v: v.q_halt > cut)
    if name == "q-continue" and not arg:
        return Policy("q-continue", lambda v: v.q_halt > v.q_continue)
    if name == "stable":
        k = _number(name, arg, int) if arg else 2
        if k < 1:
            raise ConfigError(f"halting policy stable:{arg}: k must be at least 1")
        return Policy(f"stable:{k}", lambda v: v.stable >= k)
    if name == "valid" and not arg:
        return Policy("valid", lambda v: v.valid(), needs_checker=True)
    if name == "min" and arg:
        m = _number(name, arg, int)
        if m < 1:
            raise ConfigError(f"halting policy min:{arg}: m must be at least 1")
        return Policy(f"min:{m}", lambda v: v.steps >= m)
    if name == "giveup" and arg:
        t = _number(name, arg, float)
        if not 0.0 < t <= 1.0:
            raise ConfigError(f"halting policy giveup:{arg}: the threshold is a probability in (0, 1]")
        cut = _logit(t) if t < 1 else math.inf
        return Policy(f"giveup:{t:g}", lambda v: v.q_halt < cut)
    raise ConfigError(
        f"unknown halting policy {text.strip()!r}; known: fixed, q[:t], q-continue, stable[:k], valid, min:m, "
        "giveup:t, combined with + (and) or | (or)"
    )


def parse_policy(spec: str | Policy | None) -> Policy:
    """A policy from its name (see the module docstring); None is `fixed`, "adaptive" the default policy."""
    if spec is None:
        return _atom("fixed")
    if isinstance(spec, Policy):
        return spec
    if spec == "adaptive":
        spec = DEFAULT_POLICY
    return _combine([_combine([_atom(a) for a in part.split("+")], and_=True) for part in spec.split("|")], and_=False)
