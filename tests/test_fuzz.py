"""Property-based tests and a fuzzer (hypothesis) for every parser and entry point: Sudoku and maze puzzle
strings and files, the Sudoku-Extreme and Maze-Hard CSVs, ARC task JSON, key=value config overrides,
halting-policy strings, and random argv lists through `trm.cli.main` with tiny checkpoints and data sets.

The properties: bad input fails with a trm error (TRMError, or argparse's usage exit 2) and never with
another exception; a command's failure is one `trm: error:` line and no traceback; nothing hangs (an alarm
per input); a command writes only under the output paths its argv names (the trees of its inputs, its
working directory, HOME, the temp and Hub-cache directories are compared before and after).

Runs derandomized (the same kind of inputs on every run, so CI is not flaky): `EXAMPLES` inputs per test,
1,521 tried in all on the development machine (printed at the end of the run: 800 strings and JSON objects,
245 files, 200 override lists, 126 argv lists, 150 HTTP bodies), about 40 s on two shared cores.
`HYPOTHESIS_PROFILE=fuzz` fuzzes 50 times longer with fresh random inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trm.cli import build_parser, main
from trm.config import ModelConfig, TrainConfig, build_train_config
from trm.errors import TRMError
from trm.inference import parse_policy
from trm.models import TRM
from trm.tasks import arc_format, maze, sudoku

EXAMPLES = {"parsers": 200, "files": 120, "config": 200, "cli": 120, "http": 150}
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("fuzz", deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = 50 if PROFILE == "fuzz" else 1  # the fuzz profile: 50 times the inputs
TRIED: Counter[str] = Counter()
HANG_SECONDS = 30  # far above any single input here (the slowest, a 1-step training run, takes ~2 s)


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in trm can swallow it."""


@contextlib.contextmanager
def alarm(seconds: float = HANG_SECONDS):
    def ring(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def _report_count(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    tried = [k for k in TRIED if not k.startswith("cli ")]
    counts = ", ".join(f"{k} {TRIED[k]}" for k in sorted(tried))
    outcomes = ", ".join(f"{k[4:]} {v}" for k, v in sorted(TRIED.items()) if k.startswith("cli "))
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\ntest_fuzz: {sum(TRIED[k] for k in tried)} inputs tried ({counts}); CLI outcomes: {outcomes}")


def only_trm_errors(fn, *args, **kwargs):
    """fn's result, or None when it refused the input with a trm error (anything else propagates)."""
    try:
        with alarm():
            return fn(*args, **kwargs)
    except TRMError:
        return None


# -- puzzle strings ------------------------------------------------------------------------------------------
def _mutated(base: st.SearchStrategy[str], alphabet: str) -> st.SearchStrategy[str]:
    """A valid text with a few characters replaced, inserted or deleted: inputs near the accepted ones."""

    @st.composite
    def build(draw):
        text = list(draw(base))
        for _ in range(draw(st.integers(0, 3))):
            op, i = draw(st.sampled_from("rid")), draw(st.integers(0, max(0, len(text))))
            c = draw(st.sampled_from(alphabet))
            if op == "r" and i < len(text):
                text[i] = c
            elif op == "i":
                text.insert(i, c)
            elif text and i < len(text):
                del text[i]
        return "".join(text)

    return build()


SUDOKUS = [
    ".13.....3..4....",
    "....45..5....13.5......25....63.....",
    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
]
SUDOKU_CHARS = ".0_123456789 \t\n\r|-+*()#xé"
sudoku_text = st.one_of(
    st.text(max_size=100),
    st.text(alphabet=SUDOKU_CHARS, max_size=90),
    _mutated(st.sampled_from(SUDOKUS), SUDOKU_CHARS),
    st.sampled_from(SUDOKUS).map(lambda p: sudoku.render(sudoku.parse_puzzle(p))),
)


@settings(max_examples=SCALE * EXAMPLES["parsers"])
@given(text=sudoku_text, size=st.sampled_from([None, 4, 6, 9, 5, 0]))
def test_sudoku_strings_parse_or_fail_cleanly(text, size):
    TRIED["sudoku strings"] += 1
    cells = only_trm_errors(sudoku.parse_puzzle, text, size)
    if cells is not None:  # what parses, round-trips through both output formats
        assert np.array_equal(sudoku.parse_puzzle(sudoku.format_puzzle(cells)), cells)
        assert np.array_equal(sudoku.parse_puzzle(sudoku.render(cells)), cells)
    for n in (4, 9):
        assert all(isinstance(p, str) and p for p in sudoku.SudokuTask(n).split(text))


MAZES = ["#####\n#S  #\n# # #\n#  G#\n#####", "   #  ### S     # #  #G  ", "S.G" + "#" * 6]
MAZE_CHARS = "# SGo.\n\r(x"
maze_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=MAZE_CHARS, max_size=50),
    _mutated(st.sampled_from(MAZES), MAZE_CHARS),
)


@settings(max_examples=SCALE * EXAMPLES["parsers"])
@given(text=maze_text, size=st.sampled_from([None, 3, 5, 1, 0]), check=st.booleans())
def test_maze_strings_parse_or_fail_cleanly(text, size, check):
    TRIED["maze strings"] += 1
    grid = only_trm_errors(maze.parse_maze, text, size, check)
    if grid is not None:
        assert np.array_equal(maze.parse_maze(maze.format_maze(grid), check=False), grid)
        assert np.array_equal(maze.parse_maze(maze.format_maze(grid, "."), check=False), grid)
    for n in (3, 5):
        task = maze.MazeTask(n)
        for block in task.split(text):
            only_trm_errors(task.parse, block)


@settings(max_examples=SCALE * EXAMPLES["parsers"])
@given(spec=st.one_of(st.text(max_size=20), st.text(alphabet="qstablevidmngoufcx:|+0123456789.-e ", max_size=24)))
def test_halting_policies_parse_or_fail_cleanly(spec):
    TRIED["halting policies"] += 1
    only_trm_errors(parse_policy, spec)


# -- ARC JSON ------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 12) | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["train", "test", "input", "output", "t"]) | st.text(max_size=3), inner, max_size=4
        )
    ),
    max_leaves=25,
)
cells = st.integers(-1, 10) | st.sampled_from([True, 1.0, "1", None, 2**70])
grids = st.integers(0, 4).flatmap(lambda w: st.lists(st.lists(cells, min_size=w, max_size=w + 1), max_size=4))
pairs = st.lists(st.fixed_dictionaries({"input": grids}, optional={"output": grids, "x": json_values}), max_size=3)
arc_tasks = st.fixed_dictionaries({}, optional={"train": pairs | json_values, "test": pairs | json_values})


@settings(max_examples=SCALE * EXAMPLES["parsers"])
@given(obj=st.one_of(arc_tasks, json_values, st.dictionaries(st.text(max_size=4), arc_tasks, max_size=3)))
def test_arc_json_parses_or_fails_cleanly(obj):
    TRIED["ARC JSON objects"] += 1
    task = only_trm_errors(arc_format.parse_task, obj, "t")
    if task is not None:
        for x, y in task.train + task.test:
            for g in (x,) if y is None else (x, y):
                assert g.dtype == np.uint8 and g.ndim == 2 and g.max() <= 9 and max(g.shape) <= 30


# -- files ---------------------------------------------------------------------------------------------------
def _csv_rows(puzzles: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    header = st.sampled_from(["source,question,answer,rating", "source,question,answer", "a,b,c,d", ""])
    field = puzzles | st.sampled_from(["0", "12", "x", '"', '"a,b"', ""])
    rows = st.lists(st.lists(field, min_size=0, max_size=5).map(",".join), max_size=4)
    text = st.tuples(header, rows).map(lambda hr: "\n".join([hr[0], *hr[1]]).encode())
    return text | st.binary(max_size=80) | text.map(lambda b: b.replace(b",", b"\x00", 1) + b"\xff")


def _sudoku_answers() -> list[str]:
    return [sudoku.format_puzzle(sudoku.solution_of(sudoku.parse_puzzle(p))) for p in SUDOKUS[:2]]


def _maze_answers() -> list[str]:
    return [maze.format_maze(maze.label(maze.parse_maze(m))) for m in MAZES]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("files")


@settings(max_examples=SCALE * EXAMPLES["files"])
@given(data=st.data())
def test_sudoku_and_maze_files_read_or_fail_cleanly(data, scratch):
    TRIED["puzzle files and CSVs"] += 1
    sudoku_cells = st.sampled_from(SUDOKUS + _sudoku_answers()) | sudoku_text
    maze_cells = st.sampled_from([maze.format_maze(maze.parse_maze(m)) for m in MAZES] + _maze_answers()) | maze_text
    path = scratch / "input.csv"
    path.write_bytes(data.draw(_csv_rows(sudoku_cells)))
    rows = only_trm_errors(sudoku.read_csv, path, subsample=data.draw(st.sampled_from([None, 0, 1, 5])))
    assert rows is None or all(sudoku.is_valid_solution(s, p) for p, s, _ in rows)
    only_trm_errors(sudoku.read_puzzle_list, path)
    path.write_bytes(data.draw(_csv_rows(maze_cells)))
    rows = only_trm_errors(maze.read_csv, path)
    assert rows is None or all(maze.is_valid_shortest_path(a, q) for q, a, _ in rows)


@settings(max_examples=SCALE * EXAMPLES["files"])
@given(content=st.one_of(arc_tasks, json_values).map(json.dumps).map(str.encode) | st.binary(max_size=60))
def test_arc_files_load_or_fail_cleanly(content, scratch):
    TRIED["ARC files"] += 1
    for name in ("task.json", "x_training_challenges.json"):
        (scratch / name).write_bytes(content)
        only_trm_errors(arc_format.load_tasks, scratch / name)


# -- config overrides ----------------------------------------------------------------------------------------
FIELDS = sorted(TrainConfig.model_fields) + sorted(ModelConfig.model_fields)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(sorted(ModelConfig.model_fields)).map("model.{}".format),
    st.sampled_from(FIELDS).map("{}.x".format),
    st.text(max_size=8),
)
values = st.one_of(
    st.sampled_from(
        ["1", "0", "-1", "1e-4", "true", "none", "[1, 2]", "{a: 1}", "[{until: 0.3, T: 1}]", "[{until: 2}]", "nan",
         "inf", "'x'", ":", "[", "10m", "1h30m", "90s", "-5m", "mlp", "rope", "float16", "1e400", "2.5", "", "{"]
    ),
    st.text(max_size=10),
)  # fmt: skip
overrides = st.lists(st.one_of(st.tuples(keys, values).map("=".join), st.text(max_size=8)), max_size=5)


@settings(max_examples=SCALE * EXAMPLES["config"])
@given(preset=st.sampled_from([None, "sudoku4-tiny", "hrm-sudoku", "nope"]), items=overrides)
def test_config_overrides_build_or_fail_cleanly(preset, items):
    TRIED["config overrides"] += 1
    cfg = only_trm_errors(build_train_config, preset, items)
    assert cfg is None or isinstance(cfg, TrainConfig)


# -- the command line ----------------------------------------------------------------------------------------
OUTPUT_FLAGS = {"--out", "--run-dir", "--save-outputs", "--submission", "--show-dir", "--json", "--md", "--plot"}
# demo, bench and compare train or time by design (their inputs are checked in their own tests); serve runs until
# stopped, and its HTTP bodies are the server's tests' to fuzz
SKIPPED_COMMANDS = {"demo", "bench", "compare", "serve"}


def _tiny_checkpoint(path: Path, seq_len: int, vocab: int, task: dict) -> Path:
    config = ModelConfig(
        vocab_size=vocab, seq_len=seq_len, hidden_size=16, num_heads=2, num_layers=1, T=1, n=1, N_sup=2,
        mixer="mlp", pos_encoding="none", puzzle_emb_ndim=0,
    )  # fmt: skip
    torch.manual_seed(0)
    TRM(config).save_pretrained(path)
    (path / "task.json").write_text(json.dumps(task))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs for the fuzzer (tiny Sudoku and maze checkpoints and data sets, puzzle files, bad files) and the
    directories a command may touch, all under one root; HOME, the temp dir and the Hub cache point inside it,
    and the Hub's network is down (every request fails to connect)."""
    root = tmp_path_factory.mktemp("fuzz").resolve()
    inputs, home, tmp = root / "inputs", root / "home", root / "tmp"
    for d in (inputs, home, tmp):
        d.mkdir()
    rng = np.random.default_rng(0)
    s4 = [(p, s) for p, s, _ in sudoku.generate(6, 4, rng)]
    sudoku.build_dataset(inputs / "s4", s4[:4], s4[4:], progress=False)
    mazes = maze.generate(6, 5, rng)
    maze.build_dataset(inputs / "m5", mazes[:4], mazes[4:], progress=False)
    ckpt = _tiny_checkpoint(inputs / "ckpt", 16, 11, {"task": "sudoku", "size": 4})
    maze_ckpt = _tiny_checkpoint(inputs / "maze-ckpt", 25, 6, {"task": "maze", "size": 5})
    _tiny_checkpoint(inputs / "bad-task" / "c", 16, 11, {"task": "chess"})
    (inputs / "bad-weights").mkdir()
    (inputs / "bad-weights" / "config.json").write_text((ckpt / "config.json").read_text())
    (inputs / "bad-weights" / "model.safetensors").write_bytes(b"\x00" * 12)
    (inputs / "puzzles.txt").write_text("\n".join(sudoku.format_puzzle(p) for p, _ in s4) + "\n# comment\n")
    (inputs / "garbage.txt").write_bytes(b"\xff\xfe not a puzzle \x00\n")
    (inputs / "mazes.txt").write_text(maze.format_maze(mazes[0][0], ".") + "\n")
    (inputs / "task.json").write_text(
        json.dumps({"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3, 4]]}]})
    )
    (inputs / "s.csv").write_text(
        "source,question,answer,rating\n"
        + "".join(f"x,{sudoku.format_puzzle(p)},{sudoku.format_puzzle(s)},0\n" for p, s in s4)
    )
    (inputs / "broken.csv").write_text("source,question,answer,rating\nx,1234,12,a\n")
    (inputs / "config.yaml").write_text("arch: [\n")
    paths = [str(p) for p in sorted(inputs.iterdir())] + [str(inputs / "s4" / "test"), str(maze_ckpt)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MPLCONFIGDIR", str(home / ".matplotlib"))
        mp.delenv("TRM_DEBUG", raising=False)
        mp.setattr(tempfile, "tempdir", str(tmp))
        _network_down(mp, home / "hub-cache")
        yield {"root": root, "inputs": inputs, "home": home, "tmp": tmp, "paths": paths, "data": inputs / "s4",
               "positionals": _positionals(inputs)}  # fmt: skip


def _positionals(inputs: Path) -> dict[str, list[str]]:
    """Likely values of each command's positional arguments, by their argparse dest (the valid ones first)."""
    i = {p.name: str(p) for p in inputs.iterdir()}
    return {
        "checkpoint": [i["ckpt"]] * 4 + [i["maze-ckpt"], str(inputs / "bad-task" / "c"), i["bad-weights"], "org/name"],
        "data": [i["s4"]] * 3 + [i["m5"], i["ckpt"], "/nonexistent/d"],
        "puzzle": [*SUDOKUS, "-", i["puzzles.txt"], i["mazes.txt"], i["task.json"], i["garbage.txt"], MAZES[1]],
        "target": [i["ckpt"], "sudoku4-tiny", "hrm-sudoku", "nope", "org/name", i["bad-weights"]],
        "official": [str(inputs / "ckpt" / "model.safetensors"), i["garbage.txt"], i["config.yaml"]],
        "repo_id": ["org/name", "no-namespace", "a/b/c"],
        "runs": [i["ckpt"], i["s4"], "/nonexistent/r"],
    }


def _network_down(mp: pytest.MonkeyPatch, cache: Path) -> None:
    hf = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    mp.setattr(constants, "HF_HUB_CACHE", str(cache))
    if hasattr(constants, "AGENT_HARNESSES_PATH"):
        mp.setattr(constants, "AGENT_HARNESSES_PATH", str(cache / "agents.json"))
    if hasattr(_http, "set_client_factory"):
        httpx = sys.modules[type(_http.get_session()).__module__.split(".")[0]]

        def down(request):
            raise httpx.ConnectError("network is down (test)", request=request)

        mp.setattr(_http, "_GLOBAL_CLIENT_FACTORY", _http._GLOBAL_CLIENT_FACTORY)
        _http.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(down)))
        mp.setattr(_http, "_GLOBAL_CLIENT", None)
    else:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
    del hf


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command path (`eval`, `data sudoku`, ...) and its parser, read from the real CLI."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and prefix:
            found[" ".join(prefix)] = parser
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return {k: v for k, v in found.items() if k.split()[0] not in SKIPPED_COMMANDS}


COMMANDS = _commands()
INTS = ["0", "-1", "1", "2", "3", "8"]
FLOATS = ["0", "-0.5", "0.5", "1", "nan", "inf", "x"]
WORDS = ["q", "fixed", "adaptive", "q:0.9|stable:2", "stable:0", "valid", "vote", "both", "cpu", "meta", "cuda",
         "train", "test", "x", "", "-", "--", "1.5", "sudoku4-tiny", "org/name", "org/name@v1", "--help"]  # fmt: skip
OUTPUTS = ["out", "out.jsonl", "out/x.json", "o.npz", "o.png", "o.gif", "sub.json", "pngs", "b.md", "/nonexistent/o"]


def _value(action: argparse.Action, world: dict, flag: str | None) -> st.SearchStrategy[str]:
    """A value for one argument, of its type most of the time, anything some of the time."""
    anything = st.sampled_from(WORDS + SUDOKUS[:1] + world["paths"]) | st.text(max_size=6)
    if action.dest in world["positionals"] and not action.option_strings:
        typed = st.sampled_from(world["positionals"][action.dest])
    elif action.choices is not None:
        typed = st.sampled_from([str(c) for c in action.choices])
    elif flag in OUTPUT_FLAGS:
        typed = st.sampled_from(OUTPUTS)
    elif action.type is Path:
        typed = st.sampled_from(world["paths"] + ["/nonexistent/x", "org/name"])
    elif action.type is float:
        typed = st.sampled_from(FLOATS)
    elif action.type is not None:  # int and the CLI's count types
        typed = st.sampled_from(INTS)
    else:
        typed = st.sampled_from(WORDS + SUDOKUS + world["paths"])
    return st.integers(0, 7).flatmap(lambda k: anything if k == 0 else typed)  # one_of would weigh them evenly


def _arity(draw, action: argparse.Action) -> int:
    if action.nargs == 0:
        return draw(st.sampled_from([0, 0, 0, 1]))
    if action.nargs in ("?", "*"):
        return draw(st.integers(0, 2))
    if action.nargs == "+":
        return draw(st.integers(1, 2))
    return action.nargs if isinstance(action.nargs, int) else draw(st.sampled_from([1] * 8 + [0, 2]))


@st.composite
def argvs(draw, world: dict) -> list[str]:
    """A command, values for its positionals, its required options most of the time, and a few more options,
    each with values of its type most of the time."""
    command = draw(st.sampled_from(sorted(COMMANDS) + ["eval", "solve", "solve", "eval", "data sudoku"]))
    parser = COMMANDS[command]
    argv = command.split()
    if command == "train":  # a bounded run: one step, nothing compiled, no remote loggers
        preset = draw(st.sampled_from(["sudoku4-tiny", "sudoku4-tiny", "nope"]))
        argv += [preset, f"data={world['data']}", *draw(overrides), "max_steps=1", "compile=false",
                 "wandb=false", "tensorboard=false", "eval_max_examples=4", "device=cpu"]  # fmt: skip
    else:
        for action in (a for a in parser._actions if not a.option_strings):
            argv += [draw(_value(action, world, None)) for _ in range(_arity(draw, action))]
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    groups = [g._group_actions for g in parser._mutually_exclusive_groups if g.required]
    chosen = [a for a in options if a.required and draw(st.integers(0, 9))]  # usually present when required
    chosen += [draw(st.sampled_from(g)) for g in groups if draw(st.integers(0, 9))]
    chosen += draw(st.lists(st.sampled_from(options), max_size=3)) if options else []
    for action in chosen:
        flag = draw(st.sampled_from(action.option_strings))
        argv += [flag, *(draw(_value(action, world, flag)) for _ in range(_arity(draw, action)))]
    return argv


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            out[dirpath] = (-1, 0)
            for name in filenames:
                p = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st_ = os.lstat(p)
                    out[p] = (st_.st_size, st_.st_mtime_ns)
    return out


def _allowed(argv: list[str], cwd: Path, world: dict) -> list[Path]:
    """Where a command may write: the paths after its output flags, `runs/` for a training run without
    --run-dir, and the caches of the libraries: the Hub's, matplotlib's, and torch's (any torch optimizer
    step makes TMP/torchinductor_USER)."""
    allowed = [world["home"] / "hub-cache", world["home"] / ".matplotlib", *world["tmp"].glob("torchinductor_*")]
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in OUTPUT_FLAGS:
            allowed.append((cwd / value).resolve())
    if argv[0] == "train":
        allowed.append(cwd / "runs")
    if argv[0] == "plot" and "--out" not in argv:  # documented default: RUN_DIR/curves.png, or ./curves.png
        allowed += [cwd / "curves.png", *((cwd / t / "curves.png").resolve() for t in argv[1:])]
    return allowed


@settings(
    max_examples=SCALE * EXAMPLES["cli"],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_cli_fails_with_one_line_and_writes_only_its_outputs(data, world, capsys, monkeypatch):
    """Random argv lists through `trm.cli.main`, each in a fresh working directory, stdin a random text."""
    TRIED["CLI argv lists"] += 1
    argv = data.draw(argvs(world), label="argv")
    cwd = Path(tempfile.mkdtemp(dir=world["tmp"], prefix="cwd-")).resolve()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "stdin", io.StringIO(data.draw(sudoku_text, label="stdin")))
    watched = (world["inputs"], world["home"], world["tmp"])
    before = _tree(*watched)
    capsys.readouterr()
    try:
        with alarm():
            code = main(argv)
    except SystemExit as exit_:  # argparse: usage errors (2), --help and --version (0)
        TRIED[f"cli SystemExit({exit_.code})"] += 1
        assert exit_.code in (0, 2), argv
        assert exit_.code == 0 or "usage:" in capsys.readouterr().err
    else:
        err = capsys.readouterr().err
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        TRIED[f"cli exit {code}"] += 1
        assert code in (0, 2), (argv, code, err)
        errors = [line for line in err.splitlines() if line.startswith("trm: error:")]
        assert len(errors) == (code == 2), (argv, err)
    after = _tree(*watched)
    allowed = _allowed(argv, cwd, world)
    changed = [Path(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    stray = [p for p in changed if not any(p.is_relative_to(a) or a.is_relative_to(p) for a in allowed)]
    assert not stray, (argv, sorted(stray))


# -- HTTP bodies through the server ------------------------------------------------------------------------------
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PUZZLE_TEXT = st.text(alphabet="0123456789.# SGo\n-x", max_size=40)
SOLVE_BODY = st.fixed_dictionaries(
    {"task": st.sampled_from(["sudoku", "maze", "arc"]) | st.text(max_size=8), "puzzle": PUZZLE_TEXT | JSONISH},
    optional={"steps": JSONISH, "halt": JSONISH, "extra": JSONISH},
)
BODIES = st.one_of(
    st.binary(max_size=120),
    JSONISH.map(json.dumps),
    SOLVE_BODY.map(json.dumps),
    SOLVE_BODY.map(lambda b: json.dumps(b)[: len(json.dumps(b)) // 2]),  # cut short
)


@pytest.fixture(scope="module")
def serve_client():
    from fastapi.testclient import TestClient

    from trm.models import build_model
    from trm.serve.app import create_app
    from trm.tasks.sudoku import SudokuTask

    torch.manual_seed(0)
    cfg = dict(hidden_size=16, num_heads=2, num_layers=1, T=1, n=1, N_sup=2, puzzle_emb_ndim=0, dtype="float32")
    model = build_model(ModelConfig(vocab_size=11, seq_len=16, **cfg)).eval()
    with TestClient(create_app(model, SudokuTask(4), checkpoint="fuzz")) as client:
        yield client


@settings(max_examples=SCALE * EXAMPLES["http"])
@given(body=BODIES, path=st.sampled_from(["/solve", "/solve/stream"]))
def test_http_bodies_get_an_answer_or_a_clear_4xx_and_the_server_lives(serve_client, body, path):
    """Random bytes, random JSON and damaged solve requests: every answer is 200 or a 4xx with a one-line
    `detail`, never a 5xx, and the server answers /health afterwards."""
    TRIED["HTTP bodies"] += 1
    data = body if isinstance(body, bytes) else body.encode()
    with alarm():
        r = serve_client.post(path, content=data, headers={"content-type": "application/json"})
    assert r.status_code == 200 or 400 <= r.status_code < 500, (body, r.status_code, r.text[:200])
    if r.status_code != 200:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail, (body, detail)
    assert serve_client.get("/health").status_code == 200
