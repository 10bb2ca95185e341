"""The TRM network against hand-computed values and the paper's structural claims."""

from __future__ import annotations

import math

import pytest
import torch

from trm.config import ModelConfig, build_train_config
from trm.errors import CheckpointError
from trm.models import build_model
from trm.models.layers import SwiGLU, apply_rotary, rms_norm, trunc_normal_
from trm.models.trm import TRM


def tiny(**kw) -> ModelConfig:
    base = dict(
        vocab_size=11,
        seq_len=16,
        hidden_size=32,
        num_heads=2,
        num_layers=2,
        T=3,
        n=2,
        N_sup=4,
        puzzle_emb_ndim=32,
        puzzle_emb_len=2,
        num_puzzle_identifiers=3,
    )
    base.update(kw)
    return ModelConfig(**base)


def batch(b: int = 3, seq_len: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 11, (b, seq_len), generator=g), torch.arange(b) % 3


@pytest.mark.parametrize(
    "preset,overrides,expected",
    [
        ("sudoku-mlp", [], 5_028_866),
        ("sudoku-att", [], 6_828_034),
        ("arc1", [], 6_829_058),
        ("arc2", [], 6_829_058),
        ("arc1", ["vocab_size=6"], 6_822_914),
        ("maze-hard", [], 6_822_914),
        ("hrm-sudoku", [], 27_275_266),  # also the num_params of a public HRM run (sapientinc/HRM#12)
        ("hrm-maze", [], 27_270_146),
        ("hrm-arc", [], 27_276_290),
        ("transformer-baseline-sudoku", [], 27_144_194),
        ("transformer-baseline-sudoku", ["vocab_size=12"], 27_145_218),
        ("direct-sudoku", [], 27_275_266),  # 8 blocks of HRM's width: HRM's size, as in the HRM paper
        ("sudoku-mlp", ["latent=single"], 5_028_866),
        ("sudoku-mlp", ["latent=multi"], 5_028_866),
    ],
)
def test_paper_parameter_counts(preset, overrides, expected):
    """The official counts (reference notes section 1.2, and the official code run on the meta device by
    tests/fixtures/make_official_fixtures.py --count-params)."""
    with torch.device("meta"):
        model = build_model(build_train_config(preset, overrides).model)
    assert model.num_parameters() == expected


def test_swiglu_width_rounds_to_256():
    assert SwiGLU(512, 4).down.weight.shape == (512, 1536)
    assert SwiGLU(97, 4).down.weight.shape == (97, 512)  # Sudoku token mixer, 16 + 81 positions


def test_truncated_normal_has_the_requested_std_and_bounds():
    t = trunc_normal_(torch.empty(400_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    assert t.abs().max().item() <= 2 * 0.5 * 1.1369 + 1e-6


def test_rms_norm_matches_formula_without_gain():
    x = torch.tensor([[3.0, 4.0]])
    expected = x / math.sqrt((9 + 16) / 2 + 1e-5)
    torch.testing.assert_close(rms_norm(x, 1e-5), expected)


def test_rotary_depends_only_on_relative_position():
    from trm.models.layers import Rotary

    rot = Rotary(8, 32, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def at(v, pos):
        return apply_rotary(v, rot.cos[pos : pos + 1], rot.sin[pos : pos + 1])

    d1 = (at(q, 5) * at(k, 2)).sum()
    d2 = (at(q, 13) * at(k, 10)).sum()
    torch.testing.assert_close(d1, d2)
    torch.testing.assert_close(at(q, 7).norm(), q.norm())


def test_heads_start_as_official():
    model = TRM(tiny())
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5)
    assert torch.all(model.puzzle_emb.weight == 0)
    y, z = model.initial_state(2)
    inputs, ids = batch(2)
    out = model(y, z, inputs, ids)
    assert out.logits.shape == (2, 16, 11)
    torch.testing.assert_close(out.q_halt, torch.full((2,), -5.0))


def test_embedding_scale_and_prefix():
    model = TRM(tiny())
    inputs, ids = batch(3)
    with torch.no_grad():
        model.puzzle_emb.weight.copy_(torch.randn(3, 32))
    x = model.embed(inputs, ids)
    assert x.shape == (3, 18, 32)
    torch.testing.assert_close(x[:, 0], math.sqrt(32) * model.puzzle_emb.weight[ids])
    assert torch.all(x[:, 1] == 0)  # ndim == D: only prefix slot 0 carries the vector
    torch.testing.assert_close(x[:, 2:], math.sqrt(32) * model.embed_tokens.weight[inputs])


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_gradient_reaches_only_the_last_recursion_block(mixer):
    cfg = tiny(mixer=mixer, pos_encoding="rope" if mixer == "attention" else "none")
    model = TRM(cfg)
    grad_outputs = []
    for layer in model.net.layers:
        layer.register_forward_hook(lambda m, i, o: grad_outputs.append(o.requires_grad))
    inputs, ids = batch()
    y, z = model.initial_state(3)
    y0, z0 = y.clone().requires_grad_(), z.clone().requires_grad_()
    out = model(y0, z0, inputs, ids)
    # T blocks of (n + 1) network applications of num_layers layers; only the last block records gradients.
    per_block = (cfg.n + 1) * cfg.num_layers
    assert len(grad_outputs) == cfg.T * per_block
    assert grad_outputs == [False] * ((cfg.T - 1) * per_block) + [True] * per_block
    out.logits.sum().backward()
    assert y0.grad is None and z0.grad is None  # the grad block starts from no-grad states
    assert not out.y.requires_grad and not out.z.requires_grad  # the carry is detached
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("q_head"))


def test_single_block_passes_gradient_to_the_carry():
    model = TRM(tiny(T=1))
    inputs, ids = batch()
    y, z = model.initial_state(3)
    y0, z0 = y.clone().requires_grad_(), z.clone().requires_grad_()
    model(y0, z0, inputs, ids).logits.sum().backward()
    assert y0.grad is not None and z0.grad is not None


def test_z_update_gets_y_plus_x_and_y_update_gets_only_z():
    model = TRM(tiny(T=1, n=1))
    inputs, ids = batch()
    y, z = model.initial_state(3)
    records = []
    original = model.net.forward

    def spy(h, injection, rotary):
        out = original(h, injection, rotary)
        records.append((h, injection, out))
        return out

    model.net.forward = spy
    x = model.embed(inputs, ids)
    model(y, z, inputs, ids)
    (h0, inj0, z_new), (h1, inj1, _) = records
    torch.testing.assert_close(h0, z)
    torch.testing.assert_close(inj0, y + x)
    torch.testing.assert_close(h1, y)
    torch.testing.assert_close(inj1, z_new)  # no x in the answer update


def test_save_and_load_round_trip(tmp_path):
    model = TRM(tiny(pos_encoding="learned"))
    with torch.no_grad():
        model.puzzle_emb.weight.normal_()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = TRM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    inputs, ids = batch()
    model.eval(), loaded.eval()
    a = model(*model.initial_state(3), inputs, ids)
    b = loaded(*loaded.initial_state(3), inputs, ids)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(loaded.y_init, model.y_init)


def test_corrupt_or_missing_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a trm checkpoint"):
        TRM.from_pretrained(tmp_path)
    model = TRM(tiny())
    model.save_pretrained(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        TRM.from_pretrained(tmp_path / "c")
    model.save_pretrained(tmp_path / "d")
    cfg = (tmp_path / "d" / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": 64')
    (tmp_path / "d" / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="shape"):
        TRM.from_pretrained(tmp_path / "d")


def test_auto_dtype_is_bfloat16_only_where_the_device_runs_it_natively(monkeypatch):
    from trm.models import base as trm_module

    monkeypatch.delenv("TRM_CPU_DTYPE")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(trm_module, "cpu_has_native_bf16", lambda native=native: native)
        assert trm_module.resolve_dtype("auto", cpu) == expected
    monkeypatch.setattr(torch.version, "hip", None)  # a ROCm build counts as native whatever the capability
    for capability, expected in (((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), torch.float32)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert trm_module.resolve_dtype("auto", cuda) == expected  # a T4 (7.5) emulates bf16: float32
    assert trm_module.resolve_dtype("bfloat16", cuda) == torch.bfloat16  # an explicit dtype always wins
    assert trm_module.resolve_dtype("auto", torch.device("mps")) == torch.bfloat16
    monkeypatch.setenv("TRM_CPU_DTYPE", "float32")
    assert trm_module.resolve_dtype("auto", cpu) == torch.float32


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    from trm.models import base as trm_module

    info = tmp_path / "cpuinfo"
    real_path = trm_module.Path
    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx2", False)):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(trm_module, "Path", lambda p, info=info: info if p == "/proc/cpuinfo" else real_path(p))
        trm_module.cpu_has_native_bf16.cache_clear()
        assert trm_module.cpu_has_native_bf16() is expected
    trm_module.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("k", [2, 3])
def test_conv_swiglu_is_urms_formula(k):
    """ConvSwiGLU (URM): silu(gate) * up, a depthwise convolution along the sequence (bias, k // 2 padding on
    both sides, the first S outputs), SiLU, then the down projection; here spelled out position by position."""
    torch.manual_seed(0)
    mlp = SwiGLU(8, 4, conv_kernel=k)
    x = torch.randn(2, 5, 8)
    gate, up = mlp.gate_up(x).chunk(2, dim=-1)
    h = torch.nn.functional.silu(gate) * up
    w, b = mlp.conv.weight[:, 0, :], mlp.conv.bias
    mixed = torch.zeros_like(h)
    for t in range(5):
        for j in range(k):
            src = t + j - k // 2
            if 0 <= src < 5:
                mixed[:, t] += h[:, src] * w[:, j]
    expected = mlp.down(torch.nn.functional.silu(mixed + b))
    torch.testing.assert_close(mlp(x), expected)
