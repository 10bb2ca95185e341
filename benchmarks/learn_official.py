"""Train the official TRM implementation for a wall-clock budget, then evaluate it: the official side of a
"learning per CPU-minute" (or GPU-minute) comparison with trm (`trm train ... max_time`).

    python benchmarks/learn_official.py --data DATA_DIR --minutes 10 --out official.json [--official CHECKOUT]
        [--device cuda [--compile]]

DATA_DIR is a data set in the official layout (`trm data sudoku ...` writes it: train/ and test/ splits).
CHECKOUT is a checkout of https://github.com/SamsungSAILMontreal/TinyRecursiveModels (default
`$TRM_OFFICIAL_DIR`), written against commit e7b68717. The defaults are trm's preset
`sudoku9-cpu` in official names. One JSON record goes to `--out`: the recipe, steps done, training seconds,
steps/s, and exact / token accuracy of the (EMA) weights on the whole test split.

Nothing of the official code is copied here: `pretrain.py`, `puzzle_dataset.py` and `models/*` are imported
from the checkout at run time and their functions called: `create_dataloader` (`PuzzleDataset`),
`init_train_state` (its step count `total_steps`), `train_batch` (forward, `loss / global_batch_size`, backward,
the optimizers in official order each with `compute_lr`'s cosine-with-warm-up lr), `EMAHelper` (updated after
every batch, `ema_copy` for evaluation), `CastedSparseEmbeddingSignSGD_Distributed`, and the model with its
`ACTLossHead` (built by `trm.reference.build_official`, see its docstring for those adjustments). The
checkout is not modified. What we change at run time, and why:

1. Import shims. `pretrain.py` imports wandb, coolname, hydra, omegaconf, and `puzzle_dataset.py` imports
   argdantic, at module level; none of the functions we call uses them. Each one that is not installed gets an
   empty stand-in module in `sys.modules` (`hydra.main` an identity decorator, `omegaconf.DictConfig` a
   placeholder class). `adam_atan2` (a CUDA-only extension) is always replaced by a module whose `AdamATan2`
   is `trm.optim.AdamATan2`, the same arithmetic (adam-atan2 0.0.3) in plain PyTorch.
2. `create_model` builds inside `with torch.device("cuda")`, so `init_train_state` runs with
   `pretrain.create_model` replaced by an equivalent on `--device`: the same model config (arch keys plus
   batch size, vocab size, sequence length, puzzle identifiers from the train metadata), the model built by
   `build_official` there, and the same optimizers in the same order and with the same base lrs
   ([sign-SGD on the puzzle embedding,] AdamATan2 on `model.parameters()`). `torch.compile` only with
   `--compile` (pretrain.py compiles unless `DISABLE_COMPILE`; on the CPU that does not pay), and no
   checkpoint loading.
3. `train_batch` moves the batch with `v.cuda()` and creates the first carry under `torch.device("cuda")`.
   We create the first carry ourselves (`model.initial_carry(batch)`, on `--device`, before the first call, so
   that branch is skipped) and hand it the batch as a dict of tiny wrappers whose `.cuda()` returns the
   tensor on `--device`. The function itself runs unchanged.
4. `evaluate` hard-codes CUDA (batches, carries and the metric accumulator), so evaluation is a small loop
   here with the same semantics: `model.eval()` (the official ACT then halts only after `halt_max_steps`),
   `torch.inference_mode()`, each test batch from the official test loader (`test_set_mode`, batches of
   `global_batch_size`) run until every sequence halts, the official metrics of the last step summed and
   divided by `count` per set; plus our own pooled counts (labelled tokens right / labelled tokens, puzzles
   with every labelled token right) from the argmax of the final logits (`preds`). (`ema_copy` deep-copies
   the model, and with it `build_official`'s `initial_carry` wrapper, which still calls the original's: it only
   allocates the empty first carry from the config, which the copy shares, so this changes nothing.)
5. `puzzle_emb_len`: with `puzzle_emb_ndim` 0 we pass 0 (the official yaml's 16 sizes the carry for prefix
   positions the model never prepends, and the forward pass fails); with puzzle embeddings `--puzzle-emb-len`
   (default 16, as the official yaml).
6. The official DataLoader pins memory; on a CPU that only warns, and the warning is silenced.
   `--no-loader-worker` iterates the same `PuzzleDataset` in the main process instead of the official
   loader's one worker process (same batches, no second process competing for the cores).

The lr schedule length is the official one, `total_steps = int(epochs * total_groups * mean_puzzle_examples /
global_batch_size)`, from `--epochs`; training stops at the budget or at the end of the schedule (one pass of the
train loader, `epochs_per_iter = epochs`: no intermediate evaluations), whichever comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import official_streams  # beside this script
import torch

import trm.optim
from trm.reference import build_official, load_official, official_state_dict

PROGRESS_EVERY_S = 30.0
DEFAULT_OFFICIAL = os.environ.get("TRM_OFFICIAL_DIR")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; the recipe defaults are trm's preset sudoku9-cpu in official names."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="data set in the official layout (train/ and test/)")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock training budget (evaluation not counted)")
    p.add_argument("--out", required=True, help="JSON record to write")
    p.add_argument("--official", default=DEFAULT_OFFICIAL, help="official checkout (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model, as pretrain.py does on a GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-loader-worker", action="store_true", help="iterate PuzzleDataset in-process")
    p.add_argument(
        "--record-streams",
        metavar="FILE",
        help="save every step's batch and ACT exploration draws (official_lockstep.py --replay feeds them to trm)",
    )
    p.add_argument(
        "--save-init",
        metavar="FILE",
        help="save the initial weights as an official checkpoint (`trm train ... init_from=FILE` starts from them); "
        "with --minutes 0, stop there",
    )
    a = p.add_argument_group("architecture (config/arch/trm.yaml keys)")
    a.add_argument("--hidden-size", type=int, default=64)
    a.add_argument("--num-heads", type=int, default=4)
    a.add_argument("--expansion", type=float, default=4.0)
    a.add_argument("--layers", type=int, default=2, help="L_layers")
    a.add_argument("--T", type=int, default=2, help="H_cycles")
    a.add_argument("--n", type=int, default=3, help="L_cycles")
    a.add_argument("--N-sup", type=int, default=8, help="halt_max_steps")
    a.add_argument("--halt-exploration-prob", type=float, default=0.1)
    mixer = a.add_mutually_exclusive_group()
    mixer.add_argument("--mlp-t", dest="mlp_t", action="store_true", default=True, help="MLP mixer (default)")
    mixer.add_argument("--attention", dest="mlp_t", action="store_false", help="self-attention mixer")
    a.add_argument("--pos-encodings", default="none", choices=["none", "rope", "learned"])
    a.add_argument("--puzzle-emb-ndim", type=int, default=0, help="0: no puzzle embedding")
    a.add_argument("--puzzle-emb-len", type=int, default=16, help="prefix positions (used when ndim > 0)")
    a.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="forward_dtype")
    r = p.add_argument_group("recipe (config/cfg_pretrain.yaml keys)")
    r.add_argument("--batch-size", type=int, default=128, help="global_batch_size")
    r.add_argument("--epochs", type=int, default=43, help="schedule length (the lr cosine spans its steps)")
    r.add_argument("--lr", type=float, default=3e-3)
    r.add_argument("--lr-min-ratio", type=float, default=0.1)
    r.add_argument("--lr-warmup-steps", type=int, default=50)
    r.add_argument("--weight-decay", type=float, default=0.1)
    r.add_argument("--beta1", type=float, default=0.9)
    r.add_argument("--beta2", type=float, default=0.95)
    r.add_argument("--puzzle-emb-lr", type=float, default=1e-4)
    r.add_argument("--puzzle-emb-weight-decay", type=float, default=1.0)
    r.add_argument("--ema-rate", type=float, default=0.99)
    r.add_argument("--no-ema", dest="ema", action="store_false", help="evaluate the raw weights")
    r.add_argument(
        "--loss-type", default="stablemax_cross_entropy", choices=["stablemax_cross_entropy", "softmax_cross_entropy"]
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- imports


def _stub(name: str, **attrs: Any) -> None:
    """Put an empty stand-in for `name` in sys.modules unless the real package is installed (adjustment 1)."""
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    module = types.ModuleType(name)
    module.__dict__.update(attrs, __trm_stub__=True)
    sys.modules[name] = module


def import_official(root: str | os.PathLike) -> types.SimpleNamespace:
    """Import pretrain.py and friends from the checkout, with the shims of adjustment 1."""
    ns = load_official(root)  # puts the checkout first on sys.path, checks models.* came from it
    adam = types.ModuleType("adam_atan2")
    adam.AdamATan2 = trm.optim.AdamATan2  # the CUDA extension's arithmetic, in PyTorch
    sys.modules["adam_atan2"] = adam
    _stub("wandb", run=None)
    _stub("coolname", generate_slug=lambda n=2: "cpu-run")
    _stub("hydra", main=lambda *a, **k: lambda fn: fn)
    _stub("omegaconf", DictConfig=type("DictConfig", (dict,), {}))
    _stub("argdantic", ArgParser=type("ArgParser", (), {}))
    mods = {name: importlib.import_module(name) for name in ("pretrain", "puzzle_dataset", "models.ema")}
    for mod in mods.values():
        if not Path(mod.__file__).resolve().is_relative_to(ns.root):
            raise SystemExit(f"`{mod.__name__}` was imported from {mod.__file__}, not from {ns.root}")
    return types.SimpleNamespace(root=ns.root, pretrain=mods["pretrain"], ema=mods["models.ema"], losses=ns.losses)


# ---------------------------------------------------------------------------------------------- config


def pretrain_config(off: types.SimpleNamespace, args: argparse.Namespace) -> Any:
    """The official PretrainConfig (pydantic, validated by pretrain.py) for these options."""
    arch = dict(
        name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        loss=dict(name="losses@ACTLossHead", loss_type=args.loss_type),
        halt_exploration_prob=args.halt_exploration_prob,
        halt_max_steps=args.N_sup,
        H_cycles=args.T,
        L_cycles=args.n,
        H_layers=0,
        L_layers=args.layers,
        hidden_size=args.hidden_size,
        num_heads=args.num_heads,
        expansion=args.expansion,
        puzzle_emb_ndim=args.puzzle_emb_ndim,
        pos_encodings=args.pos_encodings,
        forward_dtype=args.dtype,
        mlp_t=args.mlp_t,
        puzzle_emb_len=args.puzzle_emb_len if args.puzzle_emb_ndim > 0 else 0,  # adjustment 5
        no_ACT_continue=True,
    )
    return off.pretrain.PretrainConfig(
        arch=arch,
        data_paths=[str(args.data)],
        global_batch_size=args.batch_size,
        epochs=args.epochs,
        eval_interval=args.epochs,  # one pass of the train loader; we evaluate once, at the end
        lr=args.lr,
        lr_min_ratio=args.lr_min_ratio,
        lr_warmup_steps=args.lr_warmup_steps,
        weight_decay=args.weight_decay,
        beta1=args.beta1,
        beta2=args.beta2,
        puzzle_emb_lr=args.puzzle_emb_lr,
        puzzle_emb_weight_decay=args.puzzle_emb_weight_decay,
        seed=args.seed,
        ema=args.ema,
        ema_rate=args.ema_rate,
    )


def device_create_model(
    off: types.SimpleNamespace, device: str, compile: bool = False
) -> Callable[..., tuple[torch.nn.Module, list, list[float]]]:
    """pretrain.create_model, built on `device` (adjustment 2); same signature and return value."""
    pt = off.pretrain  # pt.AdamATan2 is our shim's class, as pretrain.py imported it

    def create_model(config: Any, train_metadata: Any, rank: int, world_size: int):
        extra = dict(config.arch.__pydantic_extra__)
        model_cfg = dict(
            **extra,
            batch_size=config.global_batch_size // world_size,
            vocab_size=train_metadata.vocab_size,
            seq_len=train_metadata.seq_len,
            num_puzzle_identifiers=train_metadata.num_puzzle_identifiers,
            causal=False,
        )
        model = build_official(
            model_cfg, loss_type=config.arch.loss.loss_type, path=off.root, device=device, dtype=extra["forward_dtype"]
        )
        if compile:
            model = torch.compile(model)  # as pretrain.py, after the model is built and before the optimizers
        betas = (config.beta1, config.beta2)
        adam = pt.AdamATan2(model.parameters(), lr=0, weight_decay=config.weight_decay, betas=betas)
        if config.arch.puzzle_emb_ndim == 0:
            return model, [adam], [config.lr]
        sparse = pt.CastedSparseEmbeddingSignSGD_Distributed(
            model.model.puzzle_emb.buffers(), lr=0, weight_decay=config.puzzle_emb_weight_decay, world_size=world_size
        )
        return model, [sparse, adam], [config.puzzle_emb_lr, config.lr]

    return create_model


class _OnDevice:
    """A tensor stand-in whose `.cuda()` returns the tensor on the run's device, so train_batch's `v.cuda()`
    moves it there (on the CPU: a no-op)."""

    __slots__ = ("tensor", "device")

    def __init__(self, tensor: torch.Tensor, device: torch.device):
        self.tensor, self.device = tensor, device

    def cuda(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.tensor.to(self.device, non_blocking=True)


# ---------------------------------------------------------------------------------------------- train / eval


class _Window:
    """Train metrics averaged since the last progress line. train_batch reports the halted sequences' means
    (`count` is 1, or 0 when none halted that step): losses are averaged over every step, the rest over the
    steps where something halted."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = self.halting_steps = 0

    def add(self, metrics: dict[str, float]) -> None:
        self.steps += 1
        halted = metrics.get("count", 0) > 0
        self.halting_steps += halted
        for k, v in metrics.items():
            if k.endswith("loss") or k == "lr" or halted:
                self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict[str, float]:
        return {
            k: v / max(self.steps if k.endswith("loss") or k == "lr" else self.halting_steps, 1)
            for k, v in self.sums.items()
            if k != "count"
        }


def train(
    off: types.SimpleNamespace,
    config: Any,
    state: Any,
    source: Any,
    budget_s: float,
    device: torch.device,
    recorder: official_streams.StreamRecorder | None = None,
) -> dict[str, Any]:
    """The official training loop (launch's inner loop: train_batch, then EMA update), cut at `budget_s`."""
    pt = off.pretrain
    ema = None
    if config.ema:
        ema = off.ema.EMAHelper(mu=config.ema_rate)
        ema.register(state.model)
    state.model.train()
    window = _Window()
    last_means: dict[str, float] = {}
    stopped_by = "schedule"
    start = last_print = time.perf_counter()
    elapsed = 0.0
    for _set_name, batch, global_batch_size in source:
        if state.carry is None:  # adjustment 3: what train_batch would do under torch.device("cuda")
            state.carry = state.model.initial_carry({k: v.to(device) for k, v in batch.items()})
        with recorder.step(batch) if recorder else contextlib.nullcontext():
            metrics = pt.train_batch(
                config, state, {k: _OnDevice(v, device) for k, v in batch.items()}, global_batch_size, rank=0,
                world_size=1,
            )  # fmt: skip
        if metrics is not None:
            window.add({k.removeprefix("train/"): float(v) for k, v in metrics.items()})
        if ema is not None:
            ema.update(state.model)
        now = time.perf_counter()
        elapsed = now - start
        if now - last_print >= PROGRESS_EVERY_S:
            last_print, last_means, window = now, window.means(), _Window()
            print(
                f"  step {state.step}/{state.total_steps}  {elapsed:6.0f}s  {state.step / elapsed:.2f} steps/s  "
                f"lr {last_means.get('lr', 0):.2e}  lm_loss {last_means.get('lm_loss', float('nan')):.4f}  "
                f"train token {last_means.get('accuracy', 0):.3f}  exact {last_means.get('exact_accuracy', 0):.3f}",
                flush=True,
            )
        if state.step >= state.total_steps:
            break
        if elapsed >= budget_s:
            stopped_by = "time"
            break
    recent = window.means() if window.steps else last_means
    return dict(ema=ema, train_seconds=elapsed, stopped_by=stopped_by, recent_train_metrics=recent)


@torch.inference_mode()
def evaluate(off: types.SimpleNamespace, model: torch.nn.Module, loader: Any, device: torch.device) -> dict[str, Any]:
    """Official eval semantics (adjustment 4): every sequence runs all halt_max_steps, the argmax of the final
    logits is the answer; official per-set metrics plus pooled token / exact accuracy."""
    ignore = off.losses.IGNORE_LABEL_ID
    model.eval()
    sums: dict[str, dict[str, float]] = {}
    tokens_right = tokens = puzzles_right = puzzles = examples = 0
    steps_seen: set[int] = set()
    for set_name, batch, effective in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        carry = model.initial_carry(batch)
        steps = 0
        while True:
            carry, _loss, metrics, preds, all_finish = model(carry=carry, batch=batch, return_keys={"preds"})
            steps += 1
            if all_finish:
                break
        steps_seen.add(steps)
        acc = sums.setdefault(set_name, {})
        for k, v in metrics.items():
            acc[k] = acc.get(k, 0.0) + float(v)
        labels = carry.current_data["labels"]
        mask = labels != ignore
        right = mask & (preds["preds"] == labels)
        labelled = mask.sum(-1)
        tokens_right += int(right.sum())
        tokens += int(labelled.sum())
        puzzles_right += int(((right.sum(-1) == labelled) & (labelled > 0)).sum())
        puzzles += int((labelled > 0).sum())
        examples += int(effective)
    official = {
        name: {k: v / max(m["count"], 1) for k, v in m.items() if k != "count"} | {"count": m["count"]}
        for name, m in sums.items()
    }
    return dict(
        exact_accuracy=puzzles_right / max(puzzles, 1),
        token_accuracy=tokens_right / max(tokens, 1),
        puzzles=puzzles,
        examples=examples,
        labelled_tokens=tokens,
        supervision_steps=sorted(steps_seen),
        official_metrics=official,
    )


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # adjustment 6
    off = import_official(args.official)
    pt = off.pretrain
    config = pretrain_config(off, args)

    torch.random.manual_seed(config.seed)  # as launch() (rank 0), before the loaders and the model
    kw = dict(global_batch_size=config.global_batch_size, rank=0, world_size=1)
    train_loader, train_meta = pt.create_dataloader(
        config, "train", test_set_mode=False, epochs_per_iter=config.epochs, **kw
    )
    eval_loader, eval_meta = pt.create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1, **kw)
    device = torch.device(args.device)
    pt.create_model = device_create_model(off, device, args.compile)  # adjustment 2
    state = pt.init_train_state(config, train_meta, rank=0, world_size=1)
    num_params = sum(p.numel() for p in state.model.parameters())
    if args.save_init:
        torch.save(official_state_dict(getattr(state.model, "_orig_mod", state.model)), args.save_init)
        print(f"initial weights -> {args.save_init}", flush=True)
        if args.minutes == 0:
            return
    source = train_loader.dataset if args.no_loader_worker else train_loader
    print(
        f"official TRM ({off.root}): {num_params:,} parameters, {state.total_steps} scheduled steps "
        f"({config.epochs} epochs x {train_meta.total_groups} groups / {config.global_batch_size}), "
        f"budget {args.minutes:g} min, {torch.get_num_threads()} threads",
        flush=True,
    )

    if args.record_streams and args.compile:
        raise SystemExit("--record-streams wraps torch.rand_like; a compiled model would recompile every step")
    recorder = official_streams.StreamRecorder(args.halt_exploration_prob, args.seed) if args.record_streams else None
    run = train(off, config, state, source, budget_s=args.minutes * 60.0, device=device, recorder=recorder)
    if recorder:
        recorder.save(args.record_streams)
        print(f"{len(recorder.batches)} steps' batches and exploration draws -> {args.record_streams}", flush=True)
    del train_loader, source  # its worker is not needed any more

    t0 = time.perf_counter()
    ema = run.pop("ema")
    eval_model = ema.ema_copy(state.model) if ema is not None else state.model  # as launch(): "SWITCH TO EMA"
    result = evaluate(off, eval_model, eval_loader.dataset if args.no_loader_worker else eval_loader, device)
    eval_seconds = time.perf_counter() - t0

    train_s = run["train_seconds"]
    record = dict(
        implementation="official",
        official_root=str(off.root),
        data=str(Path(args.data).resolve()),
        minutes=args.minutes,
        steps=state.step,
        total_steps=state.total_steps,
        stopped_by=run["stopped_by"],
        train_seconds=train_s,
        steps_per_s=state.step / max(train_s, 1e-9),
        examples_per_s=state.step * config.global_batch_size / max(train_s, 1e-9),
        evaluated="ema" if ema is not None else "raw",
        eval_seconds=eval_seconds,
        **result,
        recent_train_metrics=run["recent_train_metrics"],  # means since the last progress line
        num_params=num_params,
        threads=torch.get_num_threads(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        loader="in-process" if args.no_loader_worker else "official DataLoader (1 worker)",
        torch=torch.__version__,
        python=platform.python_version(),
        args=vars(args),
        config=config.model_dump(),
        train_metadata=train_meta.model_dump(),
        test_metadata=eval_meta.model_dump(),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"official: {state.step} steps in {train_s:.1f}s ({record['steps_per_s']:.2f} steps/s, stopped by "
        f"{run['stopped_by']}); test ({record['evaluated']}, {result['puzzles']} puzzles, "
        f"{'/'.join(map(str, result['supervision_steps']))} steps): exact {result['exact_accuracy']:.4f}, "
        f"token {result['token_accuracy']:.4f} -> {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
