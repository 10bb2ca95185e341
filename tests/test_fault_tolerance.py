"""A run survives a kill at any moment, SIGINT / SIGTERM, a NaN loss, a full disk and damaged files: killed
runs resume to the same metrics and weights as an uninterrupted run, and every failure is one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trm.train
from trm import run_state
from trm.cli import main
from trm.distributed import Dist
from trm.errors import CheckpointError
from trm.integrity import SUMS_NAME, verify_checksums
from trm.run_state import STATE_NAME, load_state
from trm.train import Trainer

TRAIN_KEYS = ("lm_loss", "q_halt_loss", "accuracy", "exact_accuracy", "count", "steps", "lr")
# 80 training puzzles in batches of 16: 5 steps an epoch; evaluations at step 10 and at the end, 16
ARGS = ["max_steps=16", "log_every=5", "eval_interval=2"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A model this small gains nothing from a second thread, which only spins on a busy machine (4x slower);
    the subprocesses get OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data4(sudoku4_data) -> Path:
    return sudoku4_data("--generate", "100", "--aug", "2", "--test-fraction", "0.2", "--seed", "5")


@pytest.fixture(scope="module")
def reference(data4, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must end like."""
    run = tmp_path_factory.mktemp("ref") / "run"
    with pytest.MonkeyPatch.context() as env:  # conftest's float32 fixture is per test, this one per module
        env.setenv("TRM_CPU_DTYPE", "float32")
        assert train(data4, run, *ARGS) == 0
    return run


def train(data: Path, run: Path, *overrides: str) -> int:
    """`trm train` of a new tiny run, in this process."""
    args = ["sudoku4-tiny", f"data={data}", "global_batch_size=16", *overrides, "--run-dir", str(run)]
    return main(["train", *args, "--no-progress"])


def rows(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def assert_same_run(a: Path, b: Path) -> None:
    """The same train log (each step once), the same evaluations and the same final weights."""
    ta, tb = rows(a, "train"), rows(b, "train")
    assert [r["step"] for r in ta] == [r["step"] for r in tb]
    for ra, rb in zip(ta, tb, strict=True):
        for key in TRAIN_KEYS:
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    ea, eb = rows(a, "eval"), rows(b, "eval")
    assert [r["step"] for r in ea] == [r["step"] for r in eb] and ea
    for ra, rb in zip(ea, eb, strict=True):
        assert ra.pop("elapsed_s") > 0 and rb.pop("elapsed_s") > 0 and ra.pop("split") == rb.pop("split")
        assert ra == pytest.approx(rb, rel=1e-6, abs=1e-9)
    sa, sb = load_state(a / STATE_NAME), load_state(b / STATE_NAME)
    assert sa["step"] == sb["step"]
    for key, value in sa["model"].items():
        torch.testing.assert_close(value, sb["model"][key], rtol=1e-6, atol=1e-7, msg=key)
    last = (a / "checkpoints" / "last").read_text().strip()
    assert (b / "checkpoints" / "last").read_text().strip() == last
    wa, wb = (load_file(r / "checkpoints" / last / "model.safetensors") for r in (a, b))
    for key, value in wa.items():
        torch.testing.assert_close(value, wb[key], rtol=1e-6, atol=1e-7, msg=key)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# -- kills at any moment (subprocesses) ---------------------------------------------------------------------
def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "trm.cli", *args], stdout=out, stderr=out, env=environ)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, delay: float = 0.0) -> None:
    """SIGKILL the process `delay` seconds after `ready()` (polled every 5 ms); it must still be running."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, f"the run ended before the moment to kill it:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
    time.sleep(delay)
    assert proc.poll() is None, f"the run ended before the moment to kill it:\n{log.read_text()[-2000:]}"
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_runs_killed_at_any_moment_resume_to_the_same_result(data4, tmp_path):
    """SIGKILL before the first save, between saves and in the middle of writing the state; each time
    `trm train --resume` continues, and the run ends as the uninterrupted one does."""
    overrides = ["max_steps=60", "eval_interval=4", "save_every=0.5"]  # evaluations at 20, 40 and 60
    ref, cut, log = tmp_path / "ref", tmp_path / "cut", tmp_path / "log.txt"
    assert train(data4, ref, *overrides) == 0  # in this process, on one thread as the subprocesses
    state, half_written = cut / STATE_NAME, cut / (STATE_NAME + ".tmp")
    args = ["train", "sudoku4-tiny", f"data={data4}", "global_batch_size=16", *overrides, "--run-dir", str(cut)]

    # 1. before the first save: the config is written, no state yet
    _kill_when(_start([*args, "--no-progress"], log), (cut / "config.json").exists, log)
    assert not state.exists()

    # 2. between saves: the steps after the saved state are lost and redone
    _kill_when(_start(["train", "--resume", str(cut), "--no-progress"], log), state.exists, log, delay=0.3)
    saved = load_state(state)["step"]
    assert 0 < saved < 60

    # 3. in the middle of writing the state of a later step: half of the temporary file is on disk
    resumed = _start(["train", "--resume", str(cut), "--no-progress"], log, TRM_TEST_SLOW_SAVE="60")
    _kill_when(resumed, lambda: half_written.exists() and half_written.stat().st_size > 0, log)
    assert half_written.exists() and load_state(state)["step"] == saved  # the old state is whole

    # 4. to the end
    before = log.read_text()
    assert _start(["train", "--resume", str(cut), "--no-progress"], log).wait() == 0
    assert f"removed the half-written {half_written}" in log.read_text()[len(before) :]
    assert not list(cut.rglob("*.tmp"))
    assert_same_run(ref, cut)


# -- signals, divergence, a full disk, damaged files (in process) -------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_state_and_the_run_resumes_exactly(data4, reference, tmp_path, monkeypatch, capsys, signum):
    run = tmp_path / "run"
    plain_step = Trainer.train_step

    def step_then_signal(self: Trainer, batch: dict, elapsed: float = 0.0) -> dict:
        out = plain_step(self, batch, elapsed)
        if self.step == 13:  # after the evaluation and checkpoint at 10, mid-window (logged at 10, next at 15)
            signal.raise_signal(signum)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    handler = signal.getsignal(signum)
    assert train(data4, run, *ARGS) == 128 + signum
    name = signal.Signals(signum).name
    assert (
        one_error_line(capsys)
        == f"trm: interrupted at step 13 ({name}), state saved; resume with trm train --resume {run}"
    )
    assert load_state(run / STATE_NAME)["step"] == 13
    assert signal.getsignal(signum) is handler  # put back as it was
    monkeypatch.setattr(Trainer, "train_step", plain_step)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert_same_run(reference, run)


@pytest.mark.parametrize("at", [10, 16])  # a periodic evaluation, the final one
def test_a_signal_during_an_evaluation_ends_it_and_the_resumed_run_evaluates_again(
    data4, reference, tmp_path, monkeypatch, capsys, at
):
    """A signal while the trainer evaluates is answered after the evaluation's next pool of puzzles, not at its
    end: the state of that step is saved, no eval row or checkpoint is written for it, and the resumed run
    evaluates that step again first, ending like the uninterrupted run."""
    run = tmp_path / "run"
    plain_run_eval, plain_evaluate = Trainer.run_eval, trm.train.evaluate
    evaluating: list[int] = []  # the step of every evaluation begun
    pools: list[int] = []  # the step of every pool of puzzles finished

    def run_eval(self: Trainer, stop=None) -> dict:
        evaluating.append(self.step)
        return plain_run_eval(self, *([] if stop is None else [stop]))  # (the old code took no stop)

    def evaluate(*args, progress, **kwargs):
        def finished(k: int) -> None:
            pools.append(evaluating[-1])
            if pools.count(at) == 1 and pools[-1] == at:
                signal.raise_signal(signal.SIGTERM)
            progress(k)

        return plain_evaluate(*args, progress=finished, **kwargs)

    monkeypatch.setattr(Trainer, "run_eval", run_eval)
    monkeypatch.setattr(trm.train, "evaluate", evaluate)
    assert train(data4, run, *ARGS) == 128 + signal.SIGTERM
    assert (
        one_error_line(capsys)
        == f"trm: interrupted at step {at} (SIGTERM), state saved; resume with trm train --resume {run}"
    )
    assert pools.count(at) == 1  # the test set has two pools: the second one never ran
    assert load_state(run / STATE_NAME)["step"] == at
    assert at not in [r["step"] for r in rows(run, "eval")] and not (run / "checkpoints" / f"step_{at}").exists()
    begun = len(evaluating)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert evaluating[begun] == at  # evaluated again, before any training step
    assert_same_run(reference, run)


def test_a_run_killed_before_its_first_save_starts_again_from_its_config(data4, reference, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((reference / "config.json").read_text())
    (run / "metrics.jsonl").write_text('{"split": "train", "step": 5, "lm_loss": 9.0}\n{"split": "tr')  # killed
    (run / (STATE_NAME + ".tmp")).write_bytes(b"half a state")
    (run / "checkpoints" / "step_7.tmp").mkdir(parents=True)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no state saved yet; the run starts again from its config.json" in out
    assert f"removed the half-written {run / (STATE_NAME + '.tmp')}" in out
    assert not list(run.rglob("*.tmp"))
    assert_same_run(reference, run)


def _continue(run: Path, **changes: object) -> None:
    """Change the run's saved config (a longer run, another learning rate) before resuming it."""
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, **changes}))


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_state(data4, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(data4, run, "max_steps=6") == 0
    before = _snapshot(run)
    _continue(run, max_steps=40, lr=1e30)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("trm: error: training diverged: ") and ("is nan" in line or "is inf" in line)
    assert f"the last good state (step 6) is kept in {run / STATE_NAME}" in line
    after = _snapshot(run)
    assert after.pop("metrics.jsonl").startswith(before.pop("metrics.jsonl"))  # the poisoned window is not logged
    after.pop("config.json"), before.pop("config.json")
    assert after == before  # no state, no checkpoint written since
    weights = load_state(run / STATE_NAME)["model"].values()
    assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())


@pytest.mark.parametrize("what", ["state", "checkpoint"])
def test_a_full_disk_is_one_line_and_the_previous_files_stay_whole(data4, tmp_path, monkeypatch, capsys, what):
    run = tmp_path / "run"
    assert train(data4, run, "max_steps=4") == 0
    state, ckpts = (run / STATE_NAME).read_bytes(), sorted(p.name for p in (run / "checkpoints").iterdir())
    _continue(run, max_steps=8, save_every=1e-6 if what == "state" else 3600)  # a state save after every step

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = one_error_line(capsys)
    if what == "state":
        target, kept = f"{run / STATE_NAME}: cannot save the training state", "the previous training state is intact"
    else:
        target, kept = f"{run / 'checkpoints' / 'step_8'}: cannot save the checkpoint", "no checkpoint was written"
    assert line == f"trm: error: {target} (No space left on device); {kept}"
    assert (run / STATE_NAME).read_bytes() == state and load_state(run / STATE_NAME)["step"] == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ckpts and not list(run.rglob("*.tmp"))


def test_damaged_state_checkpoint_and_data_files_are_named(data4, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(data4, run, "max_steps=2") == 0
    state = run / STATE_NAME
    good = state.read_bytes()
    legacy = tmp_path / "legacy.pt"  # a state written before checksums still loads
    torch.save(load_state(state), legacy)
    assert load_state(legacy)["step"] == 2

    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01
    state.write_bytes(damaged)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert (
        one_error_line(capsys)
        == f"trm: error: {state}: corrupt training state (SHA-256 checksum mismatch: damaged on disk)"
    )

    ckpt = run / "checkpoints" / "step_2"
    listed = [line.split("  ")[1] for line in (ckpt / SUMS_NAME).read_text().splitlines()]
    assert listed == ["config.json", "model.safetensors", "task.json"]
    verify_checksums(ckpt)
    weights = bytearray((ckpt / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01  # a flipped bit in the last weight: safetensors itself cannot tell
    (ckpt / "model.safetensors").write_bytes(weights)
    with pytest.raises(CheckpointError, match=f"{ckpt / 'model.safetensors'}: corrupt \\(SHA-256 checksum mismatch"):
        verify_checksums(ckpt)

    labels = data4 / "train" / "all__labels.npy"
    copy = tmp_path / "data"
    (copy / "train").mkdir(parents=True)
    for p in (data4 / "train").iterdir():
        (copy / "train" / p.name).write_bytes(p.read_bytes()[: 100 if p == labels else None])
    assert train(copy, tmp_path / "x") == 2
    line = one_error_line(capsys)
    assert line.startswith(f"trm: error: {copy / 'train' / 'all__labels.npy'}: corrupt")


def test_each_process_restores_the_cuda_generator_of_its_own_gpu():
    """A state keeps one CUDA generator state; older states kept one per GPU that rank 0 saw, and restoring
    them all failed on a machine that shows fewer GPUs: now this GPU's (or the last) is taken, and none off CUDA."""
    states = [torch.full((4,), i, dtype=torch.uint8) for i in range(2)]
    own = run_state._own_cuda_rng
    assert own(states, torch.device("cuda", 1)) is states[1]
    assert own(states, torch.device("cuda", 5)) is states[1]  # saved with 2 GPUs visible, resumed on the 6th
    assert own(states, torch.device("cuda")) is states[0]
    assert own(states[0], torch.device("cuda", 3)) is states[0]
    assert own(states, torch.device("cpu")) is None and own(None, torch.device("cuda", 0)) is None


def test_an_interactive_run_says_at_once_that_it_is_stopping(capfd):
    for notice, expected in ((True, 1), (False, 0)):
        with run_state.StopSignals(notice=notice) as stop:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # a second SIGTERM changes nothing; a second SIGINT stops at once
            assert stop.signum == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert capfd.readouterr().err.count("trm: stopping after this step, with the state saved") == expected

    def closed_pipe(fd: int, data: bytes) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    with run_state.StopSignals(notice=True) as stop:  # stderr piped into a `tee` that the same Ctrl-C ended
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(run_state.os, "write", closed_pipe)
            signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # the stop is kept: the run still saves its state


def test_resuming_on_a_data_set_rebuilt_with_another_grid_size_is_one_line(data4, tmp_path, capsys, sudoku4_data):
    """Found by hand: the weights' size mismatch surfaced as an internal error (a RuntimeError)."""
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(data4, data)
    assert train(data, run, "max_steps=2") == 0
    shutil.rmtree(data)
    assert main(["data", "sudoku", "--out", str(data), "--size", "6", "--generate", "60", "--aug", "0"]) == 0
    capsys.readouterr()
    state = (run / STATE_NAME).read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"trm: error: {run / STATE_NAME}: the saved weights do not fit") and "size mismatch" in line
    assert (run / STATE_NAME).read_bytes() == state


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_while_the_cli_is_still_starting_is_one_line(data4, tmp_path, delay):
    """Found by hand: a Ctrl-C in the first seconds (torch still importing, before trm.cli's main ran) was a
    traceback: `import trm` no longer imports torch, so the CLI's handler is in place first."""
    cmd = [sys.executable, "-m", "trm.cli", "train", "sudoku4-tiny", f"data={data4}", "--run-dir", str(tmp_path / "r")]
    proc = subprocess.Popen([*cmd, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("trm:")] == err.strip().splitlines()[-1:], err
    assert err.strip().splitlines()[-1].startswith("trm: interrupted"), err


def test_a_second_run_into_a_run_directory_in_use_is_one_line_and_leaves_the_first_alone(data4, tmp_path, capsys):
    """Found by hand: two `trm train` started together into one --run-dir both ran, their metrics.jsonl lines
    interleaved, until one failed saving. Rank 0 now holds a lock on the directory while it trains; the system
    drops it when the process ends, even by SIGKILL."""
    run, log = tmp_path / "run", tmp_path / "first.log"
    first = _start(["train", "sudoku4-tiny", f"data={data4}", "max_steps=100000", "--run-dir", str(run)], log)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        for argv in (["sudoku4-tiny", f"data={data4}", "max_steps=5", "--run-dir", str(run)], ["--resume", str(run)]):
            assert main(["train", *argv, "--no-progress"]) == 2
            assert one_error_line(capsys) == (
                f"trm: error: {run}: another trm train is running in this run directory; let it end or use "
                "another --run-dir"
            )
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
    with run_state.run_dir_lock(Dist(), run):  # free again once the first run was killed
        pass


def test_the_run_config_records_the_sizes_the_data_decided(data4, tmp_path):
    """Found by hand: `seq_len=5 vocab_size=3` were written into the run's config.json while the model, built
    from the data's sizes (16 cells, 11 tokens), ignored them."""
    assert train(data4, tmp_path / "run", "max_steps=1", "seq_len=5", "vocab_size=3") == 0
    model = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (model["seq_len"], model["vocab_size"]) == (16, 11)
