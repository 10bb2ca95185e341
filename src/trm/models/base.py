"""What every recursive model shares: the input embedding x, the output and halting heads, the state (y, z)
interface the deep-supervision trainer, the evaluator and the inference engine drive, and persistence.

A model is one supervision step: `forward(y, z, inputs, puzzle_identifiers) -> StepOutput`, with
`initial_state(B)` and `reset_state(mask, y, z)` for the carry. y is the state the heads read (TRM's answer,
HRM's high-level state); z is whatever else the model carries (TRM's latent, HRM's low-level state, several
latents, or nothing: a [B, 0, D] tensor). Every state tensor has the batch first, so the trainer and the
engine can slice, gather and save rows without knowing the model. A new model is one subclass with an `arch`
name; `RecursiveModel.from_pretrained` finds the class from the checkpoint's config.
"""

from __future__ import annotations

import functools
import json
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trm.config import ModelConfig, model_config_from_json
from trm.errors import CheckpointError, ConfigError
from trm.integrity import verify_checksums
from trm.models.layers import Block, Embedding, Linear, PuzzleEmbedding, Rotary, trunc_normal_

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class StepOutput(NamedTuple):
    y: torch.Tensor  # [B, P+L, D], detached
    z: torch.Tensor  # [B, ...], detached
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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 natively: NVIDIA GPUs from Ampere on (compute capability 8; a V100 or T4
    emulates it, slower than float32), ROCm GPUs, MPS, and CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return device.type == "mps"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype (weights stay float32 and are cast per operation). "auto" is bfloat16 where the
    device runs it natively (`native_bf16`) and float32 elsewhere; TRM_CPU_DTYPE (float32 | bfloat16)
    overrides the CPU choice."""
    if name != "auto":
        return getattr(torch, name)
    forced = os.environ.get("TRM_CPU_DTYPE")
    if device.type == "cpu" and forced in ("float32", "bfloat16"):
        return getattr(torch, forced)
    return torch.bfloat16 if native_bf16(device) else torch.float32


def pick_device(name: str = "auto") -> torch.device:
    """ "auto": CUDA, else MPS, else CPU; any other name as torch spells it. A bad name, or a device this machine
    does not have, is a ConfigError (not a confusing failure later, when the weights are moved there)."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"unknown device {name!r} (try auto, cpu, cuda, cuda:1, mps)") from None
        mps = getattr(torch.backends, "mps", None)
        have = {
            "cpu": device.index in (None, 0),  # one CPU device: "cpu:7" would pass here and fail later
            "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
            "mps": bool(mps and mps.is_available()),
        }
        if not have.get(device.type, False):
            raise ConfigError(f"device {name!r} is not available here (trm runs on cpu, cuda or mps; try auto)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Reasoner(nn.Module):
    """A stack of `num_layers` post-norm blocks; the injection (if any) is added once before the first."""

    def __init__(self, cfg: ModelConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(
                cfg.hidden_size,
                cfg.num_heads,
                cfg.expansion,
                cfg.mixer,
                cfg.total_len,
                cfg.rms_norm_eps,
                cfg.conv_kernel,
            )
            for _ in range(num_layers)
        )

    def forward(self, h: torch.Tensor, injection: torch.Tensor | None, rotary: Rotary | None) -> torch.Tensor:
        if injection is not None:
            h = h + injection
        for layer in self.layers:
            h = layer(h, rotary)
        return h


def init_state(dim: int, *lead: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A fixed random starting state (truncated normal, std 1): saved with the model (in float32), never
    trained. Drawn in `dtype`, the compute dtype, as the official code draws its H_init / L_init in its
    forward dtype: built on the CPU under the same seed, a bfloat16 model of either code starts from the same
    states (the official pretrain.py builds on the GPU, from CUDA's generator, which no CPU draw matches)."""
    return trunc_normal_(torch.empty(*lead, dim, dtype=dtype), std=1.0).float()


class RecursiveModel(nn.Module, ABC):
    """The input embedding and the heads; subclasses build their networks after `__init__`, then their
    initial states, and define the abstract members below (the class cannot be instantiated without them).

    Tensors draw their initial values in the official order (token embedding, output head, Q head, positions,
    the reasoning layers, the initial states), so a seed gives the official code's own initial weights for that
    seed (`torch.manual_seed` before building; the initial states in the compute dtype `config.dtype` resolves
    to on `device`): the initial draw is the largest single source of seed-to-seed variance in short runs
    (BENCHMARKS.md section 9, fourth round)."""

    arch: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[RecursiveModel]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.arch:
            RecursiveModel._registry[cls.arch] = cls

    def __init__(self, config: ModelConfig, device: torch.device | None = None):
        super().__init__()
        if self.arch and config.arch != self.arch:
            raise ConfigError(f"config is for arch {config.arch!r}, not {self.arch!r}")
        self.config = cfg = config
        # the dtype the initial states are drawn in (construction only: `device` is where the model will
        # compute; a model built without it and moved to a GPU under dtype "auto" drew float32 states)
        self.state_dtype = resolve_dtype(cfg.dtype, device or torch.device("cpu"))
        self.T, self.n = cfg.T, cfg.n  # the recursion depth in use: the config's, unless a curriculum lowers it
        self._dtype_for: tuple[str, torch.device, torch.dtype] | None = None  # see compute_dtype
        d = cfg.hidden_size
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = Embedding(cfg.vocab_size, d, init_std=1 / self.embed_scale)
        self._build_heads()
        self.puzzle_emb = (
            PuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim) if cfg.puzzle_emb_ndim else None
        )
        self.embed_pos = (
            Embedding(cfg.total_len, d, init_std=1 / self.embed_scale) if cfg.pos_encoding == "learned" else None
        )
        use_rope = cfg.pos_encoding == "rope" and cfg.mixer == "attention"
        self.rotary = Rotary(d // cfg.num_heads, cfg.total_len, cfg.rope_theta) if use_rope else None

    def _build_heads(self) -> None:
        d, vocab = self.config.hidden_size, self.config.vocab_size
        self.output_head = Linear(d, vocab)
        self.q_head = Linear(d, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)  # start by almost never halting

    # -- what a subclass defines ----------------------------------------------------------------------------
    @property
    @abstractmethod
    def blocks_per_step(self) -> int:
        """Network block applications in one supervision step of one puzzle (the unit of compute)."""

    @property
    @abstractmethod
    def grad_blocks_per_step(self) -> int:
        """Of those, the ones on the gradient path (the rest run without gradients)."""

    @property
    def train_blocks_per_step(self) -> int:
        """Forward block applications of one training supervision step: with Q-learning halting (q_continue,
        HRM) the trainer runs a second, no-grad step for the bootstrapped target."""
        bootstrap = self.config.q_continue and self.config.N_sup > 1
        return self.blocks_per_step * (2 if bootstrap else 1)

    @abstractmethod
    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, z) for `batch_size` fresh puzzles: the saved initial states at every position."""

    @abstractmethod
    def forward(
        self, y: torch.Tensor, z: torch.Tensor, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor
    ) -> StepOutput:
        """One supervision step from the carried (y, z)."""

    def reset_state(self, reset: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put rows where `reset` is True back at the initial state."""
        y0, z0 = self.initial_state(1)
        return _where_rows(reset, y0, y), _where_rows(reset, z0, z)

    # -- shared pieces --------------------------------------------------------------------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        """Resolved once per (config dtype, device): resolving reads the environment and /proc/cpuinfo, which
        inside a compiled step would be a graph break at every forward."""
        name, device = self.config.dtype, self.embed_tokens.weight.device
        cached = self._dtype_for
        if cached is None or cached[0] != name or cached[1] != device:
            cached = self._dtype_for = (name, device, resolve_dtype(name, device))
        return cached[2]

    def _broadcast(self, init: torch.Tensor, batch_size: int, *lead: int) -> torch.Tensor:
        """A saved [*lead, D] initial state at every position of every row: [B, *lead, P+L, D]."""
        cfg = self.config
        shape = (batch_size, *lead, cfg.total_len, cfg.hidden_size)
        return init.to(self.compute_dtype).view(*lead, 1, cfg.hidden_size).expand(shape).clone()

    def _empty(self, batch_size: int) -> torch.Tensor:
        """The state of a model that carries no z."""
        return torch.empty(batch_size, 0, self.config.hidden_size, dtype=self.compute_dtype, device=self.device)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

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

    def heads(self, y: torch.Tensor, z: torch.Tensor) -> StepOutput:
        """Logits from y (without the puzzle prefix), halting logits from y's first position; the carry detached."""
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
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> RecursiveModel:
        """Load a directory written by `save_pretrained`, as the class its config names (called on a subclass,
        the checkpoint must be of that class); any problem is one CheckpointError line. A Hub id (`org/name`,
        `org/name@revision`) that is not a local path is downloaded into the Hub cache first."""
        directory = resolve_hub(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{directory}: not a trm checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        verify_checksums(directory)  # checkpoints written by the trainer list their files' SHA-256
        try:
            config = model_config_from_json(directory / CONFIG_NAME)
        except (ConfigError, OSError) as err:
            raise CheckpointError(f"{directory}: bad {CONFIG_NAME}: {err}") from None
        if cls.arch and config.arch != cls.arch:
            raise CheckpointError(f"{directory}: an {config.arch} checkpoint, not {cls.arch}")
        try:
            tensors = load_file(directory / WEIGHTS_NAME, device=str(map_location))
        except Exception as err:  # safetensors raises several types for a corrupt file
            raise CheckpointError(f"{directory / WEIGHTS_NAME}: corrupt weights file ({err})") from None
        return build_model(config).load_checked(tensors, source=str(directory)).to(map_location)

    @classmethod
    def from_state(cls, config: ModelConfig, tensors: dict[str, torch.Tensor], source: str) -> RecursiveModel:
        """Build a model from weights, with one CheckpointError line (naming `source`) if they do not fit."""
        return build_model(config).load_checked(tensors, source)

    def load_checked(self, tensors: dict[str, torch.Tensor], source: str) -> RecursiveModel:
        check_fits(self.state_dict(), tensors, source)
        self.load_state_dict(tensors)
        return self


def build_model(config: ModelConfig, device: torch.device | None = None) -> RecursiveModel:
    """The model class registered for `config.arch`, freshly initialised for computing on `device` (default
    the CPU; it decides the dtype of the initial states' draw, see `init_state`)."""
    try:
        cls = RecursiveModel._registry[config.arch]
    except KeyError:
        known = ", ".join(sorted(RecursiveModel._registry))
        raise ConfigError(f"unknown arch {config.arch!r}; known: {known}") from None
    return cls(config, device)


def _where_rows(reset: torch.Tensor, init: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    return torch.where(reset.view(-1, *[1] * (state.dim() - 1)), init.to(state.dtype), state)


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


def resolve_hub(path: str | Path) -> Path:
    """`path` itself, or for a Hub id that is not a local path (`org/name[@revision]`) its snapshot in the Hub
    cache, downloaded if needed (`trm.hub`)."""
    from trm import hub

    return hub.download(str(path)) if hub.parse_hub_id(path) else Path(path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as given (or a Hub id: its downloaded snapshot), or a run directory's newest
    checkpoint."""
    path = resolve_hub(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    last = path / "checkpoints" / "last"
    if last.is_file():
        return path / "checkpoints" / last.read_text().strip()
    if any((path / name).is_file() for name in ("metrics.jsonl", "train_state.pt")):  # a run's, not a checkpoint's
        raise CheckpointError(
            f"{path}: a run directory with no checkpoint yet (one is written at each evaluation and at the end)"
        )
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[RecursiveModel, Path]:
    """A checkpoint directory, or a run directory (its newest checkpoint), in eval mode, with its path."""
    path = resolve_checkpoint(path)
    return RecursiveModel.from_pretrained(path, map_location=device).eval(), path
