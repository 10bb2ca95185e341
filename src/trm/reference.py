"""Run the official TRM implementation beside trm, for side-by-side measurements (`trm bench --reference`,
`benchmarks/`) only.

Nothing of the official code is shipped with trm, and this module neither copies nor builds it: it imports
it at run time from a checkout the user provides (an argument, or the `TRM_OFFICIAL_DIR` environment
variable):

    git clone https://github.com/SamsungSAILMontreal/TinyRecursiveModels /path/to/TinyRecursiveModels
    trm bench --preset sudoku-mlp --reference /path/to/TinyRecursiveModels

Written against commit e7b68717 (2025-10-08). Only the model code is imported (`models/recursive_reasoning/trm.py`,
`models/layers.py`, `models/losses.py`, `models/sparse_embedding.py`, `models/common.py`); its extra
dependency is `einops` (`pip install einops`). `pretrain.py` is never imported (it needs CUDA, the
`adam_atan2` CUDA extension, wandb and hydra). The official files are not modified; what we change at run
time, and why:

1. `sys.path`: the official code imports its own modules as the top-level package `models` (a namespace
   package, it has no `__init__.py`), so the checkout root goes first on `sys.path`; we then check that
   the modules really came from that checkout (a `models` package installed elsewhere would win).
2. `forward_dtype`: the official default is bfloat16 (`config/arch/trm.yaml`); we build in float32 unless told
   otherwise, so the numbers can be compared with trm's float32 ones (no patch, a config value).
3. Device: `pretrain.py` builds the model *and* every carry inside `with torch.device("cuda")`, because
   `initial_carry` / `empty_carry` allocate on the current default device. We build the model inside
   `with torch.device(device)` (CPU by default), and wrap the instance's `initial_carry` so that it also
   allocates there, whatever the caller's default device is. On a CPU this changes nothing.
4. No `torch.compile` (the official trainer compiles unless `DISABLE_COMPILE` is set): the state dict keys
   therefore lack the `_orig_mod.` prefix of the official checkpoints; `official_state_dict` adds it back and
   `load_official_checkpoint` strips it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import torch

from trm.errors import ConfigError

COMPILE_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to every state-dict key


def official_dir(path: str | os.PathLike | None = None) -> Path:
    """The official checkout: `path`, else `$TRM_OFFICIAL_DIR`."""
    path = path or os.environ.get("TRM_OFFICIAL_DIR")
    if not path or not (Path(path) / "models" / "recursive_reasoning" / "trm.py").is_file():
        raise ConfigError(
            f"{path or '$TRM_OFFICIAL_DIR'}: not a checkout of the official code "
            "(https://github.com/SamsungSAILMontreal/TinyRecursiveModels; needs models/recursive_reasoning/trm.py)"
        )
    return Path(path).resolve()


def load_official(path: str | os.PathLike | None = None) -> types.SimpleNamespace:
    """Import the official model modules from a checkout; returns them as a namespace
    (`trm`, `layers`, `losses`, `sparse`, `common`, and `root`, the checkout path)."""
    root = official_dir(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # patch 1: the official code imports `models.*` from its root
    try:
        mods = {
            name: importlib.import_module(f"models.{mod}")
            for name, mod in [
                ("trm", "recursive_reasoning.trm"),
                ("layers", "layers"),
                ("losses", "losses"),
                ("sparse", "sparse_embedding"),
                ("common", "common"),
            ]
        }
    except ModuleNotFoundError as e:
        raise ConfigError(f"importing the official TRM code failed ({e}); it needs torch, pydantic, einops") from None
    for mod in mods.values():
        if not Path(mod.__file__).resolve().is_relative_to(root):
            raise ConfigError(f"`{mod.__name__}` was imported from {mod.__file__}, not from {root}")
    return types.SimpleNamespace(root=root, **mods)


def official_config(model_cfg, batch_size: int) -> dict:
    """trm ModelConfig -> the official arch config dict."""
    return dict(
        batch_size=batch_size,
        seq_len=model_cfg.seq_len,
        vocab_size=model_cfg.vocab_size,
        num_puzzle_identifiers=model_cfg.num_puzzle_identifiers,
        puzzle_emb_ndim=model_cfg.puzzle_emb_ndim,
        # the official code sizes the carry for puzzle_emb_len prefix positions even with no puzzle embedding
        # (puzzle_emb_ndim 0), and then crashes: pass the prefix trm really uses (0 in that case)
        puzzle_emb_len=model_cfg.prefix_len,
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
        mlp_t=model_cfg.mixer == "mlp",
        no_ACT_continue=not model_cfg.q_continue,
    )


def build_official(
    config,
    batch_size: int | None = None,
    loss_type: str = "stablemax_cross_entropy",
    *,
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
) -> torch.nn.Module:
    """The official `ACTLossHead(TinyRecursiveReasoningModel_ACTV1(config))`, in `dtype` on `device`.

    `config` holds the official arch keys (hidden_size, num_heads, expansion, L_layers, H_cycles, L_cycles,
    pos_encodings, mlp_t, puzzle_emb_ndim, puzzle_emb_len, halt_max_steps, halt_exploration_prob,
    no_ACT_continue, vocab_size, seq_len, num_puzzle_identifiers, ...); `batch_size` sizes the sparse puzzle
    embedding's training buffer (`local_weights`), so training batches must have exactly that many rows
    (evaluation batches may have any size). Seed torch before calling to fix the initialisation.

    Also accepts the older call `build_official(ns, config)` (ns from `load_official`, batch size in config).
    """
    if isinstance(config, types.SimpleNamespace):  # older call form: build_official(ns, config)
        ns, config = config, batch_size
        batch_size = None
    else:
        ns = load_official(path)
    cfg = dict(config)
    if batch_size is not None:
        cfg["batch_size"] = batch_size
    cfg["forward_dtype"] = dtype  # patch 2: float32 unless asked (official default: bfloat16)
    cfg.setdefault("H_layers", 0)  # required by the official pydantic config, ignored by TRM
    cfg.setdefault("causal", False)  # pretrain.py adds it; the pydantic config ignores it
    with torch.device(device):  # patch 3: what pretrain.py does with "cuda"
        model = ns.losses.ACTLossHead(ns.trm.TinyRecursiveReasoningModel_ACTV1(cfg), loss_type=loss_type)
    act = model.model
    initial_carry = act.initial_carry

    def initial_carry_on_model_device(batch):  # patch 3: carries on the model's device, as under pretrain.py
        with torch.device(act.inner.H_init.device):
            return initial_carry(batch)

    act.initial_carry = initial_carry_on_model_device  # ACTLossHead.initial_carry delegates to it
    return model


def official_state_dict(model: torch.nn.Module) -> dict:
    """The state dict as the official pretrain.py saves it (torch.compile'd module: `_orig_mod.` keys)."""
    return {COMPILE_PREFIX + k: v for k, v in model.state_dict().items()}


def load_official_checkpoint(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load an official `step_N` file (with or without the `_orig_mod.` prefix) into `build_official`'s model."""
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sd = {k.removeprefix(COMPILE_PREFIX): v for k, v in sd.items()}
    model.load_state_dict(sd)
