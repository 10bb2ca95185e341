"""Presets, overrides and config validation."""

from __future__ import annotations

import pytest

from trm.config import ModelConfig, apply_overrides, build_train_config, list_presets
from trm.errors import ConfigError


def test_presets_are_listed_and_valid():
    names = list_presets()
    assert {"sudoku-mlp", "sudoku-att", "arc1", "arc2", "arc-cpu"} <= set(names)
    for name in names:
        build_train_config(name)


def test_paper_presets_hold_the_official_recipe():
    mlp = build_train_config("sudoku-mlp")
    assert (mlp.model.mixer, mlp.model.pos_encoding, mlp.model.T, mlp.model.n, mlp.model.N_sup) == (
        "mlp",
        "none",
        3,
        6,
        16,
    )
    assert (mlp.lr, mlp.weight_decay, mlp.global_batch_size, mlp.ema_rate) == (1e-4, 1.0, 768, 0.999)
    arc = build_train_config("arc1")
    assert (arc.model.n, arc.puzzle_emb_lr, arc.weight_decay) == (4, 1e-2, 0.1)
    arc2 = build_train_config("arc2")  # extends arc1: same recipe, other data
    assert arc2.model == arc.model and arc2.lr == arc.lr and arc2.data == "data/arc2concept-aug-1000"
    small = build_train_config("arc-cpu")  # extends arc1 and overrides part of the model section only
    assert small.model.hidden_size == 64 and small.model.seq_len == 900 and small.model.pos_encoding == "rope"


def test_overrides_bare_dotted_and_typed():
    cfg = build_train_config("sudoku-att", ["hidden_size=64", "model.num_heads=4", "lr=3e-4", "ema=false"])
    assert cfg.model.hidden_size == 64 and cfg.model.num_heads == 4
    assert cfg.lr == 3e-4 and cfg.ema is False


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["hidden_sise=64"], "unknown config field 'hidden_sise'"),
        (["lr"], "not of the form key=value"),
        (["mixer=conv"], "bad config value for model.mixer"),
        (["T=0"], "bad config value for model.T"),
        (["global_batch_size=-3"], "bad config value for global_batch_size"),
    ],
)
def test_bad_overrides_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_train_config("sudoku-mlp", overrides)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'sudoku-xl'.*sudoku-mlp"):
        build_train_config("sudoku-xl")


def test_heads_that_do_not_divide_hidden_size_narrow_the_attention_as_official():
    from trm.models.layers import Attention

    ModelConfig(hidden_size=100, num_heads=8, mixer="attention")  # head_dim 12, width 96
    attn = Attention(512, 12)  # the official transformer baseline: head_dim 42, width 504
    assert attn.qkv.weight.shape == (3 * 504, 512) and attn.out.weight.shape == (512, 504)
    with pytest.raises(ValueError, match="more than hidden_size"):
        ModelConfig(hidden_size=4, num_heads=8, mixer="attention")
    ModelConfig(hidden_size=4, num_heads=8, mixer="mlp", pos_encoding="none", puzzle_emb_ndim=4)


def test_overrides_do_not_mutate_the_input():
    raw = {"model": {"hidden_size": 8}}
    apply_overrides(raw, ["hidden_size=16"])
    assert raw == {"model": {"hidden_size": 8}}
