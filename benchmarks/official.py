"""Run the official TRM implementation beside trm, for side-by-side benchmarks only.

Nothing of the official code is shipped here: point `TRM_OFFICIAL_DIR` (or `--official`) at a checkout of
https://github.com/SamsungSAILMontreal/TinyRecursiveModels (needs `pip install einops`). The official model
assumes CUDA in two methods; on a CPU we replace them at run time on the instance, without touching its
files:
- `inner.empty_carry` allocates on "cuda:0": we allocate on the model's device instead;
- `inner.reset_carry` moves the reset flags to "cuda:0": we keep them where they are.
Its optimizer (the `adam_atan2` CUDA extension) is not used: both sides step trm's AdamATan2, so the
comparison measures the model and training step, not two optimizer kernels. Its own sparse-embedding
sign-SGD is used for its puzzle embedding.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import torch


def official_dir(path: str | None = None) -> Path:
    path = path or os.environ.get("TRM_OFFICIAL_DIR")
    if not path or not (Path(path) / "models" / "recursive_reasoning" / "trm.py").is_file():
        raise SystemExit(
            "set TRM_OFFICIAL_DIR (or --official) to a checkout of SamsungSAILMontreal/TinyRecursiveModels"
        )
    return Path(path)


def load_official(path: str | None = None) -> types.SimpleNamespace:
    root = str(official_dir(path))
    if root not in sys.path:
        sys.path.insert(0, root)
    trm_mod = importlib.import_module("models.recursive_reasoning.trm")
    losses = importlib.import_module("models.losses")
    sparse = importlib.import_module("models.sparse_embedding")
    return types.SimpleNamespace(trm=trm_mod, losses=losses, sparse=sparse)


def official_config(model_cfg, batch_size: int) -> dict:
    """trm ModelConfig -> the official arch config dict."""
    return dict(
        batch_size=batch_size,
        seq_len=model_cfg.seq_len,
        vocab_size=model_cfg.vocab_size,
        num_puzzle_identifiers=model_cfg.num_puzzle_identifiers,
        puzzle_emb_ndim=model_cfg.puzzle_emb_ndim,
        puzzle_emb_len=model_cfg.puzzle_emb_len,
        H_cycles=model_cfg.T,
        L_cycles=model_cfg.n,
        H_layers=0,
        L_layers=model_cfg.num_layers,
        hidden_size=model_cfg.hidden_size,
        expansion=model_cfg.expansion,
        num_heads=model_cfg.num_heads,
        pos_encodings=model_cfg.pos_encoding,
        rms_norm_eps=model_cfg.rms_norm_eps,
        rope_theta=model_cfg.rope_theta,
        halt_max_steps=model_cfg.N_sup,
        halt_exploration_prob=model_cfg.halt_exploration_prob,
        forward_dtype="float32",
        mlp_t=model_cfg.mixer == "mlp",
        no_ACT_continue=not model_cfg.q_continue,
    )


def build_official(ns: types.SimpleNamespace, config: dict, loss_type: str = "stablemax_cross_entropy"):
    model = ns.losses.ACTLossHead(ns.trm.TinyRecursiveReasoningModel_ACTV1(config), loss_type=loss_type)
    inner = model.model.inner
    carry_cls = ns.trm.TinyRecursiveReasoningModel_ACTV1InnerCarry
    length = config["seq_len"] + inner.puzzle_emb_len

    def empty_carry(batch_size: int):
        shape = (batch_size, length, config["hidden_size"])
        device = inner.H_init.device
        return carry_cls(
            z_H=torch.empty(shape, dtype=inner.forward_dtype, device=device),
            z_L=torch.empty(shape, dtype=inner.forward_dtype, device=device),
        )

    def reset_carry(reset_flag, carry):
        mask = reset_flag.view(-1, 1, 1)
        return carry_cls(z_H=torch.where(mask, inner.H_init, carry.z_H), z_L=torch.where(mask, inner.L_init, carry.z_L))

    inner.empty_carry = empty_carry
    inner.reset_carry = reset_carry
    return model
