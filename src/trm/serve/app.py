"""The web server of `trm serve`: a FastAPI app with one page, a JSON API and a streamed one.

    GET  /              the page: type or paste a Sudoku, draw a maze, load an ARC task; watch it refine
    GET  /health        the model, the task, the engine options and the batcher's counters
    GET  /example       a freshly generated puzzle of the served task (Sudoku, maze)
    POST /solve         {"task": "sudoku", "puzzle": "..."} -> the answer, its validity, steps and trace
    POST /solve/stream  the same as NDJSON: one {"type": "step"} line per supervision step, then the answer
    GET  /openapi.json  the schema (and /docs, FastAPI's)

Grids are lists of rows of integers: Sudoku digits (0 blank), maze codes (1 '#', 2 open, 3 S, 4 G, 5 path),
ARC colours. ARC is solved with the blank puzzle identifier: the model sees the test input only, not the
demonstrations (what `trm eval --blank-identifiers` scores), since fine-tuning a new task's embedding as
`trm solve` does takes minutes, not a request's time.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trm.errors import TRMError
from trm.inference import InferenceConfig, checker_for
from trm.inference.engine import Answer
from trm.serve.batching import Batcher, QueueFull, StepCallback
from trm.tasks.arc import parse_grid, parse_task
from trm.tasks.base import Task

DEFAULT_MAX_BODY = 512 * 1024  # bytes: a large ARC task is ~100 KB of JSON
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON, or a task this server's model does not solve"},
    413: {"description": "request body over the size limit"},
    422: {"description": "a puzzle that does not parse (its message says why), or a field of the wrong type"},
    503: {"description": "too many puzzles outstanding, or shutting down: retry later"},
}


class SolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["sudoku", "maze", "arc"] = Field(description="the puzzle family (the served model's)")
    puzzle: str | list[Any] | dict[str, Any] = Field(
        description="Sudoku: the cells as text, '.' or '0' for a blank (layout characters '|-+' and spaces are "
        "ignored); maze: N lines of N characters '#' wall, ' ' or '.' open, 'S', 'G' (or one line of N*N); ARC: "
        'a task object {"train": [...], "test": [{"input": grid}, ...]} or one input grid',
        examples=["1..4..2..1..2..3"],
    )
    test_index: int = Field(0, ge=0, description="ARC: which test input of the task to solve")


class Step(BaseModel):
    step: int
    grid: list[list[int]]
    answer: str = Field(description="the grid as one line, as `trm solve` prints it")
    halt_probability: float = Field(description="sigmoid(q_halt) after this step")
    valid: bool | None = Field(description="the task's checker accepts it (None for ARC: no checker)")


class SolveResponse(BaseModel):
    task: str
    puzzle: str = Field(description="the parsed puzzle as one line")
    grid: list[list[int]]
    answer: str
    valid: bool | None = Field(description="a valid solution by the task's checker (None for ARC)")
    steps: int = Field(description="supervision steps of the chosen trajectory")
    compute: int = Field(description="supervision steps over all trajectories")
    confidence: float = Field(description="halting probability at the last step")
    latency_ms: float = Field(description="from entering the engine's pool to the answer")
    trace: list[Step] = Field(description="the chosen trajectory's answer after every step; len = steps")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    task: str
    size: int | None = Field(description="Sudoku / maze side; None for ARC (grids up to 30x30)")
    checkpoint: str
    arch: str
    parameters: int
    batching: bool
    max_batch: int = Field(description="rows in the engine's pool")
    policy: str
    max_steps: int
    samples: int
    outstanding: int = Field(description="puzzles submitted and not answered yet")
    answered: int
    forward_passes: int
    rows: int = Field(description="puzzle rows over all forward passes (rows / forward_passes = mean batch)")
    largest_batch: int


class Example(BaseModel):
    task: str
    puzzle: str


def _rows(grid: np.ndarray) -> list[list[int]]:
    """A decoded grid as rows; a flat Sudoku grid is square."""
    a = np.asarray(grid, dtype=np.int64)
    return (a.reshape(math.isqrt(a.size), -1) if a.ndim == 1 else a).tolist()


def _valid(task: Task, grid: np.ndarray, puzzle: np.ndarray) -> bool | None:
    return bool(task.is_solution(grid, puzzle)) if task.checkable else None


def _step(task: Task, puzzle: np.ndarray, step: int, tokens: np.ndarray, q: float) -> Step:
    grid = task.decode(tokens)
    return Step(step=step, grid=_rows(grid), answer=task.format(grid), halt_probability=q,
                valid=_valid(task, grid, puzzle))  # fmt: skip


def _response(task: Task, puzzle: np.ndarray, ans: Answer) -> SolveResponse:
    grid, t = task.decode(ans.preds), ans.chosen
    valid = ans.valid if ans.valid is not None else _valid(task, grid, puzzle)
    return SolveResponse(
        task=task.name,
        puzzle=task.format(puzzle),
        grid=_rows(grid),
        answer=task.format(grid),
        valid=valid,
        steps=ans.steps,
        compute=ans.compute,
        confidence=ans.confidence,
        latency_ms=1000 * ans.latency_s,
        trace=[_step(task, puzzle, k, p, q) for k, (p, q) in enumerate(zip(t.trace, t.q_trace, strict=True), 1)],
    )


def parse_puzzle(task: Task, req: SolveRequest) -> np.ndarray:
    """The request's puzzle as the task's grid; anything wrong is an HTTPException with one clear line."""
    if req.task != task.name:
        raise HTTPException(400, f"this server's model solves {task.name}, not {req.task}")
    try:
        if task.name != "arc":
            if not isinstance(req.puzzle, str):
                raise HTTPException(422, f"a {task.name} puzzle is a string of cells")
            return task.parse(req.puzzle)
        obj = req.puzzle
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except (json.JSONDecodeError, RecursionError) as err:
                raise HTTPException(422, f"an ARC puzzle is a task object or a grid, in JSON ({err})") from None
        if isinstance(obj, list):
            return parse_grid(obj, "puzzle")
        arc_task = parse_task(obj, "puzzle")
        if req.test_index >= len(arc_task.test):
            raise HTTPException(422, f"test_index {req.test_index}: the task has {len(arc_task.test)} test inputs")
        return arc_task.test[req.test_index][0]
    except TRMError as err:
        raise HTTPException(422, str(err)) from None


def _example(task: Task) -> str:
    rng = np.random.default_rng()
    if task.name == "sudoku":
        from trm.tasks.sudoku import generate

        return task.format(generate(1, task.size, rng)[0][0])
    if task.name == "maze":
        from trm.tasks.maze import OPEN_ALIAS, format_maze, generate

        rows = format_maze(generate(1, task.size, rng, min_path=task.size)[0][0], open_char=OPEN_ALIAS)
        return "\n".join(rows[i : i + task.size] for i in range(0, len(rows), task.size))
    raise HTTPException(404, "no generator for ARC tasks: load a task JSON file")


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes (declared or streamed) gets 413 before any parsing."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            return await JSONResponse({"detail": "bad Content-Length header"}, 400)(scope, receive, send)
        too_big = JSONResponse({"detail": f"request body over the {self.limit}-byte limit"}, 413)
        if int(declared) > self.limit:
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """Malformed JSON is 400; a body of the wrong shape 422, with each field's problem in one line."""
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "not JSON")
        return JSONResponse({"detail": f"malformed JSON: {reason}"}, 400)
    lines = [f"{'.'.join(_field(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors]
    return JSONResponse({"detail": "; ".join(lines)}, 422)


def _field(part: object) -> str:
    """A field name as the client sent it, escaped if it holds control characters (the message stays one line)."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def create_app(
    model: nn.Module,
    task: Task,
    config: InferenceConfig | None = None,
    *,
    checkpoint: str = "",
    max_body: int = DEFAULT_MAX_BODY,
    max_queue: int = 1024,
    batch_wait: float = 0.002,
) -> FastAPI:
    """The app serving `model` on `task`; `config.batch_size` is the largest batch (1: one puzzle at a time).
    Its Batcher (app.state.batcher) starts now and stops when the app shuts down."""
    config = config or InferenceConfig()
    batcher = Batcher(model.eval(), config, checker_for(task), max_queue=max_queue, wait=batch_wait)
    page = resources.files("trm.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="trm serve",
        summary=f"Tiny Recursive Model on {task.name}: answers refined step by step",
        lifespan=lifespan,
        exception_handlers={RequestValidationError: _validation_error},
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=max_body)

    def submit(puzzle: np.ndarray, on_step: StepCallback | None = None) -> Future:
        try:
            return batcher.submit(task.encode(puzzle), 0, on_step)
        except QueueFull as err:
            raise HTTPException(503, str(err)) from None

    async def answer(future: Future) -> Answer:
        try:
            return await asyncio.wrap_future(future)
        except QueueFull as err:
            raise HTTPException(503, str(err)) from None
        except TRMError as err:
            raise HTTPException(422, str(err)) from None
        except Exception as err:  # the engine failed this batch; the server goes on
            raise HTTPException(500, f"inference failed: {type(err).__name__}: {err}") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        s, cfg = batcher.stats, batcher.engine.cfg
        return Health(
            task=task.name, size=getattr(task, "size", None), checkpoint=checkpoint, arch=model.config.arch,
            parameters=model.num_parameters(), batching=cfg.batch_size > 1, max_batch=cfg.batch_size,
            policy=cfg.policy, max_steps=batcher.engine.max_steps, samples=cfg.samples,
            outstanding=batcher.outstanding, answered=s.answered, forward_passes=s.forward_passes, rows=s.rows,
            largest_batch=s.largest_batch,
        )  # fmt: skip

    @app.get("/example", response_model=Example, responses={404: {"description": "ARC: no generator"}})
    def example() -> Example:
        return Example(task=task.name, puzzle=_example(task))

    @app.post("/solve", response_model=SolveResponse, responses=ERRORS)
    async def solve(req: SolveRequest) -> SolveResponse:
        """Solve one puzzle; the answer comes when the engine's batch is done with it."""
        puzzle = parse_puzzle(task, req)
        return _response(task, puzzle, await answer(submit(puzzle)))

    @app.post(
        "/solve/stream",
        responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}, "description": "NDJSON lines"}},
    )
    async def solve_stream(req: SolveRequest) -> StreamingResponse:
        """Solve one puzzle, streamed as NDJSON: a {"type": "step", ...Step} line after every supervision step
        (the clean trajectory), then {"type": "answer", ...SolveResponse} (or {"type": "error", "detail"})."""
        puzzle = parse_puzzle(task, req)
        loop, steps = asyncio.get_running_loop(), asyncio.Queue()

        def on_step(step: int, tokens: np.ndarray, q: float) -> None:  # on the engine's thread
            loop.call_soon_threadsafe(steps.put_nowait, (step, tokens, q))

        future = submit(puzzle, on_step)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(steps.put_nowait, None))

        async def lines() -> AsyncIterator[str]:
            while (item := await steps.get()) is not None:
                yield json.dumps({"type": "step", **_step(task, puzzle, *item).model_dump()}) + "\n"
            try:
                result = {"type": "answer", **_response(task, puzzle, await answer(future)).model_dump()}
            except HTTPException as err:
                result = {"type": "error", "detail": err.detail}
            yield json.dumps(result) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app
