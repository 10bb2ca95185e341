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

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trm.errors import ConfigError

DEFAULT_POLICY = "q+stable:1"  # chosen by measurement: BENCHMARKS.md section 7 (`trm bench --infer`)


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


class Policy:
    """A named rule `view -> done mask`; `needs_checker` when it asks the task's checker."""

    name = "policy"
    needs_checker = False

    def __call__(self, view: StepView) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Fixed(Policy):
    name = "fixed"

    def __call__(self, view: StepView) -> torch.Tensor:
        return torch.zeros_like(view.steps, dtype=torch.bool)


class QHead(Policy):
    def __init__(self, threshold: float = 0.5):
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"halting policy q:{threshold}: the threshold is a probability in [0, 1)")
        self.threshold = threshold
        # sigmoid(q) > t  <=>  q > logit(t): compare logits, so t = 0.5 is exactly the trained rule q > 0
        self.logit = (
            float(torch.logit(torch.tensor(threshold, dtype=torch.float64))) if threshold > 0 else -float("inf")
        )
        self.name = "q" if threshold == 0.5 else f"q:{threshold:g}"

    def __call__(self, view: StepView) -> torch.Tensor:
        return view.q_halt > self.logit


class QContinue(Policy):
    name = "q-continue"

    def __call__(self, view: StepView) -> torch.Tensor:
        return view.q_halt > view.q_continue


class Stable(Policy):
    def __init__(self, k: int = 2):
        if k < 1:
            raise ConfigError(f"halting policy stable:{k}: k must be at least 1")
        self.k, self.name = k, f"stable:{k}"

    def __call__(self, view: StepView) -> torch.Tensor:
        return view.stable >= self.k


class Valid(Policy):
    name, needs_checker = "valid", True

    def __call__(self, view: StepView) -> torch.Tensor:
        return view.valid()


class GiveUp(Policy):
    def __init__(self, threshold: float):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"halting policy giveup:{threshold}: the threshold is a probability in (0, 1]")
        self.threshold, self.name = threshold, f"giveup:{threshold:g}"
        self.logit = float(torch.logit(torch.tensor(threshold, dtype=torch.float64))) if threshold < 1 else float("inf")

    def __call__(self, view: StepView) -> torch.Tensor:
        return view.q_halt < self.logit


class MinSteps(Policy):
    def __init__(self, m: int):
        if m < 1:
            raise ConfigError(f"halting policy min:{m}: m must be at least 1")
        self.m, self.name = m, f"min:{m}"

    def __call__(self, view: StepView) -> torch.Tensor:
        return view.steps >= self.m


class All(Policy):
    def __init__(self, parts: list[Policy]):
        self.parts, self.name = parts, "+".join(p.name for p in parts)
        self.needs_checker = any(p.needs_checker for p in parts)

    def __call__(self, view: StepView) -> torch.Tensor:
        out = self.parts[0](view)
        for p in self.parts[1:]:
            if not bool(out.any()):  # nothing left to halt: skip the rest (and a checker it would run)
                break
            out = out & p(view)
        return out


class Any(Policy):
    def __init__(self, parts: list[Policy]):
        self.parts, self.name = parts, "|".join(p.name for p in parts)
        self.needs_checker = any(p.needs_checker for p in parts)

    def __call__(self, view: StepView) -> torch.Tensor:
        out = self.parts[0](view)
        for p in self.parts[1:]:
            out = out | p(view)
        return out


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
        return Fixed()
    if name == "q":
        return QHead(_number(name, arg, float) if arg else 0.5)
    if name == "q-continue" and not arg:
        return QContinue()
    if name == "stable":
        return Stable(_number(name, arg, int) if arg else 2)
    if name == "valid" and not arg:
        return Valid()
    if name == "min" and arg:
        return MinSteps(_number(name, arg, int))
    if name == "giveup" and arg:
        return GiveUp(_number(name, arg, float))
    raise ConfigError(
        f"unknown halting policy {text.strip()!r}; known: fixed, q[:t], q-continue, stable[:k], valid, min:m, "
        "giveup:t, combined with + (and) or | (or)"
    )


def parse_policy(spec: str | Policy | None) -> Policy:
    """A policy from its name (see the module docstring); None is `fixed`, "adaptive" the default policy."""
    if spec is None:
        return Fixed()
    if isinstance(spec, Policy):
        return spec
    if spec == "adaptive":
        spec = DEFAULT_POLICY
    ors = [[_atom(a) for a in part.split("+")] for part in spec.split("|")]
    terms = [parts[0] if len(parts) == 1 else All(parts) for parts in ors]
    return terms[0] if len(terms) == 1 else Any(terms)
