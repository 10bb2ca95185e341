"""Importing checkpoints written by the official code: TRM and its variants (SamsungSAILMontreal/
TinyRecursiveModels: trm, trm_singlez, trm_hier6, transformers_baseline) and HRM (sapientinc/HRM hrm_act_v1,
or the copy in the TRM repository).

The official `pretrain.py` saves `torch.save(model.state_dict())` of `ACTLossHead(model)`, usually compiled,
so keys look like `_orig_mod.model.inner.L_level.layers.0.mlp.gate_up_proj.weight`, and dumps its hydra
config to `all_config.yaml` beside the file. Name mapping (official -> trm), after stripping the
`_orig_mod.` and `model.inner.` prefixes:

    embed_tokens.embedding_weight               embed_tokens.weight
    embed_pos.embedding_weight                  embed_pos.weight
    puzzle_emb.weights                          puzzle_emb.weight
    lm_head.weight                              output_head.weight
    q_head.{weight,bias}                        q_head.{weight,bias}
    H_init / L_init                             y_init / z_init   (trm_singlez: L_init -> z_init)
    L1_init .. L6_init (trm_hier6)              z_init, stacked [6, D]
    L_level (TRM), H_level (baseline)           net
    L_level / H_level (HRM)                     f_L / f_H
    <level>.layers.i.self_attn.qkv_proj.weight  <net>.layers.i.attn.qkv.weight
    <level>.layers.i.self_attn.o_proj.weight    <net>.layers.i.attn.out.weight
    <level>.layers.i.mlp.gate_up_proj.weight    <net>.layers.i.mlp.gate_up.weight
    <level>.layers.i.mlp.down_proj.weight       <net>.layers.i.mlp.down.weight
    <level>.layers.i.mlp_t.gate_up_proj.weight  <net>.layers.i.token_mlp.gate_up.weight
    <level>.layers.i.mlp_t.down_proj.weight     <net>.layers.i.token_mlp.down.weight

The variant shows in the weights themselves (two levels: HRM; only H_level: the baseline; L1_init: hier6;
no H_init: singlez), so an official file converts, or warm-starts a run, without its config. The config
does not record vocab_size, seq_len or num_puzzle_identifiers (they come from the data at run time): they
are read off the weights where they show (vocabulary, identifiers, seq_len for the MLP mixer or learned
positions), else from the data set named in the config, else from `seq_len=`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from trm.config import ModelConfig
from trm.errors import CheckpointError
from trm.models import RecursiveModel
from trm.models.base import WEIGHTS_NAME, check_fits, resolve_checkpoint

LEAVES = [
    (r"^embed_tokens\.embedding_weight$", "embed_tokens.weight"),
    (r"^embed_pos\.embedding_weight$", "embed_pos.weight"),
    (r"^puzzle_emb\.weights$", "puzzle_emb.weight"),
    (r"^lm_head\.weight$", "output_head.weight"),
    (r"^q_head\.(weight|bias)$", r"q_head.\1"),
    (r"^(H|L\d?)_init$", r"\1_init"),  # renamed per variant in `_rename_inits`
    (r"^(\w+)\.layers\.(\d+)\.self_attn\.qkv_proj\.weight$", r"\1.layers.\2.attn.qkv.weight"),
    (r"^(\w+)\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"\1.layers.\2.attn.out.weight"),
    (r"^(\w+)\.layers\.(\d+)\.mlp\.gate_up_proj\.weight$", r"\1.layers.\2.mlp.gate_up.weight"),
    (r"^(\w+)\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"\1.layers.\2.mlp.down.weight"),
    (r"^(\w+)\.layers\.(\d+)\.mlp_t\.gate_up_proj\.weight$", r"\1.layers.\2.token_mlp.gate_up.weight"),
    (r"^(\w+)\.layers\.(\d+)\.mlp_t\.down_proj\.weight$", r"\1.layers.\2.token_mlp.down.weight"),
]
LEVELS = {"L_level", "H_level"}
SKIPPED = re.compile(r"(^|\.)(local_weights|local_ids|cos_cached|sin_cached)$")
ARCH_FIELDS = {
    "hidden_size": "hidden_size",
    "num_heads": "num_heads",
    "expansion": "expansion",
    "H_cycles": "T",
    "L_cycles": "n",
    "halt_max_steps": "N_sup",
    "halt_exploration_prob": "halt_exploration_prob",
    "pos_encodings": "pos_encoding",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "puzzle_emb_ndim": "puzzle_emb_ndim",
    "puzzle_emb_len": "puzzle_emb_len",
}
# Official config names by variant, to check a config against the weights it sits beside.
NAME_HINTS = {"hrm": ("hrm",), "transformer": ("transformers_baseline", "Model_ACTV2"), "trm": ("trm",)}


def _strip(key: str) -> str:
    for prefix in ("_orig_mod.", "model.", "inner."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def variant_of(keys: set[str]) -> tuple[str, dict]:
    """(arch, model fields) of the official model these (stripped) keys come from."""
    levels = {k.split(".")[0] for k in keys if k.split(".")[0] in LEVELS}
    if levels == LEVELS:
        return "hrm", {"q_continue": True}
    if levels == {"H_level"}:
        return "transformer", {}
    if "L1_init" in keys:
        return "trm", {"latent": "multi", "num_z": sum(bool(re.match(r"^L\d_init$", k)) for k in keys)}
    if "L_init" in keys and "H_init" not in keys:
        return "trm", {"latent": "single"}
    return "trm", {}


def _rename(key: str, arch: str) -> str:
    nets = {"hrm": {"L_level": "f_L", "H_level": "f_H"}}.get(arch, {"L_level": "net", "H_level": "net"})
    for pattern, repl in LEAVES:
        if re.match(pattern, key):
            out = re.sub(pattern, repl, key)
            head, _, rest = out.partition(".")
            return f"{nets[head]}.{rest}" if head in nets and rest else out
    raise CheckpointError(f"unknown key {key!r} in the official checkpoint (not a TRM or HRM model?)")


def _rename_inits(weights: dict[str, torch.Tensor], fields: dict) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in weights.items() if not re.match(r"^(H|L\d?)_init$", k)}
    if fields.get("latent") == "single":
        out["z_init"] = weights["L_init"]
        return out
    if "H_init" in weights:
        out["y_init"] = weights["H_init"]
    if fields.get("latent") == "multi":
        out["z_init"] = torch.stack([weights[f"L{i + 1}_init"] for i in range(fields["num_z"])])
    elif "L_init" in weights:
        out["z_init"] = weights["L_init"]
    return out


def _read_config(path: Path) -> dict:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: cannot read the official config ({err})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), dict):
        raise CheckpointError(f"{path}: no `arch` section; is this an official all_config.yaml?")
    return cfg


def _check_name(path: Path, cfg: dict, arch: str) -> None:
    name = str(cfg["arch"].get("name", ""))
    if name and not any(h in name for hints in NAME_HINTS.values() for h in hints):
        raise CheckpointError(f"{path}: architecture {name!r} is neither TRM, HRM nor the transformer baseline")
    if name and not any(h in name for h in NAME_HINTS[arch]):
        raise CheckpointError(f"{path}: the config names {name!r}, but the weights are of an {arch} model")


def _seq_len(cfg: dict, weights: dict[str, torch.Tensor], prefix_len: int, given: int | None) -> int:
    if given:
        return given
    for key, tensor in weights.items():
        if key.endswith("token_mlp.down.weight"):
            return tensor.shape[0] - prefix_len
        if key == "embed_pos.weight":
            return tensor.shape[0] - prefix_len
    paths = cfg.get("data_paths") or ([cfg["data_path"]] if cfg.get("data_path") else [])  # TRM | HRM
    for data_path in paths:
        meta = Path(data_path) / "train" / "dataset.json"
        if meta.is_file():
            return int(json.loads(meta.read_text())["seq_len"])
    raise CheckpointError(
        "cannot tell the sequence length from this checkpoint: pass --seq-len (81 for Sudoku, 900 for Maze/ARC)"
    )


def convert_official(
    checkpoint: Path,
    out: Path,
    config_path: Path | None = None,
    seq_len: int | None = None,
    num_puzzle_identifiers: int | None = None,
) -> tuple[Path, list[str]]:
    """Write a trm checkpoint directory equivalent to an official checkpoint file; with
    `num_puzzle_identifiers`, the puzzle-embedding table is resized to that many rows, each at the mean of
    the official rows (for data with another puzzle count). Returns the directory and what was done."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    config_path = Path(config_path) if config_path else checkpoint.parent / "all_config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; pass --config all_config.yaml")
    cfg = _read_config(config_path)
    arch_name, variant, weights = read_official_variant(checkpoint)
    _check_name(config_path, cfg, arch_name)

    arch = cfg["arch"]
    fields = {ours: arch[theirs] for theirs, ours in ARCH_FIELDS.items() if theirs in arch}
    fields.update(variant, arch=arch_name)
    layers = {"trm": arch.get("L_layers"), "hrm": arch.get("L_layers"), "transformer": arch.get("H_layers")}
    fields["num_layers"] = layers[arch_name]
    if arch_name == "hrm":
        fields["num_h_layers"] = arch.get("H_layers")
    if arch_name != "trm":  # HRM and the baseline give the puzzle embedding ceil(ndim / D) positions
        fields["puzzle_emb_len"] = 0
    if arch_name == "trm":
        fields["q_continue"] = not arch.get("no_ACT_continue", True)
    fields["mixer"] = "mlp" if arch.get("mlp_t") else "attention"
    if fields.get("pos_encoding") not in ("rope", "learned"):
        fields["pos_encoding"] = "none"
    if "embed_tokens.weight" not in weights:
        raise CheckpointError(f"{checkpoint}: no token embedding; is this an official checkpoint?")
    fields["vocab_size"] = weights["embed_tokens.weight"].shape[0]
    notes = [f"official {arch_name} checkpoint" + (f" ({variant})" if variant else "")]
    if "puzzle_emb.weight" in weights:
        table = weights["puzzle_emb.weight"]
        if num_puzzle_identifiers and num_puzzle_identifiers != table.shape[0]:
            weights["puzzle_emb.weight"] = table.mean(0, keepdim=True).expand(num_puzzle_identifiers, -1).clone()
            notes.append(
                f"puzzle embedding table resized from {table.shape[0]} to {num_puzzle_identifiers} rows, "
                "each at the mean of the official rows"
            )
        fields["num_puzzle_identifiers"] = weights["puzzle_emb.weight"].shape[0]
    else:
        fields["puzzle_emb_ndim"] = 0
    try:
        probe = ModelConfig(**{**fields, "seq_len": 1})
    except ValueError as err:
        raise CheckpointError(f"{config_path}: cannot express this config in trm ({err})") from None
    fields["seq_len"] = _seq_len(cfg, weights, probe.prefix_len, seq_len)
    try:
        config = ModelConfig(**fields)
    except ValueError as err:
        raise CheckpointError(f"{config_path}: cannot express this config in trm ({err})") from None

    model = RecursiveModel.from_state(config, weights, source=str(checkpoint))
    model.save_pretrained(out)
    return Path(out), notes


def read_official_variant(checkpoint: Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(arch, variant fields, weights under trm's names in float32) of an official checkpoint file: bf16 init
    states and weights become fp32 masters; buffers trm does not keep are dropped."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # zip/pickle errors vary with the damage
        raise CheckpointError(f"{checkpoint}: corrupt or not a torch checkpoint ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{checkpoint}: not a state dict of tensors (an official checkpoint file?)")
    stripped = {_strip(k): v.float() for k, v in state.items() if not SKIPPED.search(_strip(k))}
    arch, variant = variant_of(set(stripped))
    weights = _rename_inits({_rename(k, arch): v for k, v in stripped.items()}, variant)
    return arch, variant, weights


def read_official(checkpoint: Path) -> dict[str, torch.Tensor]:
    """An official checkpoint file's weights under trm's names, float32."""
    return read_official_variant(checkpoint)[2]


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights under trm's names from a trm checkpoint directory, a run directory (its newest checkpoint) or
    an official checkpoint file; float32 on the CPU."""
    path = resolve_checkpoint(path)
    if path.is_file():
        return read_official(path)
    if not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{path}: not a trm checkpoint (no {WEIGHTS_NAME})")
    try:
        return {k: v.float() for k, v in load_file(path / WEIGHTS_NAME).items()}
    except Exception as err:  # safetensors raises several types for a corrupt file
        raise CheckpointError(f"{path / WEIGHTS_NAME}: corrupt weights file ({err})") from None


@torch.no_grad()
def warm_start(model: RecursiveModel, path: str | Path) -> list[str]:
    """Load a checkpoint's weights into `model` for continued training or fine-tuning (the optimizer starts
    fresh). Every weight must match in shape except the puzzle-embedding table: one of another size is reset
    to the mean of the loaded rows, as the official code does. Returns what it did, one line each."""
    weights = read_weights(path)
    own = model.state_dict()
    notes = []
    table = "puzzle_emb.weight"
    if table in weights and table in own and weights[table].shape != own[table].shape:
        loaded = weights[table]
        if loaded.shape[1:] != own[table].shape[1:]:
            raise CheckpointError(
                f"{path}: puzzle embeddings of width {loaded.shape[1]}, this model's are {own[table].shape[1]}"
            )
        weights[table] = loaded.mean(dim=0, keepdim=True).expand_as(own[table]).clone()
        notes.append(
            f"puzzle embedding table has {loaded.shape[0]} rows, this data set needs {own[table].shape[0]}: "
            "every row starts at the mean of the loaded ones"
        )
    check_fits(own, weights, str(path))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    notes.insert(0, f"warm start from {path}: {len(weights)} tensors loaded, new optimizer state")
    return notes
