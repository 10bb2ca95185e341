"""Building blocks shared by the recursive models: init, casting linear/embedding layers, gain-free RMSNorm,
SwiGLU, rotary attention, the token-mixing MLP and the sparsely updated puzzle embedding.

Weights are kept in float32 ("master weights") and cast to the activations' dtype in forward, as the official
code does, so one model runs in float32 on CPU and bfloat16 on GPU without autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """JAX/flax truncated normal: truncated at +-2 std, with the std corrected so the result has `std`.

    PyTorch's `trunc_normal_` keeps the pre-truncation std (about 12% too small); the official code uses this one.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * upper**2), c * math.exp(-0.5 * lower**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std).clip_(lower * comp_std, upper * comp_std)
    return tensor


def round_up(value: int, multiple: int) -> int:
    return -(value // -multiple) * multiple


class Linear(nn.Module):
    """Linear layer with a float32 weight cast to the input dtype; truncated LeCun-normal init."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class Embedding(nn.Module):
    """Embedding table in float32, looked up and cast to the compute dtype."""

    def __init__(self, num: int, dim: int, init_std: float):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num, dim), std=init_std))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.embedding(ids.long(), self.weight.to(dtype))


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Parameter-free RMSNorm over the last axis, computed in float32."""
    dtype = x.dtype
    x = x.float()
    if x.is_contiguous():  # the fused kernel is faster, but slow on strided (transposed) input
        return F.rms_norm(x, (x.shape[-1],), eps=eps).to(dtype)
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)).to(dtype)


class SwiGLU(nn.Module):
    """SwiGLU MLP; the hidden width is round(2/3 * expansion * dim) rounded up to a multiple of 256 (official).

    `conv_kernel` > 0 makes it the Universal Reasoning Model's ConvSwiGLU (arXiv 2512.14693, as in its code):
    the gated activations go through a depthwise convolution along the sequence (with bias, padding k // 2 on
    both sides, the first S outputs kept) and a SiLU before the down projection, so neighbouring cells mix
    inside the MLP. Input [B, S, dim]; the convolution keeps PyTorch's default init, as URM does.
    """

    def __init__(self, dim: int, expansion: float, conv_kernel: int = 0):
        super().__init__()
        inter = round_up(round(expansion * dim * 2 / 3), 256)
        self.gate_up = Linear(dim, 2 * inter)
        self.down = Linear(inter, dim)
        self.conv = nn.Conv1d(inter, inter, conv_kernel, groups=inter) if conv_kernel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        h = F.silu(gate) * up
        if self.conv is not None:
            k, s = self.conv.kernel_size[0], h.shape[1]
            w, b = self.conv.weight.to(h.dtype), self.conv.bias.to(h.dtype)
            h = F.silu(F.conv1d(h.transpose(1, 2), w, b, padding=k // 2, groups=w.shape[0])[..., :s].transpose(1, 2))
        return self.down(h)


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half convention), cos/sin cached in float32 for every position."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, S, H, d]; the rotation runs in float32 and is cast back."""
    dtype = x.dtype
    x = x.float()
    cos, sin = cos[:, None, :], sin[:, None, :]
    return (x * cos + _rotate_half(x) * sin).to(dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with a fused qkv projection and no padding mask (official).
    head_dim = dim // num_heads, so with heads that do not divide dim (the official transformer baseline's
    12 heads at 512) the attention width is num_heads * head_dim < dim, as in the official code."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        width = num_heads * self.head_dim
        self.qkv = Linear(dim, 3 * width)
        self.out = Linear(width, dim)

    def forward(self, h: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        b, s, _ = h.shape
        q, k, v = self.qkv(h).view(b, s, 3, self.num_heads, self.head_dim).unbind(2)
        if rotary is not None:
            q, k = (
                apply_rotary(q, rotary.cos[:s], rotary.sin[:s]),
                apply_rotary(k, rotary.cos[:s], rotary.sin[:s]),
            )
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(out.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    """Post-norm block: token mixer (attention, or SwiGLU across positions) then channel SwiGLU.

    The token-mixing MLP normalises over the *token* axis, because the official code applies the norm while
    the tensor is transposed; we keep that behaviour so official checkpoints give the same outputs.
    """

    def __init__(
        self, dim: int, num_heads: int, expansion: float, mixer: str, seq_len: int, eps: float, conv_kernel: int = 0
    ):
        super().__init__()
        self.eps = eps
        if mixer == "attention":
            self.attn, self.token_mlp = Attention(dim, num_heads), None
        else:
            self.attn, self.token_mlp = None, SwiGLU(seq_len, expansion)
        self.mlp = SwiGLU(dim, expansion, conv_kernel)

    def forward(self, h: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        if self.attn is not None:
            h = rms_norm(h + self.attn(h, rotary), self.eps)
        else:
            t = h.transpose(1, 2)
            h = rms_norm(t + self.token_mlp(t), self.eps).transpose(1, 2)
        return rms_norm(h + self.mlp(h), self.eps)


class PuzzleEmbedding(nn.Module):
    """Per-puzzle learned vector, zero-initialised, trained by sparse sign-SGD on the rows in the batch only.

    The table is a buffer, not a Parameter: the dense optimizer, weight decay and EMA never touch it. In a
    training forward with grad enabled we copy the batch rows into a leaf tensor and remember it in `last`,
    so `trm.optim.SignSGDEmbedding` can update exactly the touched rows. The leaf persists between steps and
    is only refilled (under no_grad), as in the official code: a leaf made inside the forward would break a
    compiled step's graph there.
    """

    def __init__(self, num_ids: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_ids, dim))
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._local: torch.Tensor | None = None  # [B, dim], requires grad; remade when B or the table moves

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        if self.training and torch.is_grad_enabled():
            local, table = self._local, self.weight
            if local is None or (len(local), local.device, local.dtype) != (len(ids), table.device, table.dtype):
                local = self._local = _new_leaf(ids.shape[0], table)
            with torch.no_grad():
                local.copy_(table[ids])
            self.last = (ids, local)
            return local
        return self.weight[ids]


@torch.compiler.disable
def _new_leaf(rows: int, table: torch.Tensor) -> torch.Tensor:
    """Outside any compiled graph: made once per batch size, the compiled step then only refills it."""
    return torch.zeros(rows, table.shape[1], dtype=table.dtype, device=table.device, requires_grad=True)
