"""A plain transformer with no recursion: the baselines TRM and HRM are measured against.

Each supervision step is one pass of a `num_layers`-block stack over (y + x), with gradients, the carry
detached: with N_sup = 1 it is the papers' direct-prediction baseline (one forward, one answer); with deep
supervision it is the official `transformers_baseline` (HRM's Model_ACTV2: 8 layers, ACT, no inner cycles).
T and n do not apply. The embedding, heads and initial answer state are TRM's; there is no latent z.
"""

from __future__ import annotations

import torch

from trm.config import ModelConfig
from trm.models.base import Reasoner, RecursiveModel, StepOutput, init_state


class Transformer(RecursiveModel):
    arch = "transformer"

    def __init__(self, config: ModelConfig, device: torch.device | None = None):
        super().__init__(config, device)
        self.net = Reasoner(self.config, self.config.num_layers)
        self.register_buffer("y_init", init_state(config.hidden_size, dtype=self.state_dtype))

    @property
    def blocks_per_step(self) -> int:
        return self.config.num_layers

    @property
    def grad_blocks_per_step(self) -> int:
        return self.config.num_layers

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._broadcast(self.y_init, batch_size), self._empty(batch_size)

    def forward(
        self, y: torch.Tensor, z: torch.Tensor, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor
    ) -> StepOutput:
        return self.heads(self.net(y, self.embed(inputs, puzzle_identifiers), self.rotary), z)
