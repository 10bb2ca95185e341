"""The official on-disk layout and the sampler's semantics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from trm.data import (
    IGNORE_LABEL,
    DataError,
    DatasetWriter,
    TrainSampler,
    load_split,
    test_batches,
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


def write_random(root, groups, seq_len=6, vocab=8, seed=0):
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(root, "train", seq_len)
    ident = 1
    for n_puzzles, n_examples in groups:
        puzzles = []
        for _ in range(n_puzzles):
            puzzles.append(
                (
                    ident,
                    rng.integers(1, vocab, (n_examples, seq_len)),
                    rng.integers(0, vocab, (n_examples, seq_len)),
                )
            )
            ident += 1
        writer.add_group(puzzles)
    return writer.close(vocab_size=vocab, num_puzzle_identifiers=ident)


def test_round_trip_and_metadata(tmp_path):
    meta = write_random(tmp_path, [(2, 3), (1, 1), (3, 2)])
    assert (meta.total_groups, meta.total_puzzles) == (3, 6)
    assert meta.mean_puzzle_examples == pytest.approx((2 * 3 + 1 + 3 * 2) / 6)
    assert set(json.loads((tmp_path / "train" / "dataset.json").read_text())) == OFFICIAL_KEYS
    ds = load_split(tmp_path, "train")
    assert ds.inputs.dtype == np.uint8 and ds.puzzle_identifiers.dtype == np.int32
    assert ds.puzzle_indices.tolist() == [0, 3, 6, 7, 9, 11, 13]
    assert ds.group_indices.tolist() == [0, 2, 3, 6]
    assert ds.example_puzzle_ids().tolist() == [1, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 6, 6]
    # the official loader reads plain np.load + json
    assert np.load(tmp_path / "train" / "all__inputs.npy").shape == (13, 6)


def test_official_builder_output_loads(tmp_path):
    """Files written the way the official builders write them (np.save + json.dump)."""
    d = tmp_path / "test"
    d.mkdir()
    np.save(d / "all__inputs.npy", np.ones((2, 4), np.uint8))
    np.save(d / "all__labels.npy", np.full((2, 4), 2, np.uint8))
    np.save(d / "all__puzzle_identifiers.npy", np.zeros(2, np.int32))
    np.save(d / "all__puzzle_indices.npy", np.array([0, 1, 2], np.int32))
    np.save(d / "all__group_indices.npy", np.array([0, 1, 2], np.int32))
    json.dump(
        {
            "pad_id": 0,
            "ignore_label_id": 0,
            "blank_identifier_id": 0,
            "vocab_size": 11,
            "seq_len": 4,
            "num_puzzle_identifiers": 1,
            "total_groups": 2,
            "mean_puzzle_examples": 1.0,
            "total_puzzles": 2,
            "sets": ["all"],
        },
        (d / "dataset.json").open("w"),
    )
    ds = load_split(tmp_path, "test")
    ((batch, n),) = list(test_batches(ds, 4))
    assert n == 2
    assert batch["inputs"][:2].eq(1).all() and batch["inputs"][2:].eq(0).all()  # PAD rows
    assert batch["labels"][2:].eq(IGNORE_LABEL).all()


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
    for _ in range(2):  # two epochs of 3 batches each
        seen = Counter()
        for _ in range(3):
            batch = next(it)
            assert batch["inputs"].shape == (4, 2)
            seen.update(batch["inputs"][:, 0].tolist())
        assert seen == Counter(range(1, 13))


def test_sampler_picks_one_puzzle_of_each_group_with_all_its_examples(tmp_path):
    write_random(tmp_path, [(3, 2)] * 5, seq_len=3, vocab=50)
    ds = load_split(tmp_path, "train")
    rows = TrainSampler(ds, batch_size=10, seed=0).next_rows()
    puzzles_of_rows = np.searchsorted(ds.puzzle_indices, rows, side="right") - 1
    groups = np.searchsorted(ds.group_indices, puzzles_of_rows, side="right") - 1
    assert sorted(Counter(groups.tolist()).values()) == [2] * 5  # both examples of one puzzle per group
    assert all(len(set(puzzles_of_rows[groups == g])) == 1 for g in range(5))


def test_sampler_is_seeded_and_resumes_exactly(tmp_path):
    write_random(tmp_path, [(2, 3)] * 7 + [(1, 1)] * 5)
    ds = load_split(tmp_path, "train")
    stream = [next_b for next_b, _ in zip(iter(TrainSampler(ds, 8, seed=1)), range(12), strict=False)]
    again = [b for b, _ in zip(iter(TrainSampler(ds, 8, seed=1)), range(12), strict=False)]
    other = [b for b, _ in zip(iter(TrainSampler(ds, 8, seed=2)), range(12), strict=False)]
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(stream, again, strict=True))
    assert not all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(stream, other, strict=True))
    first = TrainSampler(ds, 8, seed=1)
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    resumed = TrainSampler(ds, 8, seed=1)
    resumed.load_state_dict(state)
    rest = [b for b, _ in zip(iter(resumed), range(7), strict=False)]
    assert resumed.epoch > 1  # the remainder crosses at least one epoch boundary
    for a, b in zip(stream[5:], rest, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_rank_slices_make_up_the_global_batch(tmp_path):
    write_random(tmp_path, [(2, 3)] * 6)
    ds = load_split(tmp_path, "train")
    whole = next(iter(TrainSampler(ds, 8, seed=0)))
    parts = [next(iter(TrainSampler(ds, 8, seed=0, rank=r, world_size=2))) for r in range(2)]
    assert torch.equal(torch.cat([p["inputs"] for p in parts]), whole["inputs"])


def test_ignore_label_mapping(tmp_path):
    writer = DatasetWriter(tmp_path, "test", 3)
    writer.add_group([(0, np.array([[1, 2, 3]]), np.array([[0, 2, 0]]))])
    writer.close(vocab_size=4, num_puzzle_identifiers=1, ignore_label_id=0)
    ((batch, n),) = list(test_batches(load_split(tmp_path, "test"), 2))
    assert batch["labels"][0].tolist() == [IGNORE_LABEL, 2, IGNORE_LABEL] and n == 1


def test_test_batches_cover_everything_in_order(tmp_path):
    writer = DatasetWriter(tmp_path, "test", 1)
    for i in range(10):
        writer.add_group([(0, np.array([[i + 1]]), np.array([[i + 1]]))])
    writer.close(vocab_size=20, num_puzzle_identifiers=1)
    ds = load_split(tmp_path, "test")
    got = [(b["inputs"][:n, 0].tolist(), n) for b, n in test_batches(ds, 4)]
    assert got == [([1, 2, 3, 4], 4), ([5, 6, 7, 8], 4), ([9, 10], 2)]
    assert [n for _, n in test_batches(ds, 4, max_examples=6)] == [4, 2]


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda d: (d / "all__labels.npy").unlink(), "all__labels.npy: missing"),
        (
            lambda d: (d / "all__inputs.npy").write_bytes((d / "all__inputs.npy").read_bytes()[:90]),
            "all__inputs.npy: corrupt",
        ),
        (lambda d: (d / "dataset.json").write_text("{not json"), "dataset.json: malformed"),
        (
            lambda d: np.save(d / "all__puzzle_indices.npy", np.array([0, 9, 5, 13], np.int32)),
            "backwards|span",
        ),
        (lambda d: np.save(d / "all__inputs.npy", np.full((13, 6), 99, np.uint8)), "vocab_size"),
    ],
)
def test_corrupt_data_is_a_clear_error(tmp_path, damage, message):
    write_random(tmp_path, [(1, 3), (1, 3), (1, 7)])
    damage(tmp_path / "train")
    with pytest.raises(DataError, match=message):
        load_split(tmp_path, "train")


def test_missing_data_set(tmp_path):
    with pytest.raises(DataError, match="no such data set"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="no dataset.json"):
        load_split(tmp_path, "train")
