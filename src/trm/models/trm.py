"""The Tiny Recursive Model (arXiv 2510.04871), one supervision step at a time.

State: x is the embedded question, y the current answer, z the latent reasoning state (official: z_H = y,
z_L = z; see `trm.config` for the whole name mapping). One supervision step runs T recursion blocks; the
first T-1 run without gradients. Each block updates z n times from (x, y, z), then y once from (y, z),
with the *same* small network. The output head reads y (minus the puzzle prefix); the halting head reads
y's first position.

The paper's ablations are switches of this one model (`ModelConfig`):
- latent="single" (official trm_singlez): one state z; each block updates z n times from (z, x), then once
  from z alone; the heads read z. The model carries z as its y (the state the heads read) and no z.
- latent="multi" (official trm_hier6): num_z latents; update i of a block rewrites latent i from their sum,
  injected with y + x; y is updated from the sum. z has shape [B, num_z, P+L, D].
- gradient="one_step": in the last block only the last z update and the y update get gradients (HRM's
  one-step approximation) instead of all n + 1 updates.
- mixer, num_layers, T, n, N_sup, conv_kernel (ConvSwiGLU) and the trainer's `ema` cover the rest.
"""

from __future__ import annotations

import contextlib

import torch

from trm.config import ModelConfig
from trm.models.base import Reasoner, RecursiveModel, StepOutput, init_state


class TRM(RecursiveModel):
    arch = "trm"

    def __init__(self, config: ModelConfig, device: torch.device | None = None):
        super().__init__(config, device)
        cfg, d = self.config, config.hidden_size
        self.net = Reasoner(cfg, cfg.num_layers)
        if cfg.latent != "single":
            self.register_buffer("y_init", init_state(d, dtype=self.state_dtype))
        lead = (cfg.z_count,) if cfg.latent == "multi" else ()
        self.register_buffer("z_init", init_state(d, *lead, dtype=self.state_dtype))

    @property
    def blocks_per_step(self) -> int:
        return self.T * (self.n + 1) * self.config.num_layers

    @property
    def grad_blocks_per_step(self) -> int:
        updates = min(2, self.n + 1) if self.config.gradient == "one_step" else self.n + 1
        return updates * self.config.num_layers

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if cfg.latent == "single":
            return self._broadcast(self.z_init, batch_size), self._empty(batch_size)
        if cfg.latent == "multi":
            return self._broadcast(self.y_init, batch_size), self._broadcast(self.z_init, batch_size, cfg.z_count)
        return self._broadcast(self.y_init, batch_size), self._broadcast(self.z_init, batch_size)

    def recursion_block(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, grad_from: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n updates of z from (x, y, z), then one update of y from (y, z): x is not given to the y update.
        Updates numbered below `grad_from` (0..n, the y update is n) run without gradients."""
        latent, net, rotary = self.config.latent, self.net, self.rotary

        def stage(i: int) -> contextlib.AbstractContextManager:
            return torch.no_grad() if i < grad_from else contextlib.nullcontext()

        if latent == "single":  # the one state is carried as y
            for i in range(self.n):
                with stage(i):
                    y = net(y, x, rotary)
            with stage(self.n):
                return net(y, None, rotary), z
        if latent == "multi":
            zs = list(z.unbind(1))
            for i in range(self.n):
                with stage(i):
                    zs[i] = net(sum(zs), y + x, rotary)
            with stage(self.n):
                return net(y, sum(zs), rotary), torch.stack(zs, 1)
        for i in range(self.n):
            with stage(i):
                z = net(z, y + x, rotary)
        with stage(self.n):
            return net(y, z, rotary), z

    def forward(
        self, y: torch.Tensor, z: torch.Tensor, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor
    ) -> StepOutput:
        """One supervision step: T recursion blocks, gradients through the last one only (or its last two
        updates, gradient="one_step")."""
        x = self.embed(inputs, puzzle_identifiers)
        no_grad_all = self.n + 1
        with torch.no_grad():
            for _ in range(self.T - 1):
                y, z = self.recursion_block(x, y, z, no_grad_all)
        grad_from = self.n - 1 if self.config.gradient == "one_step" else 0
        y, z = self.recursion_block(x, y, z, grad_from)
        return self.heads(y, z)
