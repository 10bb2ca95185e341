"""Solving an ARC task the model never saw: learn only the new task's puzzle embeddings.

The official models know a task only through its learned puzzle-embedding rows (one per augmentation), so
a new task has none. We add rows for the new task's augmentations, start them at the mean of the trained
table (what the official loader does when the table's shape changes), freeze the network, and train those
rows with the training recipe's sparse sign-SGD under deep supervision on the task's demonstration pairs.
Then every augmented copy of each test input votes, as in evaluation, and the top two candidates are the
two attempts. `blank` votes once more with the blank identifier (row 0, no task identity) to show how much
the answer owes to the learned identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from trm.data import IGNORE_LABEL, grids
from trm.inference.engine import Engine, InferenceConfig, Request
from trm.models import RecursiveModel, build_model
from trm.optim import SignSGDEmbedding
from trm.supervision import DeepSupervision
from trm.tasks import arc
from trm.tasks.arc_eval import Votes


@dataclass
class AdaptConfig:
    aug: int = 100  # augmented copies of the task (each its own identifier)
    steps: int = 300  # optimizer steps on the embedding rows
    batch_size: int = 64
    lr: float = 1e-2  # official ARC puzzle_emb_lr
    weight_decay: float = 0.1
    translate: bool = True
    seed: int = 0
    inference: InferenceConfig = field(default_factory=InferenceConfig)  # how the augmented copies think


@dataclass
class Attempts:
    """The votes on a task's test inputs, and the fine-tuning loss they came from."""

    task: arc.ArcTask
    votes: Votes
    final_loss: float

    def candidates(self, i: int) -> list[tuple[np.ndarray, int, float]]:
        """Test input i's candidate grids, best first, with their votes and mean halting confidence."""
        return [(self.votes.grids[h], n, q) for h, n, q in self.votes.ranked(self.task.name, self.task.test[i][0])]

    def attempts(self, i: int, k: int = 2) -> list[np.ndarray]:
        return self.votes.attempts(self.task.name, self.task.test[i][0], k)

    def solved(self, i: int, k: int = 2) -> bool | None:
        """Whether the known answer of test input i is among the k attempts (None if it is not known)."""
        x, y = self.task.test[i]
        return None if y is None else arc.grid_hash(y) in self.votes.top(self.task.name, x, k)


def with_new_identifiers(model: RecursiveModel, count: int) -> RecursiveModel:
    """A copy of `model` whose puzzle-embedding table is the blank row plus `count` rows at the trained
    table's mean; every other weight shared, frozen."""
    if model.puzzle_emb is None:
        raise arc.ArcError("this checkpoint has no puzzle embeddings (puzzle_emb_ndim 0): nothing to fine-tune")
    cfg = model.config.model_copy(update={"num_puzzle_identifiers": count + 1})
    new = build_model(cfg).to(model.device)
    state = {k: v for k, v in model.state_dict().items() if k != "puzzle_emb.weight"}
    old = model.puzzle_emb.weight
    table = old.mean(0, keepdim=True).expand(count + 1, -1).clone()
    table[0] = old[0]
    new.load_state_dict({**state, "puzzle_emb.weight": table})
    new.requires_grad_(False)
    return new


def _examples(task: arc.ArcTask, augs: list[arc.Aug], translate: bool, rng: np.random.RandomState):
    inputs, labels, ids = [], [], []
    for k, a in enumerate(augs, start=1):
        for x, y in task.train:
            x, y = a.apply(x), a.apply(y)
            offset = (0, 0)
            if translate and rng.rand() < 0.5:
                h, w = max(x.shape[0], y.shape[0]), max(x.shape[1], y.shape[1])
                offset = (rng.randint(0, grids.MAX_SIZE - h + 1), rng.randint(0, grids.MAX_SIZE - w + 1))
            inputs.append(arc.encode_grid(x, offset))
            labels.append(arc.encode_grid(y, offset))
            ids.append(k)
    return np.stack(inputs), np.stack(labels), np.asarray(ids)


def fine_tune(
    model: RecursiveModel,
    inputs: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    cfg: AdaptConfig,
    progress: Callable[[int, float], None] | None = None,
) -> float:
    """Train only the puzzle-embedding rows of `ids` (network frozen) with deep supervision; returns the
    mean token loss of the last 10 steps."""
    device = model.device
    gen = torch.Generator().manual_seed(cfg.seed)
    data = {
        "inputs": torch.from_numpy(inputs.astype(np.int32)),
        "labels": torch.from_numpy(np.where(labels == grids.PAD, IGNORE_LABEL, labels.astype(np.int32))),  # not uint8
        "puzzle_identifiers": torch.from_numpy(ids.astype(np.int32)),
    }
    sup = DeepSupervision(model).train()
    sparse = SignSGDEmbedding(model.puzzle_emb, lr=cfg.lr, weight_decay=cfg.weight_decay)
    carry, recent = None, []
    for step in range(cfg.steps):
        rows = torch.randint(len(inputs), (cfg.batch_size,), generator=gen)
        batch = {k: v[rows].to(device) for k, v in data.items()}
        if carry is None:
            carry = sup.initial_carry(batch)
        carry, losses, _ = sup(carry, batch)
        (losses.total / cfg.batch_size).backward()
        sparse.step()
        sparse.zero_grad()
        recent = [*recent[-9:], float(losses.lm.detach()) / cfg.batch_size]
        if progress is not None:
            progress(step + 1, recent[-1])
    model.eval()
    return float(np.mean(recent)) if recent else float("nan")


def vote(
    model: RecursiveModel,
    task: arc.ArcTask,
    augs: list[arc.Aug],
    blank: bool = False,
    inference: InferenceConfig | None = None,
) -> Votes:
    """Every augmented copy of every test input, with its identifier (or the blank one), thought through by
    the inference engine, un-done and voted."""
    names = ["<blank>"] + [a.name(task.name) for a in augs]
    requests = [
        Request(arc.encode_grid(a.apply(x)), 0 if blank else k, key=k)
        for k, a in enumerate(augs, start=1)
        for x, _ in task.test
    ]
    answers = sorted(Engine(model, inference).run(requests), key=lambda a: a.index)
    votes = Votes()
    if answers:
        votes.add_batch(
            names,
            np.asarray([a.request.key for a in answers]),
            np.stack([a.request.inputs for a in answers]),
            np.stack([a.preds for a in answers]),
            np.asarray([a.chosen.q_halt for a in answers]),
        )
    return votes


def solve_new_task(
    model: RecursiveModel,
    task: arc.ArcTask,
    cfg: AdaptConfig | None = None,
    blank: bool = False,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Attempts, Attempts | None, RecursiveModel]:
    """Fine-tune the new task's embeddings, then vote. Returns the learned-identity attempts, the
    blank-identity attempts (if asked) and the adapted model."""
    cfg = cfg or AdaptConfig()
    rng = np.random.RandomState(cfg.seed)
    torch.manual_seed(cfg.seed)  # the halting exploration draws from torch's global generator
    augs = arc.draw_augmentations(list(task.train) + [(x, x) for x, _ in task.test], cfg.aug, rng)
    adapted = with_new_identifiers(model, len(augs))
    inputs, labels, ids = _examples(task, augs, cfg.translate, rng)
    loss = fine_tune(adapted, inputs, labels, ids, cfg, progress)
    learned = Attempts(task, vote(adapted, task, augs, inference=cfg.inference), loss)
    without = Attempts(task, vote(adapted, task, augs, blank=True, inference=cfg.inference), loss) if blank else None
    return learned, without, adapted
