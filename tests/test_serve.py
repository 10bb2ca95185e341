"""`trm serve`'s API on tiny untrained models: the answers equal `trm solve`'s, traces have one entry per step,
bad requests get a 4xx with a clear line and leave the server serving, and concurrent requests share the
engine's forward passes (counted on the model) instead of running one by one."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from trm.cli import main
from trm.config import ModelConfig
from trm.errors import CheckpointError
from trm.inference import InferenceConfig, solve_puzzles
from trm.inference.engine import Engine, Request
from trm.models import build_model
from trm.serve.app import create_app
from trm.serve.batching import Batcher, QueueFull
from trm.serve.command import load_task
from trm.tasks import arc
from trm.tasks.maze import MazeTask
from trm.tasks.sudoku import SudokuTask, generate

PUZZLE4 = "1..4..2..1..2..3"
MAZE5 = "#####\n#S..#\n#.#.#\n#..G#\n#####"
ARC_TASK = {
    "train": [{"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]}],
    "test": [
        {"input": [[2, 0, 0], [0, 0, 0]]},
        {"input": [[0, 3], [0, 0], [4, 4]], "output": [[3, 0], [0, 0], [4, 4]]},
    ],
}


def tiny(seq_len: int, vocab: int, n_sup: int = 4, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(hidden_size=32, num_heads=2, num_layers=1, T=2, n=1, N_sup=n_sup, puzzle_emb_ndim=0, dtype="float32")
    cfg.update(kw)
    return build_model(ModelConfig(vocab_size=vocab, seq_len=seq_len, **cfg)).eval()


@pytest.fixture(scope="module")
def sudoku_model():
    return tiny(16, 11)


@pytest.fixture
def client(sudoku_model):
    with TestClient(create_app(sudoku_model, SudokuTask(4), checkpoint="tiny")) as c:
        yield c


def solve(client: TestClient, puzzle, task: str = "sudoku", **extra):
    return client.post("/solve", json={"task": task, "puzzle": puzzle, **extra})


def test_health_describes_the_model_task_and_batching(client, sudoku_model):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["task"] == "sudoku" and body["size"] == 4
    assert body["parameters"] == sudoku_model.num_parameters() and body["checkpoint"] == "tiny"
    assert body["batching"] is True and body["max_batch"] == 256 and body["max_steps"] == 4


def test_sudoku_answer_equals_trm_solve_and_traces_every_step(client, sudoku_model):
    body = solve(client, PUZZLE4).json()
    task = SudokuTask(4)
    (ref,) = solve_puzzles(sudoku_model, task, [PUZZLE4], InferenceConfig(trace=True))
    assert body["answer"] == task.format(ref.answer) and body["puzzle"] == PUZZLE4
    assert np.array_equal(np.array(body["grid"]).reshape(-1), ref.answer)
    assert body["valid"] == ref.valid == task.is_solution(ref.answer, task.parse(PUZZLE4))
    assert body["steps"] == len(body["trace"]) == ref.steps == 4
    assert [s["step"] for s in body["trace"]] == [1, 2, 3, 4]
    assert [s["answer"] for s in body["trace"]] == [task.format(g) for g in ref.trace]
    assert [s["halt_probability"] for s in body["trace"]] == pytest.approx(ref.q_trace)
    assert body["trace"][-1]["grid"] == body["grid"]
    assert body["confidence"] == pytest.approx(ref.confidence)


def test_adaptive_halting_trace_length_is_the_steps(sudoku_model):
    app = create_app(sudoku_model, SudokuTask(4), InferenceConfig(policy="stable:1", max_steps=12))
    with TestClient(app) as c:
        body = solve(c, PUZZLE4).json()
    assert 2 <= body["steps"] == len(body["trace"]) <= 12
    if body["steps"] < 12:  # it halted: the last two answers agree
        assert body["trace"][-1]["grid"] == body["trace"][-2]["grid"]


def test_stream_sends_each_step_then_the_answer(client):
    with client.stream("POST", "/solve/stream", json={"task": "sudoku", "puzzle": PUZZLE4}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    *steps, final = lines
    assert [s["type"] for s in steps] == ["step"] * final["steps"] and final["type"] == "answer"
    assert [{k: v for k, v in s.items() if k != "type"} for s in steps] == final["trace"]
    assert final == {"type": "answer", **solve(client, PUZZLE4).json(), "latency_ms": final["latency_ms"]}


def test_maze_answer_equals_trm_solve():
    model, task = tiny(25, 6), MazeTask(5)
    with TestClient(create_app(model, task)) as c:
        body = solve(c, MAZE5, task="maze").json()
        one_line = solve(c, MAZE5.replace("\n", ""), task="maze").json()
        example = c.get("/example").json()["puzzle"]  # open cells as '.', one row a line
        assert len(example.split("\n")) == 5 and solve(c, example, task="maze").status_code == 200
    (ref,) = solve_puzzles(model, task, [MAZE5], InferenceConfig())
    assert body["answer"] == one_line["answer"] == task.format(ref.answer)
    assert np.array_equal(np.array(body["grid"]), ref.answer) and body["valid"] == ref.valid
    assert body["steps"] == len(body["trace"]) == 4


def test_arc_solves_the_chosen_test_input_with_the_blank_identifier():
    model = tiny(900, 12, n_sup=2)
    with TestClient(create_app(model, arc.Arc())) as c:
        body = solve(c, ARC_TASK, task="arc", test_index=1).json()
        grid_only = solve(c, ARC_TASK["test"][1]["input"], task="arc").json()
        as_text = solve(c, json.dumps(ARC_TASK), task="arc", test_index=1).json()
        assert c.get("/example").status_code == 404
    (ref,) = Engine(model, InferenceConfig()).run([Request(arc.encode_grid(np.array([[0, 3], [0, 0], [4, 4]])), 0)])
    assert body["grid"] == arc.crop(ref.preds).tolist() == grid_only["grid"] == as_text["grid"]
    assert body["valid"] is None and body["steps"] == len(body["trace"]) == 2
    assert body["puzzle"] == "[[0,3],[0,0],[4,4]]"


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"task": "sudoku", "puzzle": "1..4..2..1..x..3"}, 422, "unknown character 'x' at cell 13"),
        ({"task": "sudoku", "puzzle": "1..4..2"}, 422, "puzzle has 7 cells; a 4x4 Sudoku needs 16"),
        ({"task": "sudoku", "puzzle": "11.4..2..1..2..3"}, 422, "contradictory givens: digit 1 twice in row 1"),
        ({"task": "sudoku", "puzzle": "5..4..2..1..2..3"}, 422, "outside 1..4"),
        ({"task": "sudoku", "puzzle": [[1, 2]]}, 422, "a sudoku puzzle is a string of cells"),
        ({"task": "chess", "puzzle": "1"}, 422, "task: Input should be 'sudoku', 'maze' or 'arc'"),
        ({"task": "maze", "puzzle": MAZE5}, 400, "this server's model solves sudoku, not maze"),
        ({"puzzle": PUZZLE4}, 422, "task: Field required"),
        ({"task": "sudoku", "puzzle": PUZZLE4, "steps": 3}, 422, "steps: Extra inputs are not permitted"),
        ([1, 2], 422, "body: Input should be a valid dictionary"),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_the_server_goes_on(client, body, status, message):
    r = client.post("/solve", json=body)
    assert r.status_code == status and message in r.json()["detail"], r.json()
    assert client.post("/solve/stream", json=body).status_code == status  # refused before any streaming
    assert solve(client, PUZZLE4).status_code == 200


def test_malformed_json_is_400(client):
    r = client.post("/solve", content=b'{"task": "sudoku", "puzzle": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")


def test_oversize_bodies_are_413_declared_or_streamed(sudoku_model):
    with TestClient(create_app(sudoku_model, SudokuTask(4), max_body=1000)) as c:
        big = {"task": "sudoku", "puzzle": "." * 2000}
        r = c.post("/solve", json=big)
        assert r.status_code == 413 and "1000-byte limit" in r.json()["detail"]
        chunks = (json.dumps(big)[i : i + 100].encode() for i in range(0, 2100, 100))  # no Content-Length
        assert c.post("/solve", content=chunks, headers={"content-type": "application/json"}).status_code == 413
        assert solve(c, PUZZLE4).status_code == 200


@pytest.mark.parametrize(
    "puzzle, extra, message",
    [
        ({"train": [], "test": [{"input": [[1]]}]}, {}, "non-empty list"),
        ({**ARC_TASK, "test": [{"input": [[1, 12]]}]}, {}, "colour 12 outside 0-9"),
        (ARC_TASK, {"test_index": 2}, "test_index 2: the task has 2 test inputs"),
        ("{not json", {}, "an ARC puzzle is a task object or a grid"),
        ([[1, 2], [3]], {}, "equal length"),
    ],
)
def test_bad_arc_tasks_are_422(puzzle, extra, message):
    with TestClient(create_app(tiny(900, 12, n_sup=1), arc.Arc())) as c:
        r = solve(c, puzzle, task="arc", **extra)
    assert r.status_code == 422 and message in r.json()["detail"], r.json()


def _counting(model: torch.nn.Module) -> list[int]:
    """Rows of every forward pass of `model` from now on."""
    calls: list[int] = []
    forward = model.forward

    def counted(y, z, inputs, ids):
        calls.append(len(inputs))
        return forward(y, z, inputs, ids)

    model.forward = counted
    return calls


def _concurrently(client: TestClient, puzzles: list[str]) -> list[dict]:
    start = threading.Barrier(len(puzzles))

    def one(p: str) -> dict:
        start.wait()
        return solve(client, p).json()

    with ThreadPoolExecutor(len(puzzles)) as pool:
        return list(pool.map(one, puzzles))


def test_concurrent_requests_share_forward_passes():
    """8 clients at once: batched, their 32 puzzle-steps take a few forward passes; unbatched, 32 of one row;
    the answers are the same either way (an answer never depends on its batch)."""
    puzzles = [SudokuTask(4).format(p) for p, _, _ in generate(8, 4, np.random.default_rng(0))]
    results = {}
    for mode, config, wait in (("batched", InferenceConfig(), 0.5), ("one by one", InferenceConfig(batch_size=1), 0)):
        model = tiny(16, 11)
        calls = _counting(model)
        with TestClient(create_app(model, SudokuTask(4), config, batch_wait=wait)) as c:
            results[mode] = [r["answer"] for r in _concurrently(c, puzzles)]
            health = c.get("/health").json()
        assert sum(calls) == health["rows"] == 8 * 4  # fixed policy: 4 steps per puzzle
        assert len(calls) == health["forward_passes"] and max(calls) == health["largest_batch"]
        if mode == "batched":
            assert len(calls) <= 2 * 4 and max(calls) >= 4, calls
        else:
            assert len(calls) == 32 and max(calls) == 1 and health["batching"] is False
    assert results["batched"] == results["one by one"]


def test_a_failing_step_fails_its_requests_not_the_server():
    model = tiny(16, 11)
    forward, broken = model.forward, [True]

    def flaky(*args):
        if broken.pop() if broken else False:
            raise RuntimeError("device lost")
        return forward(*args)

    model.forward = flaky
    with TestClient(create_app(model, SudokuTask(4))) as c:
        r = solve(c, PUZZLE4)
        assert r.status_code == 500 and "device lost" in r.json()["detail"]
        assert solve(c, PUZZLE4).status_code == 200


def test_batcher_refuses_work_over_its_queue_limit(sudoku_model):
    batcher = Batcher(sudoku_model, InferenceConfig(), max_queue=2, wait=0.5)
    try:
        tokens = SudokuTask(4).encode(SudokuTask(4).parse(PUZZLE4))
        first, second = batcher.submit(tokens), batcher.submit(tokens)
        with pytest.raises(QueueFull, match="2 puzzles are waiting"):
            batcher.submit(tokens)
        assert np.array_equal(first.result(10).preds, second.result(10).preds)
        assert batcher.submit(tokens).result(10).steps == 4  # room again once answered
    finally:
        batcher.close()
    with pytest.raises(QueueFull, match="shutting down"):
        batcher.submit(tokens)


def test_page_openapi_and_example(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>trm serve</title>" in page.text and "solve/stream" in page.text
    schema = client.get("/openapi.json").json()
    assert {"/solve", "/solve/stream", "/health", "/example"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["SolveRequest"]["properties"]["task"]["enum"] == ["sudoku", "maze", "arc"]
    example = client.get("/example").json()["puzzle"]
    assert len(example) == 16 and solve(client, example).status_code == 200


def _checkpoint(tmp_path, seq_len: int, vocab: int, task_json: dict | None = None):
    path = tmp_path / "ckpt"
    tiny(seq_len, vocab).save_pretrained(path)
    if task_json is not None:
        (path / "task.json").write_text(json.dumps(task_json))
    return path


def test_task_flag_serves_a_checkpoint_without_task_json(tmp_path, capsys):
    path = _checkpoint(tmp_path, 25, 11)  # seq_len 25 and 11 tokens: neither a known Sudoku nor a maze shape
    model = build_model(ModelConfig.model_validate_json((path / "config.json").read_text()))
    served = load_task(path, model.config, "maze")
    assert isinstance(served, MazeTask) and served.size == 5
    with pytest.raises(CheckpointError, match="name it with --task"):
        load_task(path, model.config, None)
    for argv, message in (
        ([str(path)], "name it with --task"),
        ([str(path), "--task", "arc"], "--task arc needs 12 tokens; the model has 11"),
        ([str(path), "--task", "sudoku"], "Sudoku"),
        ([str(path), "--task", "maze", "--port", "0"], "--port must be in 1..65535"),
        ([str(path), "--task", "maze", "--halt", "bogus"], "bogus"),
    ):
        assert main(["serve", *argv]) == 2
        assert message in capsys.readouterr().err


def test_task_flag_must_agree_with_task_json(tmp_path, capsys):
    path = _checkpoint(tmp_path, 16, 11, {"task": "sudoku", "size": 4})
    assert main(["serve", str(path), "--task", "maze"]) == 2
    assert "says sudoku" in capsys.readouterr().err


def test_health_counts_the_work_done(client):
    before = client.get("/health").json()
    solve(client, PUZZLE4)
    after = client.get("/health").json()
    assert after["answered"] - before["answered"] == 1 and after["outstanding"] == 0
    assert after["forward_passes"] - before["forward_passes"] == after["rows"] - before["rows"] == 4
