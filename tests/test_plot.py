"""`trm plot`: training and evaluation curves of several runs on shared axes, from their metrics.jsonl as the
trainer's logger writes it; bad run directories are one error line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from trm.cli import main
from trm.plot import CURVES, labels, read_metrics, series
from trm.train_log import MetricsLogger

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


def fake_run(run_dir: Path, scale: float) -> Path:
    """A run's metrics.jsonl written by the trainer's own logger: train rows every step, eval every 5."""
    run_dir.mkdir(parents=True)
    logger = MetricsLogger(run_dir, SimpleNamespace(tensorboard=False, wandb=False))
    for step in range(1, 21):
        logger.log(
            "train",
            step,
            {"lm_loss": scale / step, "exact_accuracy": step / 20, "q_halt_accuracy": 0.5, "steps": 16.0, "lr": 1e-4},
        )
        if step % 5 == 0:
            logger.log("eval", step, {"lm_loss": scale / step, "exact_accuracy": step / 25, "steps": 8.0})
    return run_dir


def colour_pixels(image, colour: str, tol: int = 10) -> int:
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(pixels - target).max(axis=-1) <= tol).sum())


def test_plot_draws_every_run_in_its_own_colour(tmp_path, capsys):
    a, b = fake_run(tmp_path / "mlp" / "seed0", 1.0), fake_run(tmp_path / "att" / "seed0", 2.0)
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    image = Image.open(out)
    assert image.size == (1500, 800)
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    first, second = (to_hex(c) for c in plt.rcParams["axes.prop_cycle"].by_key()["color"][:2])
    assert colour_pixels(image, first) > 500 and colour_pixels(image, second) > 500  # one colour per run
    assert labels([a, b]) == ["mlp/seed0", "att/seed0"]  # the legend tells same-named runs apart
    assert labels([a]) == ["seed0"]
    rows = read_metrics(a)
    assert series(rows, "eval", "exact_accuracy") == ([5, 10, 15, 20], [0.2, 0.4, 0.6, 0.8])
    assert series(rows, "eval", "lr") == ([], [])  # eval logs no learning rate
    assert {key for key, _, _ in CURVES} == {"lm_loss", "exact_accuracy", "q_halt_accuracy", "steps", "lr"}


def test_default_output_is_in_the_run_directory(tmp_path, capsys):
    run = fake_run(tmp_path / "r", 1.0)
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no metrics.jsonl"),
        ("", "no metrics logged yet"),
        ('{"split": "train", "step": 1}\n{oops\n{"split": "train", "step": 2}\n', "line 2: not JSON"),
        ('{"split": "train"}\n', "line 1: expected an object"),
    ],
)
def test_bad_run_directories_are_one_line(tmp_path, capsys, content, message):
    good = fake_run(tmp_path / "good", 1.0)
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "metrics.jsonl").write_text(content)
    assert main(["plot", str(good), str(bad), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trm: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "c.png").exists()


def test_a_partial_last_line_of_a_live_run_is_skipped(tmp_path):
    run = fake_run(tmp_path / "live", 1.0)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"split": "train", "step": 21})[:10])
    assert len(read_metrics(run)) == 24
