"""Data parallel (torchrun, gloo on CPU) and gradient accumulation keep the mathematics of one process with
one batch of `global_batch_size` rows: the same losses, weights, puzzle embeddings and EMA, also across a
resume with another number of processes or micro-batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from trm.cli import main
from trm.config import build_train_config
from trm.data import load_split
from trm.train import Trainer

N_IDS = 12  # puzzles carry identifiers 1..12, so the sparse puzzle-embedding step sees repeated rows


@pytest.fixture(scope="module")
def ided(tmp_path_factory) -> Path:
    """4x4 Sudoku whose puzzles carry their own identifiers (the Sudoku builder gives all of them the blank
    one): the official layout with puzzle_identifiers and num_puzzle_identifiers rewritten."""
    out = tmp_path_factory.mktemp("data") / "ided"
    argv = ["data", "sudoku", "--out", str(out), "--generate", "120", "--size", "4", "--aug", "3"]
    assert main([*argv, "--test-fraction", "0.2", "--seed", "3"]) == 0
    for split in ("train", "test"):
        ds = load_split(out, split)
        ids = (np.arange(ds.num_puzzles, dtype=np.int32) % N_IDS) + 1
        np.save(out / split / "all__puzzle_identifiers.npy", ids)
        meta = json.loads((out / split / "dataset.json").read_text())
        (out / split / "dataset.json").write_text(json.dumps({**meta, "num_puzzle_identifiers": N_IDS + 1}))
        (out / split / "SHA256SUMS").unlink()  # edited on purpose: its checksums no longer apply
    (out / "identifiers.json").write_text(json.dumps(["<blank>", *[f"p{i}" for i in range(1, N_IDS + 1)]]))
    return out


def config(data: Path, **extra):
    overrides = [f"data={data}", "global_batch_size=32", "lr_min_ratio=1", "log_every=1", "eval_interval=1000"]
    return build_train_config("sudoku4-tiny", overrides + [f"{k}={v}" for k, v in extra.items()])


def run_steps(trainer: Trainer, steps: int) -> list[dict[str, float]]:
    batches = iter(trainer.sampler)
    return [{k: float(v) for k, v in trainer.train_step(next(batches)).items()} for _ in range(steps)]


def assert_same_state(a: Trainer, b: Trainer) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    for name in a.ema.shadow:
        torch.testing.assert_close(a.ema.shadow[name], b.ema.shadow[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_accumulation_equals_the_big_batch_step(ided, tmp_path):
    big = Trainer(config(ided), tmp_path / "big", progress=False)
    small = Trainer(config(ided, micro_batch_size=8), tmp_path / "small", progress=False)
    assert len(big.carries) == 1 and len(small.carries) == 4
    table0 = big.model.puzzle_emb.weight.clone()
    a, b = run_steps(big, 4), run_steps(small, 4)
    for step_a, step_b in zip(a, b, strict=True):
        assert step_a == pytest.approx(step_b, rel=1e-5, abs=1e-6)
    assert a[0]["count"] < 32 or a[-1]["count"] > 0  # rows halted and refilled along the way
    assert_same_state(big, small)
    moved = (big.model.puzzle_emb.weight - table0).abs().sum(-1) > 0
    assert moved.sum() >= N_IDS // 2 and not moved[0]  # identifiers' rows took sign-SGD steps, the blank one none


def test_resume_with_other_micro_batches_continues_the_same_run(ided, tmp_path):
    ref = Trainer(config(ided), tmp_path / "ref", progress=False)
    expected = run_steps(ref, 4)
    first = Trainer(config(ided, micro_batch_size=8), tmp_path / "a", progress=False)
    got = run_steps(first, 2)
    state = first.state_dict()
    assert state["carry"]["y"].shape[0] == 32  # the carry of the whole global batch, in its row order
    second = Trainer(config(ided, micro_batch_size=16), tmp_path / "b", progress=False)
    second.load_state_dict(state)
    got += run_steps(second, 2)
    for step_a, step_b in zip(expected, got, strict=True):
        assert step_a == pytest.approx(step_b, rel=1e-5, abs=1e-6)
    assert_same_state(ref, second)


def test_micro_batch_that_does_not_divide_is_one_clear_error(ided, capsys):
    argv = ["train", "sudoku4-tiny", f"data={ided}", "global_batch_size=32", "micro_batch_size=12"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "micro_batch_size 12 does not divide" in err[0]


def _cli(args: list[str], processes: int) -> None:
    """`trm` under torchrun with `processes` ranks (or plain, for 1), one thread each: with equal thread
    counts the per-rank and per-micro-batch kernels are the same, so the sums can be compared bit for bit."""
    exe = Path(sys.executable)
    torchrun = [str(exe.with_name("torchrun")), "--standalone", "--nproc-per-node", str(processes)]
    head = torchrun if processes > 1 else [str(exe)]  # --standalone: a free port, not a fixed 29500
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*head, "-m", "trm.cli", *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _rows(run: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def _state(run: Path) -> dict:
    return torch.load(run / "train_state.pt", weights_only=False)


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_with_a_resume_in_the_middle(ided, tmp_path):
    """torchrun with 2 CPU processes: 3 steps, then a resume to 6. Against one process that accumulates the
    same two 16-row slices, everything is bit-identical; against one 32-row batch, equal to summation order."""
    common = [f"data={ided}", "global_batch_size=32", "lr_min_ratio=1", "log_every=1", "eval_interval=1000"]
    one, acc, two = tmp_path / "one", tmp_path / "acc", tmp_path / "two"
    assert main(["train", "sudoku4-tiny", *common, "max_steps=6", "--run-dir", str(one), "--no-progress"]) == 0
    accumulating = ["micro_batch_size=16", "max_steps=6", "--run-dir", str(acc), "--no-progress"]
    _cli(["train", "sudoku4-tiny", *common, *accumulating], 1)
    _cli(["train", "sudoku4-tiny", *common, "max_steps=3", "--run-dir", str(two), "--no-progress"], 2)
    cfg = json.loads((two / "config.json").read_text())
    (two / "config.json").write_text(json.dumps({**cfg, "max_steps": 6}))  # continue to the full length
    _cli(["train", "--resume", str(two), "--no-progress"], 2)

    b = _rows(two, "train")
    assert [r["step"] for r in _rows(one, "train")] == [r["step"] for r in b] == list(range(1, 7))
    keys = ("lm_loss", "q_halt_loss", "accuracy", "exact_accuracy", "count", "steps", "lr")
    for ref, rel in ((acc, 1e-6), (one, 1e-5)):  # metric sums: float64 over ranks, float32 over micro-batches
        for ra, rb in zip(_rows(ref, "train"), b, strict=True):
            for key in keys:
                assert ra[key] == pytest.approx(rb[key], rel=rel, abs=1e-6), (ref.name, ra["step"], key)

    # DDP's mean of the ranks' gradients is the accumulation's sum of the same slices, term for term
    sa, sb = _state(acc), _state(two)
    for part in ("model", "ema"):  # the model includes puzzle_emb.weight, the sparse table
        for key in sa[part]:
            assert torch.equal(sa[part][key], sb[part][key]), (part, key)
    for key in ("y", "z", "steps", "halted"):
        assert torch.equal(sa["carry"][key], sb["carry"][key]), key
    ea, eb = _rows(acc, "eval")[-1], _rows(two, "eval")[-1]  # evaluation gathered over the two ranks
    assert ea.pop("split") == eb.pop("split") == "eval"
    assert ea.pop("elapsed_s") > 0 and eb.pop("elapsed_s") > 0  # wall clocks differ
    assert ea["count"] == eb["count"] == load_split(ided, "test").num_examples
    assert ea == pytest.approx(eb, rel=1e-9, abs=1e-12)  # per-rank sums: only their order can differ

    e1 = _rows(one, "eval")[-1]  # one batch of 32 rows sums its gradients in another order than two slices
    assert {k: v for k, v in e1.items() if k not in ("split", "elapsed_s")} == pytest.approx(eb, rel=1e-4, abs=1e-6)
    s1 = _state(one)
    for key in s1["model"]:
        torch.testing.assert_close(s1["model"][key], sb["model"][key], rtol=1e-4, atol=1e-5, msg=key)
    for key in ("steps", "halted"):
        assert torch.equal(s1["carry"][key], sb["carry"][key]), key
    for key in ("y", "z"):  # after T * (n + 1) applications of the network the 1e-6 differences grow
        torch.testing.assert_close(s1["carry"][key], sb["carry"][key], rtol=1e-3, atol=2e-3, msg=key)
    assert (two / "checkpoints" / "step_6" / "model.safetensors").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_by_rendezvous_train_like_one_process(ided, tmp_path):
    """The README's multi-machine command (`--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT`), both
    "machines" on this one: the ranks meet through the rendezvous, train bit-identically to one process that
    accumulates the same slices, and only global rank 0 speaks on the terminal."""
    common = [f"data={ided}", "global_batch_size=32", "lr_min_ratio=1", "log_every=1", "eval_interval=1000"]
    common += ["max_steps=4"]
    acc, nodes = tmp_path / "acc", tmp_path / "nodes"
    _cli(["train", "sudoku4-tiny", *common, "micro_batch_size=16", "--run-dir", str(acc), "--no-progress"], 1)
    torchrun = Path(sys.executable).with_name("torchrun")
    launch = [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    launch += ["--rdzv-endpoint", f"localhost:{_free_port()}", "--rdzv-id", "trm-test", "-m", "trm.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    node = [*launch, "train", "sudoku4-tiny", *common, "--run-dir", str(nodes), "--no-progress"]
    procs = [
        subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert sorted("final eval:" in out for out, _ in outs) == [False, True]  # one node holds global rank 0
    sa, sb = _state(acc), _state(nodes)
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    assert _rows(acc, "eval")[-1]["exact_accuracy"] == _rows(nodes, "eval")[-1]["exact_accuracy"]


def _machines(per_node: list[list[str]], timeout: float = 300) -> list[tuple[int, str, str]]:
    """One torchrun per "machine" (node rank i runs `trm` with per_node[i]), met through a static rendezvous on
    this host; (exit status, stdout, stderr) of each. Nodes still running at the timeout are killed."""
    port, env = _free_port(), {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    launch = [str(torchrun), "--nnodes", str(len(per_node)), "--nproc-per-node", "1", "--master-addr", "localhost"]
    launch += ["--master-port", str(port)]
    procs = [
        subprocess.Popen(
            [*launch, "--node-rank", str(i), "-m", "trm.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i, args in enumerate(per_node)
    ]
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            stdout, stderr = proc.communicate()
        out.append((proc.returncode, stdout, stderr))
    return out


@pytest.mark.slow
def test_machines_without_a_shared_run_directory_resume_from_rank_0_s_state(ided, tmp_path):
    """Two "machines" with their own disks: each writes (or not) its own run directory. Only global rank 0's
    holds the config and the state; on `--resume` the other machine's directory is missing, and its rank
    continues from rank 0's config and state, bit-identically to one process that was never interrupted."""
    common = [f"data={ided}", "global_batch_size=32", "lr_min_ratio=1", "log_every=1", "eval_interval=1000"]
    acc, first, second = tmp_path / "acc", tmp_path / "machine0" / "run", tmp_path / "machine1" / "run"
    _cli(["train", "sudoku4-tiny", *common, "max_steps=4", "micro_batch_size=16", "--run-dir", str(acc)], 1)
    train = ["train", "sudoku4-tiny", *common, "max_steps=2", "--no-progress", "--run-dir"]
    results = _machines([[*train, str(first)], [*train, str(second)]])
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    assert (first / "train_state.pt").is_file() and not second.exists()  # only rank 0 writes
    cfg = json.loads((first / "config.json").read_text())
    (first / "config.json").write_text(json.dumps({**cfg, "max_steps": 4}))

    results = _machines([["train", "--resume", str(path), "--no-progress"] for path in (first, second)])
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    assert [r["step"] for r in _rows(first, "train")] == [1, 2, 3, 4]
    sa, sb = _state(acc), _state(first)
    assert sb["step"] == 4
    for part in ("model", "ema"):
        for key in sa[part]:
            assert torch.equal(sa[part][key], sb[part][key]), (part, key)
    assert not second.exists()


@pytest.mark.slow
def test_a_machine_without_the_data_ends_the_whole_run_with_its_one_error_line(ided, tmp_path):
    """One machine lacks the data set (no shared disk there): both machines end with that machine's error line
    and a non-zero status (before, the other one ended in DDP's first broadcast with an internal error, gloo's
    "connection closed by peer", naming no cause)."""
    missing = tmp_path / "machine1" / "data"
    common = ["global_batch_size=32", "max_steps=2", "--no-progress", "--run-dir"]
    per_node = [
        ["train", "sudoku4-tiny", f"data={ided}", *common, str(tmp_path / "run0")],
        ["train", "sudoku4-tiny", f"data={missing}", *common, str(tmp_path / "run1")],
    ]
    results = _machines(per_node, timeout=120)
    assert [code is not None and code != 0 for code, _, _ in results] == [True, True], [r[0] for r in results]
    for _, _, err in results:
        lines = [line for line in err.splitlines() if line.startswith("trm: error:")]
        assert len(lines) == 1 and str(missing) in lines[0], err[-3000:]


DDP_ALIVE_AT_DESTROY = """
import gc, os, sys
from pathlib import Path
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

destroy = dist.destroy_process_group

def checked_destroy(*args):
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    (Path(os.environ["CHECK_DIR"]) / f"rank{os.environ['RANK']}").write_text(str(alive))
    destroy(*args)

dist.destroy_process_group = checked_destroy
from trm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_ranks_leave_the_process_group_only_once_the_ddp_model_is_gone(ided, tmp_path):
    """DDP's reducer holds the process group: freed after destroy_process_group, it destroys gloo's group with
    the GIL held and can hang the run at its very end (seen once under torchrun). Each rank checks, as it
    leaves the group, that no DDP module is alive any more."""
    script = tmp_path / "checked_trm.py"
    script.write_text(DDP_ALIVE_AT_DESTROY)
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2"]
    args = ["train", "sudoku4-tiny", f"data={ided}", "global_batch_size=32", "max_steps=1", "eval_interval=1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHECK_DIR": str(tmp_path)}
    run = [*torchrun, str(script), *args, "--run-dir", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["0", "0"]  # DDP modules alive at the exit


def test_a_failing_step_leaves_the_process_group_only_once_the_ddp_model_is_gone(ided, tmp_path, monkeypatch):
    """The same after an error inside DDP's run: the error's frames hold the trainer until they are cleared.
    A one-rank gloo group stands in for two ranks (the trainer wraps its model in DDP for any Dist with
    world_size > 1; the step fails before any collective could see the difference)."""
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from trm import distributed, train

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    monkeypatch.setattr(distributed, "init", lambda device: distributed.Dist(0, 2, torch.device("cpu")))
    alive_at_destroy: list[int] = []
    destroy = dist.destroy_process_group

    def checked_destroy(*args):
        alive_at_destroy.append(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))
        destroy(*args)

    def broken_step(self, *args):
        assert isinstance(self.step_fn, DistributedDataParallel)
        raise RuntimeError("a step that fails")

    monkeypatch.setattr(dist, "destroy_process_group", checked_destroy)
    monkeypatch.setattr(train.Trainer, "train_step", broken_step)
    with pytest.raises(RuntimeError, match="a step that fails") as failure:
        train.train(config(ided, max_steps=2), tmp_path / "run", progress=False)
    assert alive_at_destroy == [0] and not dist.is_initialized()
    assert "broken_step" in "".join(traceback.format_tb(failure.value.__traceback__))  # the lines stay


def test_one_process_keeps_an_error_s_frames_for_a_post_mortem_debugger(ided, tmp_path, monkeypatch):
    """Without a process group there is nothing to leave: the frames of an error keep their locals."""
    from trm import train

    def broken_step(self, *args):
        raise RuntimeError("a step that fails")

    monkeypatch.setattr(train.Trainer, "train_step", broken_step)
    with pytest.raises(RuntimeError, match="a step that fails") as failure:
        train.train(config(ided, max_steps=2), tmp_path / "run", progress=False)
    frames = [frame for frame, _ in traceback.walk_tb(failure.value.__traceback__)]
    assert any(isinstance(f.f_locals.get("self"), train.Trainer) for f in frames)
