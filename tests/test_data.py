"""The official on-disk layout, the loader's checks, and the sampler's semantics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from trm.data import (
    IGNORE_LABEL,
    DataError,
    DatasetMetadata,
    DatasetWriter,
    TrainSampler,
    collate,
    load_split,
    read_identifiers,
    test_batches,
    write_identifiers,
)

OFFICIAL_KEYS = {
    "pad_id",
    "ignore_label_id",
    "blank_identifier_id",
    "vocab_size",
    "seq_len",
    "num_puzzle_identifiers",
    "total_groups",
    "mean_puzzle_examples",
    "total_puzzles",
    "sets",
}
FILES = [f"all__{n}.npy" for n in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")]


def write_random(root, groups, seq_len=6, vocab=8, seed=0, split="train"):
    """groups: list of (n_puzzles, n_examples per puzzle); identifiers 1, 2, ... in order."""
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root, split, seq_len)
    ident = 1
    for n_puzzles, n_examples in groups:
        puzzles = []
        for _ in range(n_puzzles):
            puzzles.append(
                (ident, rng.integers(1, vocab, (n_examples, seq_len)), rng.integers(0, vocab, (n_examples, seq_len)))
            )
            ident += 1
        writer.add_group(puzzles)
    return writer.close(vocab_size=vocab, num_puzzle_identifiers=ident)


def group_of_rows(ds, rows):
    puzzles = np.searchsorted(ds.puzzle_indices, rows, side="right") - 1
    return puzzles, np.searchsorted(ds.group_indices, puzzles, side="right") - 1


def take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


# -- writer / loader -----------------------------------------------------------------------------------------


def test_round_trip_and_metadata(tmp_path):
    meta = write_random(tmp_path, [(2, 3), (1, 1), (3, 2)])
    assert (meta.total_groups, meta.total_puzzles) == (3, 6)
    assert meta.mean_puzzle_examples == pytest.approx((2 * 3 + 1 + 3 * 2) / 6)
    assert set(json.loads((tmp_path / "train" / "dataset.json").read_text())) == OFFICIAL_KEYS
    ds = load_split(tmp_path, "train")
    assert ds.metadata == meta
    assert ds.inputs.dtype == np.uint8 and ds.labels.dtype == np.uint8
    assert ds.puzzle_identifiers.dtype == np.int32 and ds.puzzle_indices.dtype == np.int32
    assert ds.group_indices.dtype == np.int32
    assert ds.puzzle_indices.tolist() == [0, 3, 6, 7, 9, 11, 13]
    assert ds.group_indices.tolist() == [0, 2, 3, 6]
    assert ds.example_puzzle_ids().tolist() == [1, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 6, 6]
    assert (ds.num_examples, ds.num_groups) == (13, 3)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted([*FILES, "dataset.json", "SHA256SUMS"])


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_structure(tmp_path, seed):
    rng = np.random.default_rng(seed)
    seq_len, vocab = int(rng.integers(1, 10)), int(rng.integers(2, 257))
    writer = DatasetWriter(tmp_path, "train", seq_len)
    inputs, labels, ids, p_idx, g_idx = [], [], [], [0], [0]
    for _ in range(int(rng.integers(1, 12))):
        group = []
        for _ in range(int(rng.integers(1, 5))):
            e = int(rng.integers(1, 6))
            ident = int(rng.integers(0, 50))
            x = rng.integers(0, vocab, (e, seq_len)).astype(rng.choice([np.int64, np.uint8, np.int16]))
            y = rng.integers(0, vocab, (e, seq_len))
            group.append((ident, x, y))
            inputs.append(x)
            labels.append(y)
            ids.append(ident)
            p_idx.append(p_idx[-1] + e)
        writer.add_group(group)
        g_idx.append(len(ids))
    meta = writer.close(vocab_size=vocab, num_puzzle_identifiers=50, ignore_label_id=None, pad_id=vocab - 1)
    ds = load_split(tmp_path, "train")
    np.testing.assert_array_equal(ds.inputs, np.concatenate(inputs))
    np.testing.assert_array_equal(ds.labels, np.concatenate(labels))
    assert ds.puzzle_identifiers.tolist() == ids
    assert ds.puzzle_indices.tolist() == p_idx
    assert ds.group_indices.tolist() == g_idx
    assert meta.total_groups == len(g_idx) - 1 and meta.total_puzzles == len(ids)
    assert meta.mean_puzzle_examples == pytest.approx(p_idx[-1] / len(ids))
    assert (meta.seq_len, meta.vocab_size, meta.ignore_label_id, meta.pad_id) == (seq_len, vocab, None, vocab - 1)
    assert meta.sets == ["all"]


def test_our_files_load_like_the_official_loader(tmp_path):
    """The official loader: json.load + DatasetMetadata(**...), np.load(mmap_mode='r') per set name."""
    meta = write_random(tmp_path, [(2, 3), (1, 4)], seq_len=5)
    d = tmp_path / "train"
    raw = json.loads((d / "dataset.json").read_text())
    assert set(raw) == OFFICIAL_KEYS and DatasetMetadata(**raw) == meta
    for set_name in raw["sets"]:
        inputs = np.load(d / f"{set_name}__inputs.npy", mmap_mode="r")
        assert inputs.dtype == np.uint8 and inputs.shape == (10, 5)
        assert np.array_equal(np.load(d / f"{set_name}__inputs.npy"), inputs)  # plain np.load too
        with open(d / f"{set_name}__labels.npy", "rb") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            assert np.lib.format.read_array_header_1_0(f) == ((10, 5), False, np.dtype(np.uint8))
            assert f.tell() % 64 == 0  # numpy's own alignment
        for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            assert np.load(d / f"{set_name}__{name}.npy").dtype == np.int32
    assert np.load(d / "all__puzzle_indices.npy").tolist() == [0, 3, 6, 10]


def test_official_builder_output_loads(tmp_path):
    """Files written the way the official builders write them (np.save + json.dump), with their quirk of
    total_puzzles = total_groups and mean_puzzle_examples = 1 for augmented Sudoku."""
    d = tmp_path / "test"
    d.mkdir()
    np.save(d / "all__inputs.npy", np.ones((3, 4), np.uint8))
    np.save(d / "all__labels.npy", np.array([[2, 0, 2, 0]] * 3, np.uint8))
    np.save(d / "all__puzzle_identifiers.npy", np.zeros(3, np.int32))
    np.save(d / "all__puzzle_indices.npy", np.array([0, 1, 2, 3], np.int32))
    np.save(d / "all__group_indices.npy", np.array([0, 2, 3], np.int32))
    meta = {
        "pad_id": 0,
        "ignore_label_id": 0,
        "blank_identifier_id": 0,
        "vocab_size": 11,
        "seq_len": 4,
        "num_puzzle_identifiers": 1,
        "total_groups": 2,
        "mean_puzzle_examples": 1,
        "total_puzzles": 2,
        "sets": ["all"],
    }
    with (d / "dataset.json").open("w") as f:
        json.dump(meta, f)
    ds = load_split(tmp_path, "test")
    assert ds.num_groups == 2 and ds.metadata.total_puzzles == 2 and ds.puzzle_identifiers.dtype == np.int32
    ((batch, n),) = list(test_batches(ds, 4))
    assert n == 3
    assert batch["inputs"][:3].eq(1).all() and batch["inputs"][3:].eq(0).all()  # PAD rows
    assert batch["labels"][:3].tolist() == [[2, IGNORE_LABEL, 2, IGNORE_LABEL]] * 3
    assert batch["labels"][3:].eq(IGNORE_LABEL).all()
    assert all(v.dtype == torch.int32 for v in batch.values())


def test_writer_is_atomic_and_leaves_other_files_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "extra.bin").write_bytes(b"x")
    write_random(tmp_path, [(1, 2)] * 3)
    old = load_split(tmp_path, "train").inputs.copy()
    # a rewrite that dies half-way leaves the old split intact and no temporary names that look valid
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path, "train", 6) as writer:
        writer.add_group([(1, np.ones((2, 6), np.uint8), np.ones((2, 6), np.uint8))])
        raise RuntimeError("crash")
    assert np.array_equal(load_split(tmp_path, "train").inputs, old)
    assert not list((tmp_path / "train").glob("*.tmp"))
    # while a writer is open, its output is invisible
    writer = DatasetWriter(tmp_path, "test", 6)
    writer.add_group([(1, np.ones((2, 6), np.uint8), np.ones((2, 6), np.uint8))])
    with pytest.raises(DataError, match="no dataset.json"):
        load_split(tmp_path, "test")
    writer.close(vocab_size=4, num_puzzle_identifiers=2)
    assert load_split(tmp_path, "test").num_examples == 2
    assert (tmp_path / "notes.txt").read_text() == "keep" and (tmp_path / "train" / "extra.bin").exists()


def test_writer_rejects_bad_input(tmp_path):
    writer = DatasetWriter(tmp_path, "train", 3)
    ok = np.ones((1, 3), np.uint8)
    with pytest.raises(DataError, match="seq_len=3"):
        writer.add_group([(0, np.ones((1, 4)), np.ones((1, 4)))])
    with pytest.raises(DataError, match="0..255"):
        writer.add_group([(0, np.full((1, 3), 256), ok)])
    with pytest.raises(DataError, match="integers"):
        writer.add_group([(0, ok * 1.0, ok)])
    with pytest.raises(DataError, match="at least one puzzle"):
        writer.add_group([])
    writer.add_group([(3, ok * 9, ok)])
    with pytest.raises(DataError, match="vocab_size 5"):
        writer.close(vocab_size=5, num_puzzle_identifiers=4)
    assert not list((tmp_path / "train").iterdir())  # a refused close leaves nothing behind
    writer = DatasetWriter(tmp_path, "train", 3)
    writer.add_group([(3, ok, ok)])
    with pytest.raises(DataError, match="num_puzzle_identifiers"):
        writer.close(vocab_size=5, num_puzzle_identifiers=3)


def test_identifiers_round_trip(tmp_path):
    write_identifiers(tmp_path, ["<blank>", "a", "b|||t1|||0123456789"])
    assert read_identifiers(tmp_path) == ["<blank>", "a", "b|||t1|||0123456789"]
    (tmp_path / "identifiers.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="identifiers.json: malformed"):
        read_identifiers(tmp_path)
    with pytest.raises(DataError, match="identifiers.json: missing"):
        read_identifiers(tmp_path / "nope")


# -- corrupt data ----------------------------------------------------------------------------------------------


def _truncate(path, n):
    path.write_bytes(path.read_bytes()[:n])


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda d: (d / "all__labels.npy").unlink(), "all__labels.npy: missing"),
        (lambda d: _truncate(d / "all__inputs.npy", 90), "all__inputs.npy: corrupt"),
        (lambda d: _truncate(d / "all__inputs.npy", 200), "all__inputs.npy: corrupt"),
        (lambda d: _truncate(d / "all__group_indices.npy", 130), "all__group_indices.npy: corrupt"),
        (lambda d: (d / "all__puzzle_identifiers.npy").write_bytes(b"garbage"), "all__puzzle_identifiers.npy: corrupt"),
        (lambda d: (d / "dataset.json").write_text("{not json"), "dataset.json: malformed"),
        (lambda d: (d / "dataset.json").write_text('{"pad_id": 0}'), "dataset.json: malformed metadata"),
        (
            lambda d: np.save(d / "all__puzzle_indices.npy", np.array([0, 9, 5, 13], np.int32)),
            "all__puzzle_indices.npy: offsets go backwards",
        ),
        (
            lambda d: np.save(d / "all__puzzle_indices.npy", np.array([0, 3, 6, 12], np.int32)),
            "all__puzzle_indices.npy: does not span",
        ),
        (
            lambda d: np.save(d / "all__group_indices.npy", np.array([0, 2], np.int32)),
            "all__group_indices.npy: does not span",
        ),
        (
            lambda d: np.save(d / "all__group_indices.npy", np.array([0, 2, 2, 3], np.int32)),
            "all__group_indices.npy: group 1 has no puzzles",
        ),
        (lambda d: np.save(d / "all__inputs.npy", np.full((13, 6), 99, np.uint8)), "all__inputs.npy: .*vocab_size"),
        (
            lambda d: np.save(d / "all__labels.npy", np.eye(13, 6, -12, np.uint8) * 8),
            r"all__labels.npy: token ids 0..8 .*first at example 12",
        ),
        (lambda d: np.save(d / "all__labels.npy", np.zeros((13, 5), np.uint8)), "all__labels.npy: shape"),
        (lambda d: np.save(d / "all__inputs.npy", np.zeros((13, 6), np.float32)), "all__inputs.npy: dtype"),
        (
            lambda d: np.save(d / "all__puzzle_identifiers.npy", np.array([1, 2, 99], np.int32)),
            "all__puzzle_identifiers.npy: identifiers",
        ),
    ],
)
def test_corrupt_data_is_a_clear_error(tmp_path, damage, message):
    """Structural checks, for data sets without SHA256SUMS (the official builders write none)."""
    write_random(tmp_path, [(1, 3), (1, 3), (1, 7)])
    (tmp_path / "train" / "SHA256SUMS").unlink()
    damage(tmp_path / "train")
    with pytest.raises(DataError, match=message) as err:
        load_split(tmp_path, "train")
    assert "\n" not in str(err.value) and str(tmp_path / "train") in str(err.value)


def test_a_bit_flip_in_a_data_file_is_named_by_its_checksum(tmp_path):
    """Damage that keeps the structure valid (one token changed) is caught by the split's SHA256SUMS."""
    write_random(tmp_path, [(1, 3), (1, 3), (1, 7)])
    load_split(tmp_path, "train")  # intact: loads
    path = tmp_path / "train" / "all__inputs.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] = (raw[-1] + 1) % 4
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"all__inputs.npy: corrupt \(SHA-256 checksum mismatch"):
        load_split(tmp_path, "train")


def test_hrm_metadata_gets_a_hint(tmp_path):
    write_random(tmp_path, [(1, 3)])
    path = tmp_path / "train" / "dataset.json"
    raw = json.loads(path.read_text())
    del raw["total_puzzles"]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="total_puzzles.*HRM"):
        load_split(tmp_path, "train")


def test_missing_data_set(tmp_path):
    with pytest.raises(DataError, match="no such data set"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(DataError, match=r"train/dataset.json: no dataset.json; build one with `trm data"):
        load_split(tmp_path, "train")


# -- collate / test batches ------------------------------------------------------------------------------------


def _meta(**kw):
    base = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=10,
        seq_len=3,
        num_puzzle_identifiers=5,
        total_groups=1,
        mean_puzzle_examples=1.0,
        total_puzzles=1,
        sets=["all"],
    )
    return DatasetMetadata(**{**base, **kw})


def test_collate_pads_and_maps_ignored_labels():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    y = np.array([[0, 2, 3], [5, 0, 0]], np.uint8)
    out = collate(x, y, np.array([3, 4]), 4, _meta(pad_id=7, blank_identifier_id=2))
    assert all(v.dtype == torch.int32 for v in out.values())
    assert out["inputs"].tolist() == [[1, 2, 3], [4, 5, 6], [7, 7, 7], [7, 7, 7]]
    assert out["labels"].tolist() == [[-100, 2, 3], [5, -100, -100]] + [[-100] * 3] * 2
    assert out["puzzle_identifiers"].tolist() == [3, 4, 2, 2]
    kept = collate(x, y, np.array([3, 4]), 2, _meta(ignore_label_id=None))
    assert kept["labels"].tolist() == y.tolist()  # no ignore id: label 0 is a real class
    assert x.tolist() == [[1, 2, 3], [4, 5, 6]] and y[0, 0] == 0  # inputs untouched
    with pytest.raises(ValueError):
        collate(x, y, np.array([3, 4]), 1, _meta())


def test_ignore_label_mapping(tmp_path):
    writer = DatasetWriter(tmp_path, "test", 3)
    writer.add_group([(0, np.array([[1, 2, 3]]), np.array([[0, 2, 0]]))])
    writer.close(vocab_size=4, num_puzzle_identifiers=1, ignore_label_id=0)
    ((batch, n),) = list(test_batches(load_split(tmp_path, "test"), 2))
    assert batch["labels"].tolist() == [[IGNORE_LABEL, 2, IGNORE_LABEL], [IGNORE_LABEL] * 3] and n == 1


def test_test_batches_cover_everything_in_order(tmp_path):
    writer = DatasetWriter(tmp_path, "test", 1)
    for i in range(10):
        writer.add_group([(i % 3, np.array([[i + 1]]), np.array([[i + 1]]))])
    writer.close(vocab_size=20, num_puzzle_identifiers=3)
    ds = load_split(tmp_path, "test")
    got = [(b["inputs"][:n, 0].tolist(), b["puzzle_identifiers"][:n].tolist(), n) for b, n in test_batches(ds, 4)]
    assert got == [([1, 2, 3, 4], [0, 1, 2, 0], 4), ([5, 6, 7, 8], [1, 2, 0, 1], 4), ([9, 10], [2, 0], 2)]
    last, _ = list(test_batches(ds, 4))[-1]
    assert last["inputs"][2:].eq(0).all() and last["labels"][2:].eq(IGNORE_LABEL).all()
    assert [n for _, n in test_batches(ds, 4, max_examples=6)] == [4, 2]
    assert list(test_batches(ds, 4, max_examples=0)) == []
    # ranks split each global chunk into contiguous halves
    for (whole, n), *parts in zip(
        test_batches(ds, 4), *(test_batches(ds, 4, rank=r, world_size=2) for r in range(2)), strict=True
    ):
        assert sum(k for _, k in parts) == n
        real = torch.cat([b["inputs"][:k] for b, k in parts])
        assert torch.equal(real, whole["inputs"][:n])


# -- training sampler -----------------------------------------------------------------------------------------


def one_example_groups(tmp_path, n_groups=12):
    writer = DatasetWriter(tmp_path, "train", 2)
    for g in range(n_groups):
        writer.add_group([(0, np.array([[g + 1, 1]]), np.array([[g + 1, 1]]))])
    writer.close(vocab_size=64, num_puzzle_identifiers=1)
    return load_split(tmp_path, "train")


def test_sampler_visits_every_group_once_per_epoch(tmp_path):
    ds = one_example_groups(tmp_path)
    sampler = TrainSampler(ds, batch_size=4, seed=3)
    it = iter(sampler)
    orders = []
    for e in range(3):  # three epochs of 3 batches each
        seen = []
        for _ in range(3):
            batch = next(it)
            assert batch["inputs"].shape == (4, 2) and batch["labels"].shape == (4, 2)
            seen += batch["inputs"][:, 0].tolist()
        assert Counter(seen) == Counter(range(1, 13))
        assert sampler.epoch == e + 1
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # a fresh permutation per epoch


def test_sampler_picks_one_puzzle_of_each_group_with_all_its_examples(tmp_path):
    write_random(tmp_path, [(3, 2)] * 5, seq_len=3, vocab=50)
    ds = load_split(tmp_path, "train")
    rows, ids = TrainSampler(ds, batch_size=10, seed=0).next_rows()
    puzzles, groups = group_of_rows(ds, rows)
    assert sorted(Counter(groups.tolist()).values()) == [2] * 5  # both examples of one puzzle per group
    assert all(len(set(puzzles[groups == g])) == 1 for g in range(5))
    assert ids.tolist() == ds.puzzle_identifiers[puzzles].tolist()
    # the batch's tensors are exactly those rows
    batch = next(iter(TrainSampler(ds, batch_size=10, seed=0)))
    assert batch["inputs"].tolist() == ds.inputs[rows].tolist()
    assert batch["puzzle_identifiers"].tolist() == ids.tolist()


def test_sampler_choices_are_uniform_and_examples_shuffled(tmp_path):
    write_random(tmp_path, [(4, 3)] * 2, seq_len=3, vocab=50)
    ds = load_split(tmp_path, "train")
    sampler = TrainSampler(ds, batch_size=6, seed=5)
    chosen, firsts = Counter(), Counter()
    for _ in range(800):  # one epoch per batch: 2 groups x 3 examples
        rows, _ = sampler.next_rows()
        puzzles, _ = group_of_rows(ds, rows)
        chosen.update(puzzles[[0, 3]].tolist())
        firsts[int(rows[0] - ds.puzzle_indices[puzzles[0]])] += 1
        assert sorted(rows[:3] - ds.puzzle_indices[puzzles[0]]) == [0, 1, 2]
    assert sorted(chosen) == list(range(8)) and min(chosen.values()) > 140  # 200 expected each
    assert sorted(firsts) == [0, 1, 2] and min(firsts.values()) > 200  # 267 expected each


def test_sampler_drops_the_overflow_of_a_cut_puzzle(tmp_path):
    write_random(tmp_path, [(1, 3)] * 8, seq_len=2, vocab=50)  # 8 groups of one 3-example puzzle
    ds = load_split(tmp_path, "train")
    sampler = TrainSampler(ds, batch_size=4, seed=0)
    visited = []
    for _ in range(4):  # each batch: one whole puzzle + 1 example of the next; the next batch moves on
        rows, _ = sampler.next_rows()
        _, groups = group_of_rows(ds, rows)
        assert len(rows) == 4 and len(set(groups[:3])) == 1 and groups[3] != groups[0]
        visited += [groups[0], groups[3]]
    assert sorted(int(g) for g in visited) == list(range(8)) and sampler.epoch == 1


def test_sampler_streams_across_epochs_on_tiny_data(tmp_path):
    ds = one_example_groups(tmp_path, n_groups=5)
    sampler = TrainSampler(ds, batch_size=12, seed=0)
    first = next(iter(sampler))["inputs"][:, 0].tolist()
    assert Counter(first[:5]) == Counter(first[5:10]) == Counter(range(1, 6))  # whole epochs back to back
    assert sampler.epoch == pytest.approx(12 / 5)
    assert sampler.state_dict()["epoch"] == 2 and sampler.state_dict()["cursor"] == 2


def test_sampler_is_seeded_and_resumes_exactly(tmp_path):
    write_random(tmp_path, [(2, 3)] * 7 + [(1, 1)] * 5)
    ds = load_split(tmp_path, "train")
    stream = take(TrainSampler(ds, 8, seed=1), 14)
    assert_batches_equal(stream, take(TrainSampler(ds, 8, seed=1), 14))
    other = take(TrainSampler(ds, 8, seed=2), 14)
    assert not all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(stream, other, strict=True))
    boundaries_crossed = 0
    for k in range(10):
        first = TrainSampler(ds, 8, seed=1)
        it = iter(first)
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint round trip
        resumed = TrainSampler(ds, 8, seed=99)  # the seed comes back with the state
        resumed.load_state_dict(state)
        assert resumed.epoch == first.epoch
        rest = take(resumed, 4)
        assert_batches_equal(stream[k : k + 4], rest)
        boundaries_crossed += int(resumed.epoch) > int(state["epoch"] + state["cursor"] / ds.num_groups)
    assert boundaries_crossed >= 3


def test_sampler_state_must_match_the_data(tmp_path):
    ds = one_example_groups(tmp_path, n_groups=6)
    sampler = TrainSampler(ds, 2, seed=0)
    with pytest.raises(DataError, match="7 groups"):
        sampler.load_state_dict({"epoch": 0, "cursor": 0, "seed": 0, "num_groups": 7})
    with pytest.raises(DataError, match="world size"):
        TrainSampler(ds, 3, seed=0, world_size=2)


def test_rank_slices_make_up_the_global_batch(tmp_path):
    write_random(tmp_path, [(2, 3)] * 6)
    ds = load_split(tmp_path, "train")
    whole = take(TrainSampler(ds, 8, seed=0), 5)
    parts = [take(TrainSampler(ds, 8, seed=0, rank=r, world_size=2), 5) for r in range(2)]
    for k in range(5):
        for key in whole[k]:
            assert torch.equal(torch.cat([parts[0][k][key], parts[1][k][key]]), whole[k][key])
            assert parts[0][k][key].shape[0] == 4
