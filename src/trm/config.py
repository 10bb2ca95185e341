"""Typed configs. A `ModelConfig` fully describes a model; a `TrainConfig` fully describes a run.

Names follow the TRM paper. The official code (SamsungSAILMontreal/TinyRecursiveModels, sapientinc/HRM)
uses other names; this table is the one place where the mapping lives:

    paper / trm            official code            meaning
    ------------------     ---------------------    ------------------------------------------
    y                      z_H                      current answer state
    z                      z_L                      latent reasoning state
    T                      H_cycles                 recursion blocks per supervision step
    n                      L_cycles                 z-updates per recursion block
    N_sup                  halt_max_steps           maximum supervision steps
    num_layers             L_layers                 blocks in the (single) network
    mixer="mlp"            mlp_t=True               MLP across positions instead of attention
    pos_encoding           pos_encodings            "rope" | "learned" | "none"
    q_continue             not no_ACT_continue      HRM-style Q-continue head and target
    y_init, z_init         H_init, L_init           fixed, saved, untrained initial states

    HRM (arch="hrm", sapientinc/HRM hrm_act_v1) in the same names:
    y, z                   z_H, z_L                 high-level and low-level states
    f_H, f_L               H_level, L_level         the two networks (f_L updates z, f_H updates y)
    T, n                   H_cycles, L_cycles       high-level cycles, low-level steps per cycle
    num_h_layers           H_layers                 blocks of f_H (num_layers is f_L's, L_layers)

    Variants (official file -> trm switch): trm_singlez -> latent="single"; trm_hier6 -> latent="multi",
    num_z=6; transformers_baseline (Model_ACTV2) -> arch="transformer", num_layers = H_layers.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trm.errors import ConfigError


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model. Data-dependent sizes are part of it (HF style)."""

    model_config = ConfigDict(extra="forbid")

    arch: Literal["trm", "hrm", "transformer"] = "trm"
    vocab_size: int = Field(11, gt=0)
    seq_len: int = Field(81, gt=0)
    num_puzzle_identifiers: int = Field(1, gt=0)

    hidden_size: int = Field(512, gt=0)
    num_heads: int = Field(8, gt=0)
    expansion: float = Field(4.0, gt=0)
    num_layers: int = Field(2, gt=0)  # TRM: the one network; HRM: f_L; transformer: the whole stack
    num_h_layers: int | None = Field(None, gt=0)  # HRM only: f_H's blocks (default: num_layers)
    T: int = Field(3, ge=1)
    n: int = Field(6, ge=1)
    N_sup: int = Field(16, ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0.0, le=1.0)
    q_continue: bool = False

    # Ablations of TRM (arch="trm" only); the defaults are the paper's model.
    latent: Literal["yz", "single", "multi"] = "yz"  # answer y + latent z | one latent | y + num_z latents
    num_z: int | None = Field(None, gt=1)  # latent="multi": how many z tensors (official trm_hier6: 6)
    gradient: Literal["last_block", "one_step"] = "last_block"  # through the last block | its last 2 updates
    conv_kernel: int = Field(0, ge=0)  # > 0: ConvSwiGLU (URM) with this depthwise kernel; any arch

    mixer: Literal["attention", "mlp"] = "attention"
    pos_encoding: Literal["rope", "learned", "none"] = "rope"
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)

    puzzle_emb_ndim: int = Field(512, ge=0)
    puzzle_emb_len: int = Field(16, ge=0)

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.mixer == "attention" and self.num_heads > self.hidden_size:
            raise ValueError(f"num_heads {self.num_heads} is more than hidden_size {self.hidden_size}")
        if self.pos_encoding == "rope" and self.mixer == "attention" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError("rope needs an even head dimension")
        if self.arch != "trm":
            for name, default in (("latent", "yz"), ("gradient", "last_block")):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name}={getattr(self, name)} is a TRM ablation; arch {self.arch} has no such switch"
                    )
        if self.num_z is not None and self.latent != "multi":
            raise ValueError("num_z applies only to latent=multi")
        if self.latent == "multi" and self.n > self.z_count:
            raise ValueError(f"latent=multi updates one z per step: n={self.n} needs num_z >= n (got {self.z_count})")
        if self.num_h_layers is not None and self.arch != "hrm":
            raise ValueError(f"num_h_layers is HRM's f_H depth; arch {self.arch} has one network (use num_layers)")
        if self.puzzle_emb_len and self.puzzle_emb_ndim > self.puzzle_emb_len * self.hidden_size:
            raise ValueError("puzzle_emb_ndim does not fit in puzzle_emb_len * hidden_size")
        return self

    @property
    def h_layers(self) -> int:
        """HRM's f_H depth (num_h_layers, default num_layers)."""
        return self.num_h_layers or self.num_layers

    @property
    def z_count(self) -> int:
        """Latent z tensors the state carries (latent="multi": num_z, default 6 as the official trm_hier6)."""
        return (self.num_z or 6) if self.latent == "multi" else 1

    @property
    def prefix_len(self) -> int:
        """Positions prepended for the puzzle embedding (official: puzzle_emb_len, or ceil(ndim / D))."""
        if self.puzzle_emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def total_len(self) -> int:
        return self.seq_len + self.prefix_len


_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float | None:
    """Seconds from 600, "600", "90s", "10m", "1.5h" or "1h30m"; None stays None."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value is None else float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", text).strip():
        raise ValueError(f"not a duration: {value!r} (examples: 600, 90s, 10m, 1h30m)")
    return sum(float(n) * _TIME_UNITS[u] for n, u in parts)


class DepthStage(BaseModel):
    """One stage of the depth curriculum: until this fraction of training, recurse this deep (fields left
    out keep the model's own value)."""

    model_config = ConfigDict(extra="forbid")

    until: float = Field(gt=0, le=1)
    T: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    N_sup: int | None = Field(None, ge=1)


class TrainConfig(BaseModel):
    """A training run: the model, the data and the optimisation recipe (official defaults)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = ModelConfig()
    data: str | None = None
    eval_data: str | None = None

    global_batch_size: int = Field(768, gt=0)
    micro_batch_size: int | None = Field(None, gt=0)  # per process; < its share of the batch: accumulate
    epochs: int = Field(50000, gt=0)
    eval_interval: int = Field(5000, gt=0)
    max_steps: int | None = Field(None, gt=0)
    max_time: float | None = Field(None, gt=0)  # seconds ("10m" accepted): a wall-clock budget, epochs ignored
    eval_max_examples: int | None = Field(None, gt=0)

    lr: float = Field(1e-4, ge=0)
    lr_min_ratio: float = Field(1.0, ge=0, le=1)
    lr_warmup_steps: int = Field(2000, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    weight_decay: float = Field(1.0, ge=0)
    puzzle_emb_lr: float = Field(1e-4, ge=0)
    puzzle_emb_weight_decay: float = Field(1.0, ge=0)

    loss_type: Literal["stablemax", "softmax"] = "stablemax"
    ema: bool = True
    ema_rate: float = Field(0.999, ge=0, le=1)
    eval_halt: bool = False
    depth_schedule: list[DepthStage] = []  # CGAR-style curriculum: shallower recursion early in training
    supervision_decay: float = Field(1.0, gt=0, le=1)  # loss weight decay^(s-1) at supervision step s
    init_from: str | None = None  # warm start: a trm checkpoint or run directory, or an official checkpoint

    seed: int = 0
    device: str = "auto"
    compile: bool = False  # torch.compile the supervision step (official default on GPU): ~1.4x on CPU
    log_every: int = Field(10, gt=0)
    save_every: float = Field(300.0, gt=0)  # seconds ("5m" accepted) between saves of the resumable state
    tensorboard: bool = False
    wandb: bool = False

    @field_validator("max_time", "save_every", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return parse_duration(value)

    @field_validator("depth_schedule")
    @classmethod
    def _stages_in_order(cls, stages: list[DepthStage]) -> list[DepthStage]:
        ends = [s.until for s in stages]
        if ends != sorted(set(ends)):
            raise ValueError(f"depth_schedule stages must have increasing `until`, got {ends}")
        return stages

    @model_validator(mode="after")
    def _check_run(self) -> TrainConfig:
        m = self.model
        for stage in self.depth_schedule:
            if m.arch == "transformer" and (stage.T is not None or stage.n is not None):
                raise ValueError("depth_schedule T and n do not apply to arch transformer (no recursion); use N_sup")
            for name in ("T", "n", "N_sup"):
                value = getattr(stage, name)
                if value is not None and value > getattr(m, name):
                    raise ValueError(f"depth_schedule {name}={value} is deeper than the model's {getattr(m, name)}")
        return self


PRESET_DIR = "presets"


def list_presets() -> list[str]:
    files = resources.files("trm").joinpath(PRESET_DIR).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset is a YAML file of TrainConfig fields in `trm/presets/`; `extends: other` starts from the
    preset `other` and changes only what the file gives (so sibling recipes never repeat each other)."""
    path = resources.files("trm").joinpath(PRESET_DIR, f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    if name in _seen:
        raise ConfigError(f"preset {name!r} extends itself (via {' -> '.join(_seen)})")
    raw = yaml.safe_load(path.read_text()) or {}
    parent = raw.pop("extends", None)
    return _merge(load_preset(parent, (*_seen, name)), raw) if parent else raw


def _parse_value(text: str) -> Any:
    """`key=value` values are YAML scalars: 1e-4, true, none, rope, [1, 2]."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides. Model fields may be given bare (`hidden_size=64`) or dotted."""
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    train_fields, model_fields = set(TrainConfig.model_fields), set(ModelConfig.model_fields)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        path = key.strip().split(".")
        if len(path) == 1 and path[0] not in train_fields and path[0] in model_fields:
            path = ["model", path[0]]
        nested = path[0] == "model" and len(path) == 2 and path[1] in model_fields  # `model` is the one section
        if path[0] not in train_fields or (len(path) > 1 or path[0] == "model") and not nested:
            raise ConfigError(f"unknown config field {key!r}")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_value(value)
    return raw


def validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a check across fields: the input is the whole config, too long to echo
        return f"bad config: {msg}"
    where = ".".join(str(p) for p in first["loc"])
    return f"bad config value for {where}: {msg} (got {first.get('input')!r})"


def build_train_config(preset: str | None, overrides: list[str] = ()) -> TrainConfig:
    raw = load_preset(preset) if preset else {}
    raw = apply_overrides(raw, list(overrides))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(validation_message(err)) from None


def model_config_from_json(path: Path) -> ModelConfig:
    try:
        return ModelConfig.model_validate_json(Path(path).read_text())
    except ValidationError as err:
        raise ConfigError(f"{path}: {validation_message(err)}") from None
