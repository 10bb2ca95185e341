"""The Hierarchical Reasoning Model (arXiv 2506.21734), faithful to sapientinc/HRM `hrm_act_v1`.

Two networks at two speeds: f_L (num_layers blocks) updates the low-level state z from (z, y + x) n times per
cycle, and f_H (num_h_layers blocks) updates the high-level state y from (y, z) once per cycle, T cycles per
supervision step. Everything runs without gradients except the very last f_L and f_H updates: HRM's
one-step gradient, justified in the paper by a fixed-point argument. The heads read y as in TRM (official:
z_H = y, z_L = z, H_cycles = T, L_cycles = n). The puzzle embedding takes ceil(puzzle_emb_ndim / D) prefix
positions (the presets set puzzle_emb_len: 0 for that). Halting is Q-learning (q_continue: true): halt when
q_halt > q_continue, with the continue target bootstrapped from an extra no-grad step (`trm.supervision`).
"""

from __future__ import annotations

import torch

from trm.config import ModelConfig
from trm.models.base import Reasoner, RecursiveModel, StepOutput, init_state


class HRM(RecursiveModel):
    arch = "hrm"

    def __init__(self, config: ModelConfig, device: torch.device | None = None):
        super().__init__(config, device)
        cfg, d = self.config, config.hidden_size
        self.f_H = Reasoner(cfg, cfg.h_layers)
        self.f_L = Reasoner(cfg, cfg.num_layers)
        self.register_buffer("y_init", init_state(d, dtype=self.state_dtype))
        self.register_buffer("z_init", init_state(d, dtype=self.state_dtype))

    @property
    def blocks_per_step(self) -> int:
        cfg = self.config
        return self.T * (self.n * cfg.num_layers + cfg.h_layers)

    @property
    def grad_blocks_per_step(self) -> int:
        return self.config.num_layers + self.config.h_layers

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._broadcast(self.y_init, batch_size), self._broadcast(self.z_init, batch_size)

    def forward(
        self, y: torch.Tensor, z: torch.Tensor, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor
    ) -> StepOutput:
        """One supervision step: T cycles of (n f_L updates, one f_H update); only the last pair has gradients."""
        x = self.embed(inputs, puzzle_identifiers)
        rotary = self.rotary
        with torch.no_grad():
            for cycle in range(self.T):
                last_cycle = cycle == self.T - 1
                for step in range(self.n):
                    if not (last_cycle and step == self.n - 1):
                        z = self.f_L(z, y + x, rotary)
                if not last_cycle:
                    y = self.f_H(y, z, rotary)
        z = self.f_L(z, y + x, rotary)
        y = self.f_H(y, z, rotary)
        return self.heads(y, z)
