"""Importing checkpoints written by the official TRM code (SamsungSAILMontreal/TinyRecursiveModels).

The official `pretrain.py` saves `torch.save(model.state_dict())` of `ACTLossHead(TRM_ACTV1)`, usually
compiled, so keys look like `_orig_mod.model.inner.L_level.layers.0.mlp.gate_up_proj.weight`, and dumps its
hydra config to `all_config.yaml` beside the file. Name mapping (official -> trm), after stripping the
`_orig_mod.` and `model.inner.` prefixes:

    embed_tokens.embedding_weight               embed_tokens.weight
    embed_pos.embedding_weight                  embed_pos.weight
    puzzle_emb.weights                          puzzle_emb.weight
    lm_head.weight                              output_head.weight
    q_head.{weight,bias}                        q_head.{weight,bias}
    H_init / L_init                             y_init / z_init
    L_level.layers.i.self_attn.qkv_proj.weight  net.layers.i.attn.qkv.weight
    L_level.layers.i.self_attn.o_proj.weight    net.layers.i.attn.out.weight
    L_level.layers.i.mlp.gate_up_proj.weight    net.layers.i.mlp.gate_up.weight
    L_level.layers.i.mlp.down_proj.weight       net.layers.i.mlp.down.weight
    L_level.layers.i.mlp_t.gate_up_proj.weight  net.layers.i.token_mlp.gate_up.weight
    L_level.layers.i.mlp_t.down_proj.weight     net.layers.i.token_mlp.down.weight

The official config does not record vocab_size, seq_len or num_puzzle_identifiers (they come from the data
at run time): they are read off the weights where they show (vocabulary, identifiers, seq_len for the MLP
mixer or learned positions), else from the data set named in the config, else from `seq_len=`.
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

RENAMES = [
    (r"^embed_tokens\.embedding_weight$", "embed_tokens.weight"),
    (r"^embed_pos\.embedding_weight$", "embed_pos.weight"),
    (r"^puzzle_emb\.weights$", "puzzle_emb.weight"),
    (r"^lm_head\.weight$", "output_head.weight"),
    (r"^q_head\.(weight|bias)$", r"q_head.\1"),
    (r"^H_init$", "y_init"),
    (r"^L_init$", "z_init"),
    (r"^L_level\.layers\.(\d+)\.self_attn\.qkv_proj\.weight$", r"net.layers.\1.attn.qkv.weight"),
    (r"^L_level\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"net.layers.\1.attn.out.weight"),
    (r"^L_level\.layers\.(\d+)\.mlp\.gate_up_proj\.weight$", r"net.layers.\1.mlp.gate_up.weight"),
    (r"^L_level\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"net.layers.\1.mlp.down.weight"),
    (r"^L_level\.layers\.(\d+)\.mlp_t\.gate_up_proj\.weight$", r"net.layers.\1.token_mlp.gate_up.weight"),
    (r"^L_level\.layers\.(\d+)\.mlp_t\.down_proj\.weight$", r"net.layers.\1.token_mlp.down.weight"),
]
SKIPPED = re.compile(r"(^|\.)(local_weights|local_ids|cos_cached|sin_cached)$")
ARCH_FIELDS = {
    "hidden_size": "hidden_size",
    "num_heads": "num_heads",
    "expansion": "expansion",
    "L_layers": "num_layers",
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


def rename_official(key: str) -> str | None:
    """trm's name for an official key, or None for buffers trm does not keep."""
    for prefix in ("_orig_mod.", "model.", "inner."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if SKIPPED.search(key):
        return None
    for pattern, repl in RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    raise CheckpointError(f"unknown key {key!r} in the official checkpoint (not a TRM model?)")


def _read_config(path: Path) -> dict:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: cannot read the official config ({err})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), dict):
        raise CheckpointError(f"{path}: no `arch` section; is this an official all_config.yaml?")
    name = str(cfg["arch"].get("name", ""))
    if name and "trm@" not in name and not name.endswith("TinyRecursiveReasoningModel_ACTV1"):
        raise CheckpointError(f"{path}: architecture {name!r} is not TRM; trm converts TRM checkpoints")
    return cfg


def _seq_len(cfg: dict, weights: dict[str, torch.Tensor], prefix_len: int, given: int | None) -> int:
    if given:
        return given
    for key, tensor in weights.items():
        if key.endswith("token_mlp.down.weight"):
            return tensor.shape[0] - prefix_len
        if key == "embed_pos.weight":
            return tensor.shape[0] - prefix_len
    for data_path in cfg.get("data_paths") or []:
        meta = Path(data_path) / "train" / "dataset.json"
        if meta.is_file():
            return int(json.loads(meta.read_text())["seq_len"])
    raise CheckpointError(
        "cannot tell the sequence length from this checkpoint: pass --seq-len (81 for Sudoku, 900 for Maze/ARC)"
    )


def convert_official(checkpoint: Path, out: Path, config_path: Path | None = None, seq_len: int | None = None) -> Path:
    """Write a trm checkpoint directory equivalent to an official TRM checkpoint file."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    config_path = Path(config_path) if config_path else checkpoint.parent / "all_config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; pass --config all_config.yaml")
    cfg = _read_config(config_path)
    weights = read_official(checkpoint)

    arch = cfg["arch"]
    fields = {ours: arch[theirs] for theirs, ours in ARCH_FIELDS.items() if theirs in arch}
    fields["mixer"] = "mlp" if arch.get("mlp_t") else "attention"
    fields["q_continue"] = not arch.get("no_ACT_continue", True)
    if fields.get("pos_encoding") not in ("rope", "learned"):
        fields["pos_encoding"] = "none"
    if "embed_tokens.weight" not in weights:
        raise CheckpointError(f"{checkpoint}: no token embedding; is this a TRM checkpoint?")
    fields["vocab_size"] = weights["embed_tokens.weight"].shape[0]
    if "puzzle_emb.weight" in weights:
        fields["num_puzzle_identifiers"] = weights["puzzle_emb.weight"].shape[0]
    else:
        fields["puzzle_emb_ndim"] = 0
    probe = ModelConfig(**{**fields, "seq_len": 1})
    fields["seq_len"] = _seq_len(cfg, weights, probe.prefix_len, seq_len)
    try:
        config = ModelConfig(**fields)
    except ValueError as err:
        raise CheckpointError(f"{config_path}: cannot express this config in trm ({err})") from None

    model = RecursiveModel.from_state(config, weights, source=str(checkpoint))
    model.save_pretrained(out)
    return Path(out)


def read_official(checkpoint: Path) -> dict[str, torch.Tensor]:
    """An official checkpoint file's weights under trm's names, float32 (bf16 init states and weights become
    fp32 masters); buffers trm does not keep are dropped."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # zip/pickle errors vary with the damage
        raise CheckpointError(f"{checkpoint}: corrupt or not a torch checkpoint ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{checkpoint}: not a state dict of tensors (an official checkpoint file?)")
    renamed = {rename_official(k): v.float() for k, v in state.items()}
    return {k: v for k, v in renamed.items() if k is not None}


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
