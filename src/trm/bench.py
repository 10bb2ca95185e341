"""`trm bench`: training-step time and inference throughput of presets, for trm and (given a checkout,
`--reference`) the official implementation, at the same settings and dtype, interleaved round by round in
one process so that machine noise hits both alike.

Modes: `train` = one supervision step forward (T recursion blocks), the loss, backward and the optimizer
steps (dense and sparse); `infer-fixed` = N_sup supervision steps in eval mode on one batch; `infer-adaptive`
= trm's inference engine with the default halting policy (a model that has not been trained never halts
early, so on a preset this shows the engine's cost at the cap; `trm bench --infer` measures what halting
saves on a trained checkpoint). Achieved FLOP/s are counted from the model's matmuls and set against this
machine's measured matmul ceiling at the same dtype (on a GPU that fraction is the MFU).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trm.config import ModelConfig, build_train_config
from trm.errors import ConfigError
from trm.inference.engine import Engine, InferenceConfig, Request
from trm.inference.halting import DEFAULT_POLICY
from trm.models import build_model
from trm.models.base import native_bf16
from trm.models.layers import round_up
from trm.optim import AdamATan2, SignSGDEmbedding
from trm.supervision import DeepSupervision, think

MODES = ("train", "infer-fixed", "infer-adaptive")


@dataclass
class Workload:
    """One implementation at one setting: a callable per mode (missing modes are not measured)."""

    impl: str
    modes: dict[str, Callable[[], None]]


def random_batch(batch_size: int, cfg: ModelConfig, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "inputs": torch.randint(1, cfg.vocab_size, (batch_size, cfg.seq_len), generator=g, dtype=torch.int32),
        "labels": torch.randint(2, cfg.vocab_size, (batch_size, cfg.seq_len), generator=g, dtype=torch.int32),
        "puzzle_identifiers": torch.randint(0, cfg.num_puzzle_identifiers, (batch_size,), generator=g).int(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def default_dtypes(device: torch.device) -> list[str]:
    """float32, and bfloat16 where the device runs it natively."""
    return ["float32", "bfloat16"] if native_bf16(device) else ["float32"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trm_workload(
    preset: str, batch_size: int, overrides: list[str] = (), dtype: str | None = None, device: str = "cpu",
    infer_steps: int | None = None,
) -> Workload:  # fmt: skip
    """`infer_steps` times only that many supervision steps of inference (default N_sup); the per-step cost
    is constant, so the caller scales throughput by N_sup / infer_steps."""
    cfg = build_train_config(preset, [*overrides, *([f"model.dtype={dtype}"] if dtype else [])])
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(cfg.model, dev).to(dev)
    sup = DeepSupervision(model, cfg.loss_type).train()
    if cfg.compile:
        sup.compile()  # as the trainer does
    opt = AdamATan2(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sparse = (
        SignSGDEmbedding(model.puzzle_emb, cfg.puzzle_emb_lr, cfg.puzzle_emb_weight_decay) if model.puzzle_emb else None
    )
    batch = random_batch(batch_size, cfg.model, dev)
    state = {"carry": sup.initial_carry(batch)}
    ids = batch["puzzle_identifiers"].tolist()
    requests = [Request(row, ids[k]) for k, row in enumerate(batch["inputs"].cpu().numpy())]
    engine_cfg = InferenceConfig(policy=DEFAULT_POLICY, batch_size=batch_size, max_steps=infer_steps)

    def train_step() -> None:
        model.train()
        state["carry"], losses, _ = sup(state["carry"], batch)
        (losses.total / batch_size).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sparse is not None:
            sparse.step()
            sparse.zero_grad()
        _sync(dev)

    def infer_fixed() -> None:
        model.eval()
        think(model, batch["inputs"], batch["puzzle_identifiers"], steps=infer_steps)
        _sync(dev)

    def infer_adaptive() -> None:
        model.eval()
        for _ in Engine(model, engine_cfg).run(requests):
            pass

    return Workload("trm", {"train": train_step, "infer-fixed": infer_fixed, "infer-adaptive": infer_adaptive})


def official_workload(
    ns, preset: str, batch_size: int, overrides: list[str] = (), dtype: str = "float32", device: str = "cpu",
    infer_steps: int | None = None,
) -> Workload:  # fmt: skip
    """The official ACTLossHead(TRM) at the same config, with the same optimizers (AdamATan2 has the official
    arithmetic; the official sparse sign-SGD), on the same batch."""
    from trm.reference import build_official, official_config

    cfg = build_train_config(preset, list(overrides))
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_official(official_config(cfg.model, batch_size), path=ns.root, dtype=dtype).to(dev)
    runner = torch.compile(model) if cfg.compile else model  # as pretrain.py does
    opt = AdamATan2(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    table = getattr(model.model.inner, "puzzle_emb", None)  # absent with puzzle_emb_ndim 0
    sparse = table and ns.sparse.CastedSparseEmbeddingSignSGD_Distributed(
        table.buffers(), world_size=1, lr=cfg.puzzle_emb_lr, weight_decay=cfg.puzzle_emb_weight_decay
    )
    batch = random_batch(batch_size, cfg.model, dev)
    state = {}

    def train_step() -> None:
        model.train()
        if "carry" not in state:
            state["carry"] = model.initial_carry(batch)
        state["carry"], loss, _, _, _ = runner(carry=state["carry"], batch=batch, return_keys=[])
        (loss / batch_size).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sparse:
            sparse.step()
            sparse.zero_grad()
        _sync(dev)

    def infer_fixed() -> None:
        model.eval()
        with torch.inference_mode():
            carry = model.initial_carry(batch)
            for _ in range(infer_steps or cfg.model.N_sup):
                carry, _, _, _, done = runner(carry=carry, batch=batch, return_keys=[])
        _sync(dev)

    return Workload("official", {"train": train_step, "infer-fixed": infer_fixed})


def block_flops(cfg: ModelConfig, batch_size: int) -> float:
    """Matmul FLOPs of one block applied to B rows (2 per multiply-add): the per-token projections, the MLP
    across positions or attention's scores and weighted sums (attention width num_heads * head_dim). A
    ConvSwiGLU's depthwise convolution (a few FLOPs per activation) is left out."""
    L, D = cfg.total_len, cfg.hidden_size
    inner = round_up(round(cfg.expansion * D * 2 / 3), 256)  # SwiGLU width, as the layer computes it
    per_layer = 2 * L * (3 * D * inner)  # the channel MLP: gate, up, down
    if cfg.mixer == "mlp":
        t_inner = round_up(round(cfg.expansion * L * 2 / 3), 256)
        per_layer += 2 * D * (3 * L * t_inner)
    else:
        W = cfg.num_heads * (D // cfg.num_heads)
        per_layer += 2 * L * 4 * D * W + 2 * 2 * L * L * W  # qkv + out projections, scores and weighted sum
    return batch_size * per_layer


def step_flops(cfg: ModelConfig, batch_size: int, mode: str) -> float:
    """FLOPs of one measured call: a training step (the blocks off the gradient path forward only, those on
    it forward and backward = 3x, plus the output head, plus with q_continue the extra forward for the
    Q-learning target) or N_sup supervision steps of inference. The block
    counts are the model's own (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = build_model(cfg)
    blk, total, grad = block_flops(cfg, batch_size), model.blocks_per_step, model.grad_blocks_per_step
    head = 2 * batch_size * cfg.total_len * cfg.hidden_size * cfg.vocab_size  # applied before the prefix is cut
    if mode == "train":
        bootstrap = total * blk + head if cfg.q_continue and cfg.N_sup > 1 else 0  # the Q-target forward (HRM)
        return (total - grad) * blk + 3 * (grad * blk + head) + bootstrap
    return cfg.N_sup * (total * blk + head)


# Dense peaks from NVIDIA's data sheets (FLOP/s, no sparsity), by a substring of the device name, first match
# wins. float32 is the plain (non-TF32) rate: torch's default float32 matmul precision does not use TF32.
GPU_PEAK_FLOPS = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 51e12},
    "H100 NVL": {"bfloat16": 835e12, "float32": 60e12},
    "H200 NVL": {"bfloat16": 835e12, "float32": 60e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L40S": {"bfloat16": 362e12, "float32": 91.6e12},
}


def peak_flops(dtype: str, device: str) -> float | None:
    """The GPU's data-sheet peak at this dtype (what MFU is usually quoted against); None off the table."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    return next((peaks.get(dtype) for key, peaks in GPU_PEAK_FLOPS.items() if key in name), None)


def matmul_ceiling(dtype: str, device: str = "cpu", n: int | None = None, repeats: int = 5) -> float:
    """The best FLOP/s of an n x n matmul at this dtype on this device: the machine's practical ceiling
    (n 2048 on a CPU; 8192 on a GPU, which a smaller product does not fill)."""
    dev, dt = torch.device(device), getattr(torch, dtype)
    n = n or (8192 if dev.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=dev).to(dt), torch.randn(n, n, device=dev).to(dt)
    best = float("inf")
    for _ in range(repeats + 1):
        _sync(dev)
        start = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def compare(workloads: list[Workload], repeats: int = 5, warmup: int = 1) -> dict[str, dict[str, float]]:
    """Interleave the workloads mode by mode, round by round; the median seconds per call.

    The order turns around every round, so that no implementation always runs right after the other (and
    inherits its caches, its freed memory or a turbo clock that has dropped)."""
    modes = [m for m in MODES if any(m in w.modes for w in workloads)]
    for w in workloads:
        for fn in w.modes.values():
            for _ in range(warmup):
                fn()
    times: dict[str, dict[str, list[float]]] = {w.impl: {m: [] for m in w.modes} for w in workloads}
    for r in range(repeats):
        for mode in modes:
            for w in workloads if r % 2 == 0 else workloads[::-1]:
                if mode in w.modes:
                    start = time.perf_counter()
                    w.modes[mode]()
                    times[w.impl][mode].append(time.perf_counter() - start)
    return {impl: {m: statistics.median(v) for m, v in t.items()} for impl, t in times.items()}


def run(
    presets: list[str], batches: list[int], dtypes: list[str], overrides: list[str] = (), device: str = "cpu",
    reference: str | None = None, repeats: int = 5, infer_steps: int | None = None,
    modes: tuple[str, ...] = MODES, progress: Callable[[str], None] = print,
) -> list[dict]:  # fmt: skip
    """One record per (preset, batch, dtype, impl, mode)."""
    ns = None
    if reference:
        from trm.reference import load_official

        for preset in presets:
            m = build_train_config(preset, list(overrides)).model
            if m.arch != "trm":
                raise ConfigError(f"--reference times the official TRM code; preset {preset} is arch {m.arch}")
            defaults = {"latent": "yz", "gradient": "last_block", "conv_kernel": 0}
            changed = [f"{k}={getattr(m, k)}" for k, d in defaults.items() if getattr(m, k) != d]
            if changed:
                raise ConfigError(f"--reference times the official TRM model, which has no {', '.join(changed)}")

        ns = load_official(reference)
    ceilings = {dt: matmul_ceiling(dt, device) for dt in dtypes}
    peaks = {dt: peak_flops(dt, device) for dt in dtypes}
    records = []
    for preset in presets:
        cfg = build_train_config(preset, list(overrides)).model
        for batch in batches:
            for dtype in dtypes:
                workloads = [trm_workload(preset, batch, overrides, dtype, device, infer_steps)]
                if ns is not None:
                    workloads.append(official_workload(ns, preset, batch, overrides, dtype, device, infer_steps))
                for w in workloads:
                    w.modes = {m: fn for m, fn in w.modes.items() if m in modes}
                res = compare(workloads, repeats=repeats)
                for impl, by_mode in res.items():
                    for mode, seconds in by_mode.items():
                        if mode != "train" and infer_steps:
                            seconds *= cfg.N_sup / infer_steps  # timed fewer steps: scale to N_sup
                        flops = step_flops(cfg, batch, "train" if mode == "train" else "infer")
                        rec = dict(
                            preset=preset, impl=impl, mode=mode, batch=batch, device=device, dtype=dtype,
                            step_s=seconds, puzzles_per_s=batch / seconds, flops_per_s=flops / seconds,
                            ceiling_flops_per_s=ceilings[dtype], mfu=flops / seconds / ceilings[dtype],
                            peak_flops_per_s=peaks[dtype], mfu_peak=peaks[dtype] and flops / seconds / peaks[dtype],
                        )  # fmt: skip
                        records.append(rec)
                        peak = f", {rec['mfu_peak']:.1%} of the data-sheet peak" if rec["mfu_peak"] else ""
                        progress(
                            f"{preset} batch {batch} {dtype} {impl:8s} {mode:14s} {seconds:8.3f} s  "
                            f"{batch / seconds:8.1f} puzzles/s  {rec['mfu']:6.1%} of the matmul ceiling{peak}"
                        )
    return records


def markdown(records: list[dict]) -> str:
    """A table per mode: trm and official side by side (ratio = official time / trm time, > 1: trm faster),
    and trm's speed-up of each dtype over its float32 path; on a GPU of known peak, the MFU of both."""
    lines = []
    peak = any(r.get("mfu_peak") for r in records)
    pct = lambda r, key: f"{r[key]:.0%}" if r and r.get(key) else "-"  # noqa: E731
    by_key = {(r["preset"], r["batch"], r["dtype"], r["impl"], r["mode"]): r for r in records}
    for mode in MODES:
        rows = sorted({k[:3] for k in by_key if k[4] == mode and k[3] == "trm"})
        if not rows:
            continue
        lines += [
            f"\n### {mode}\n",
            "| preset | batch | dtype | trm step (s) | official step (s) | trm vs official | trm vs trm float32 "
            "| trm puzzles/s | trm % of matmul ceiling | official % |" + (" trm MFU | official MFU |" if peak else ""),
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if peak else ""),
        ]
        for preset, batch, dtype in rows:
            t = by_key[(preset, batch, dtype, "trm", mode)]
            o = by_key.get((preset, batch, dtype, "official", mode))
            f32 = by_key.get((preset, batch, "float32", "trm", mode))
            lines.append(
                f"| {preset} | {batch} | {dtype} | {t['step_s']:.3f} | {o['step_s'] if o else float('nan'):.3f} | "
                f"{(o['step_s'] / t['step_s']) if o else float('nan'):.2f}x | "
                f"{(f32['step_s'] / t['step_s']) if f32 else float('nan'):.2f}x | {t['puzzles_per_s']:.1f} | "
                f"{t['mfu']:.0%} | {o['mfu'] if o else float('nan'):.0%} |"
                + (f" {pct(t, 'mfu_peak')} | {pct(o, 'mfu_peak')} |" if peak else "")
            )
    return "\n".join(lines).replace("nanx", "-").replace("nan%", "-").replace("| nan |", "| - |") + "\n"


def summary(records: list[dict]) -> dict[str, float]:
    """Geometric means of the headline ratios (for the closing line of the CLI): those the records allow."""
    by_key = {(r["preset"], r["batch"], r["dtype"], r["impl"], r["mode"]): r["step_s"] for r in records}
    vs_official = [o / by_key[k[:3] + ("trm",) + k[4:]] for k, o in by_key.items() if k[3] == "official"]
    vs_f32 = [
        by_key[(p, b, "float32", "trm", m)] / s
        for (p, b, d, i, m), s in by_key.items()
        if i == "trm" and d != "float32" and (p, b, "float32", "trm", m) in by_key
    ]
    ratios = {"trm_vs_official": vs_official, "fast_path_vs_float32": vs_f32}
    return {name: float(np.exp(np.mean(np.log(xs)))) for name, xs in ratios.items() if xs}
