"""The Tiny Recursive Model (arXiv 2510.04871), one supervision step at a time.

State: x is the embedded question, y the current answer, z the latent reasoning state (official: z_H = y,
z_L = z; see `trm.config` for the whole name mapping). One supervision step runs T recursion blocks; the
first T-1 run without gradients. Each block updates z n times from (x, y, z), then y once from (y, z),
with the *same* small network. The output head reads y (minus the puzzle prefix); the halting head reads
y's first position.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trm.config import ModelConfig, model_config_from_json
from trm.errors import CheckpointError, ConfigError
from trm.models.layers import Block, Embedding, Linear, PuzzleEmbedding, Rotary, trunc_normal_

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class StepOutput(NamedTuple):
    y: torch.Tensor  # [B, P+L, D], detached
    z: torch.Tensor  # [B, P+L, D], detached
    logits: torch.Tensor  # [B, L, vocab]
    q_halt: torch.Tensor  # [B] float32
    q_continue: torch.Tensor  # [B] float32


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """x86 CPUs with AVX512-BF16 or AMX run bfloat16 matmuls natively (about 2x float32 on the development
    machine, BENCHMARKS.md section 8); elsewhere bf16 on the CPU is emulated and slower. Linux reports the
    flags in /proc/cpuinfo; other systems are treated as not native."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype (weights stay float32 and are cast per operation). "auto" is bfloat16 where the
    device runs it natively (CUDA, MPS, CPUs with AVX512-BF16 or AMX) and float32 elsewhere; TRM_CPU_DTYPE
    (float32 | bfloat16) overrides the CPU choice."""
    if name != "auto":
        return getattr(torch, name)
    if device.type != "cpu":
        return torch.bfloat16
    forced = os.environ.get("TRM_CPU_DTYPE")
    if forced in ("float32", "bfloat16"):
        return getattr(torch, forced)
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def pick_device(name: str = "auto") -> torch.device:
    """ "auto": CUDA, else MPS, else CPU; any other name as torch spells it (a bad one is a ConfigError)."""
    if name != "auto":
        try:
            return torch.device(name)
        except RuntimeError:
            raise ConfigError(f"unknown device {name!r} (try auto, cpu, cuda, cuda:1, mps)") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Reasoner(nn.Module):
    """The one tiny network: `num_layers` post-norm blocks; the injection is added once before the first."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(cfg.hidden_size, cfg.num_heads, cfg.expansion, cfg.mixer, cfg.total_len, cfg.rms_norm_eps)
            for _ in range(cfg.num_layers)
        )

    def forward(self, h: torch.Tensor, injection: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, rotary)
        return h


class TRM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        self.T, self.n = cfg.T, cfg.n  # the recursion depth in use: the config's, unless a curriculum lowers it
        d = cfg.hidden_size
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = Embedding(cfg.vocab_size, d, init_std=1 / self.embed_scale)
        self.puzzle_emb = (
            PuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim) if cfg.puzzle_emb_ndim else None
        )
        self.embed_pos = (
            Embedding(cfg.total_len, d, init_std=1 / self.embed_scale) if cfg.pos_encoding == "learned" else None
        )
        use_rope = cfg.pos_encoding == "rope" and cfg.mixer == "attention"
        self.rotary = Rotary(d // cfg.num_heads, cfg.total_len, cfg.rope_theta) if use_rope else None
        self.net = Reasoner(cfg)
        self.output_head = Linear(d, cfg.vocab_size)
        self.q_head = Linear(d, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)  # start by almost never halting
        # Fixed random starting points for y and z: saved with the model, never trained.
        self.register_buffer("y_init", trunc_normal_(torch.empty(d), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(d), std=1.0))

    # -- state -------------------------------------------------------------------------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        return resolve_dtype(self.config.dtype, self.y_init.device)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch_size, self.config.total_len, self.config.hidden_size)
        dtype = self.compute_dtype
        return self.y_init.to(dtype).expand(shape).clone(), self.z_init.to(dtype).expand(shape).clone()

    def reset_state(self, reset: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put rows where `reset` is True back at (y_init, z_init)."""
        mask = reset.view(-1, 1, 1)
        return (torch.where(mask, self.y_init.to(y.dtype), y), torch.where(mask, self.z_init.to(z.dtype), z))

    # -- forward -----------------------------------------------------------------------------------------
    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """x = sqrt(D) * [puzzle prefix ; token embeddings] (+ learned positions)."""
        cfg, dtype = self.config, self.compute_dtype
        x = self.embed_tokens(inputs, dtype)
        if self.puzzle_emb is not None:
            prefix = self.puzzle_emb(puzzle_identifiers).to(dtype)
            pad = cfg.prefix_len * cfg.hidden_size - prefix.shape[-1]
            prefix = nn.functional.pad(prefix, (0, pad)).view(-1, cfg.prefix_len, cfg.hidden_size)
            x = torch.cat((prefix, x), dim=1)
        if self.embed_pos is not None:
            x = 0.707106781 * (x + self.embed_pos.weight.to(dtype))
        return self.embed_scale * x

    def recursion_block(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """n updates of z from (x, y, z), then one update of y from (y, z): x is not given to the y update."""
        for _ in range(self.n):
            z = self.net(z, y + x, self.rotary)
        y = self.net(y, z, self.rotary)
        return y, z

    def forward(
        self, y: torch.Tensor, z: torch.Tensor, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor
    ) -> StepOutput:
        """One supervision step: T recursion blocks, gradients through the last one only."""
        x = self.embed(inputs, puzzle_identifiers)
        with torch.no_grad():
            for _ in range(self.T - 1):
                y, z = self.recursion_block(x, y, z)
        y, z = self.recursion_block(x, y, z)
        logits = self.output_head(y)[:, self.config.prefix_len :]
        q = self.q_head(y[:, 0]).float()
        return StepOutput(y.detach(), z.detach(), logits, q[:, 0], q[:, 1])

    # -- persistence ---------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """Trainable parameters (the puzzle-embedding table is a buffer and is excluded, like the official count)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.json` and `model.safetensors` (weights + fixed init states + puzzle table)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(tensors, tmp, metadata={"format": "pt"})
        tmp.replace(directory / WEIGHTS_NAME)
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(self.config.model_dump(), indent=2) + "\n")
        tmp.replace(directory / CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> TRM:
        """Load a directory written by `save_pretrained`; any problem is one CheckpointError line."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{directory}: not a trm checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            config = model_config_from_json(directory / CONFIG_NAME)
        except (ConfigError, OSError) as err:
            raise CheckpointError(f"{directory}: bad {CONFIG_NAME}: {err}") from None
        try:
            tensors = load_file(directory / WEIGHTS_NAME, device=str(map_location))
        except Exception as err:  # safetensors raises several types for a corrupt file
            raise CheckpointError(f"{directory / WEIGHTS_NAME}: corrupt weights file ({err})") from None
        return cls.from_state(config, tensors, source=str(directory)).to(map_location)

    @classmethod
    def from_state(cls, config: ModelConfig, tensors: dict[str, torch.Tensor], source: str) -> TRM:
        """Build a model from weights, with one CheckpointError line (naming `source`) if they do not fit."""
        model = cls(config)
        check_fits(model.state_dict(), tensors, source)
        model.load_state_dict(tensors)
        return model


def check_fits(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    """One CheckpointError line (naming `source`) unless `tensors` has exactly the names and shapes expected."""
    missing, unexpected = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the config (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    bad = [k for k, v in expected.items() if v.shape != tensors[k].shape]
    if bad:
        raise CheckpointError(
            f"{source}: weight {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, "
            f"the config implies {tuple(expected[bad[0]].shape)}"
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as given, or a run directory's newest checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    last = path / "checkpoints" / "last"
    return path / "checkpoints" / last.read_text().strip() if last.is_file() else path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[TRM, Path]:
    """A checkpoint directory, or a run directory (its newest checkpoint), in eval mode, with its path."""
    path = resolve_checkpoint(path)
    return TRM.from_pretrained(path, map_location=device).eval(), path
