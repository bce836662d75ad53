"""The compiled cache: the row layout, cached loads, pickling by reference, summary
statistics, the seeded split; a file without trajectories or a directory is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from poke_tune.data import compiled
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.export import export_trajectories
from poke_tune.data.info import dataset_info
from poke_tune.data.jsonl import read_header, read_trajectories, write_trajectories
from poke_tune.data.records import DatasetError
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_index
from poke_tune.sim.encoding import ENCODER_VERSION
from tests.data.trajectory_files import (
    HEADER,
    SIZE,
    expect_refusal,
    header_line,
    load,
    sample_record,
    sample_records,
    write_lines,
)
from tests.synthetic import synthetic_header

# -- round trip -----------------------------------------------------------------------------


def _rows(ds: OfflineDataset) -> np.ndarray:
    """Row of s for every transition: transition g of trajectory t lies in row g + t."""
    lengths = ds.trajectory_lengths
    return np.arange(int(lengths.sum())) + np.repeat(np.arange(len(lengths)), lengths)


@pytest.mark.parametrize(("name", "shard_rows"), [("data.jsonl", 100_000), ("data.jsonl.gz", 2)])
def test_round_trip(tmp_path: Path, name: str, shard_rows: int) -> None:
    records = sample_records()
    path = tmp_path / name
    assert write_trajectories(path, HEADER, records) == len(records) + 1
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    ds = load(path, tmp_path / "cache", shard_rows=shard_rows)

    assert len(ds.shards) == (1 if shard_rows > 100 else len(records))
    assert ds.header == HEADER
    assert ds.num_transitions == sum(len(r["steps"]) for r in records)
    assert ds.replay_ids == tuple(r["replay_id"] for r in records)
    assert ds.players == ("p1", "p2", "p1", "p2")
    np.testing.assert_array_equal(ds.trajectory_truncated, [False, True, False, False])
    np.testing.assert_array_equal(ds.trajectory_returns, [r["total_reward"] for r in records])

    rows = _rows(ds)
    observations, masks = ds.observations_at(rows), ds.masks_at(rows)
    next_observations, next_masks = ds.observations_at(rows + 1), ds.masks_at(rows + 1)
    actions, rewards, terminals = ds.transitions_at(np.arange(ds.num_transitions))
    assert observations.dtype == np.float32 and masks.dtype == bool
    i = 0
    for record in records:
        steps = record["steps"]
        for t, step in enumerate(steps):
            np.testing.assert_array_equal(observations[i], step["observation"])
            np.testing.assert_array_equal(masks[i], step["action_mask"])
            assert actions[i] == action_index(step["action_type"], step["action_target"])
            assert rewards[i] == np.float32(step["reward"])
            last = t == len(steps) - 1
            assert terminals[i] == (1.0 if last and not record["truncated"] else 0.0)
            if not last:
                np.testing.assert_array_equal(next_observations[i], steps[t + 1]["observation"])
            elif record["truncated"]:
                np.testing.assert_array_equal(next_observations[i], record["final_observation"])
                np.testing.assert_array_equal(next_masks[i], record["final_action_mask"])
            else:
                assert not next_observations[i].any() and not next_masks[i].any()
            i += 1
    assert i == ds.num_transitions


def test_columns_are_stored_as_bits_codes_and_floats_exactly(tmp_path: Path) -> None:
    """Each column in the narrowest exact form: 0/1 as bits, few values as byte codes,
    the rest float32; decoding gives back every recorded float32 bit for bit."""
    rng = np.random.default_rng(0)
    records = []
    for number in range(6):
        record = sample_record(number, steps=60)  # 366 rows: > 256 values
        for step in record["steps"]:
            observation = step["observation"]
            observation[0] = rng.integers(2)  # binary
            observation[1] = rng.integers(7) / 6.0  # a boost: 7 values, not binary
            observation[2] = rng.normal()  # continuous
        records.append(record)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, records)
    ds = load(path, tmp_path / "cache")
    (shard,) = ds.shards
    assert 0 in shard.arrays["bit_columns"] and 1 in shard.arrays["code_columns"]
    assert 2 in shard.arrays["float_columns"]
    expected = np.concatenate(
        [
            np.vstack([np.asarray([s["observation"] for s in r["steps"]]), np.zeros((1, SIZE))])
            for r in records
        ]
    ).astype(np.float32)
    decoded = ds.observations_at(np.arange(len(expected)))
    assert decoded.tobytes() == expected.tobytes()
    assert shard.arrays["obs_bits"].dtype == np.uint8 and shard.arrays["mask_bits"].shape[1] == 2


def test_real_versions_are_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, synthetic_header(SIZE), sample_records())
    ds = load_dataset(path, cache_root=tmp_path / "cache")
    assert ds.header.encoder_version == ENCODER_VERSION
    assert ds.header.action_layout == ACTION_LAYOUT


# -- cache ----------------------------------------------------------------------------------


def test_second_load_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    first = load(path, tmp_path / "cache", shard_rows=8)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"{first.key}.json",
        "shards",
    ]
    # Shards are named by their content.
    assert sorted(p.name for p in (tmp_path / "cache" / "shards").iterdir()) == sorted(
        s.key for s in first.shards
    )

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiled, "_compile", no_compile)
    second = load(path, tmp_path / "cache")
    assert second.key == first.key
    assert isinstance(second.shards[0].arrays["obs_floats"], np.memmap)
    rows = np.arange(10)
    np.testing.assert_array_equal(second.observations_at(rows), first.observations_at(rows))
    # Other content is another key, so it does compile.
    write_trajectories(path, HEADER, sample_records()[:2])
    with pytest.raises(AssertionError, match="compiled again"):
        load(path, tmp_path / "cache")


def test_the_same_trajectories_make_the_same_shards(tmp_path: Path) -> None:
    """Content addressing: another file holding the same trajectories reuses the shards."""
    records = sample_records()
    write_trajectories(tmp_path / "a.jsonl", HEADER, records)
    write_trajectories(tmp_path / "b.jsonl.gz", HEADER, records)
    a = load(tmp_path / "a.jsonl", tmp_path / "cache", shard_rows=8)
    b = load(tmp_path / "b.jsonl.gz", tmp_path / "cache", shard_rows=8)
    assert a.key != b.key and [s.key for s in a.shards] == [s.key for s in b.shards]
    changed = [*records[:3], sample_record(9)]
    write_trajectories(tmp_path / "c.jsonl", HEADER, changed)
    c = load(tmp_path / "c.jsonl", tmp_path / "cache", shard_rows=8)
    assert [s.key for s in c.shards][:-1] == [s.key for s in a.shards][:-1]
    assert c.shards[-1].key != a.shards[-1].key


def test_cached_load_still_checks_versions(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    load(path, tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"data.jsonl:1: header.encoder_version"):
        load(path, tmp_path / "cache", expected_encoder_version="test-v2")


def test_pickle_reopens_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    ds = load(path, tmp_path / "cache")
    assert len(pickle.dumps(ds)) < 1000  # by reference, not by value
    copy = pickle.loads(pickle.dumps(ds))
    assert isinstance(copy.shards[0].arrays["obs_floats"], np.memmap)
    rows = np.arange(16)
    np.testing.assert_array_equal(copy.observations_at(rows), ds.observations_at(rows))


def test_dataset_info(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    info = dataset_info(load(path, tmp_path / "cache", shard_rows=8))
    assert info["size_bytes"] == path.stat().st_size and info["shards"] > 1
    assert (info["battles"], info["trajectories"], info["transitions"]) == (2, 4, 12)
    assert info["truncated"] == 1 and info["truncated_fraction"] == 0.25
    # last-step rewards: 1.0, (truncated), -2.0, -2.0
    assert (info["wins"], info["losses"], info["draws"]) == (1, 2, 0)
    assert sum(info["action_frequency"]) == pytest.approx(1.0)
    assert len(info["action_frequency"]) == NUM_ACTIONS
    assert sum(info["action_type_frequency"].values()) == pytest.approx(1.0)
    assert info["policies"] == {"max-damage": 2, "random": 2}
    assert 1 <= info["mean_legal_actions"] <= NUM_ACTIONS


# -- combining ------------------------------------------------------------------------------


def test_combining_concatenates_manifests_and_excludes_repeats(tmp_path: Path) -> None:
    records, header = sample_records(), synthetic_header(SIZE)
    write_trajectories(tmp_path / "a.jsonl", header, records[:3])
    write_trajectories(tmp_path / "b.jsonl", header, [records[2], sample_record(7)])
    cache = tmp_path / "cache"
    parts = [load_dataset(tmp_path / name, cache_root=cache) for name in ("a.jsonl", "b.jsonl")]
    combined = combine_datasets(
        [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "ab.json", cache_root=cache
    )
    assert (combined.trajectories, combined.repeats_dropped) == (4, 1)
    ds = load_dataset(tmp_path / "ab.json", cache_root=cache)
    assert [s.key for s in ds.shards] == [s.key for p in parts for s in p.shards]  # no copy
    assert ds.num_trajectories == 4
    assert ds.num_transitions == parts[0].num_transitions + len(sample_record(7)["steps"])
    train, val = ds.split(0.25, seed=0)
    assert 3 not in np.r_[train, val]  # the repeat is in neither side
    assert ds.replay_ids[0].startswith("0/") and ds.replay_ids[-1].startswith("1/")
    assert [p["path"] for p in ds.header.generator["parts"]] == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]
    assert dataset_info(ds)["trajectories"] == 4


# -- split ----------------------------------------------------------------------------------


def test_split_is_by_trajectory_and_seeded(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [sample_record(n, steps=1 + n % 4) for n in range(40)])
    ds = load(path, tmp_path / "cache")
    train, val = ds.split(0.25, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(val) == 10
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(ds.num_trajectories))
    again = ds.split(0.25, seed=3)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(ds.split(0.25, seed=4)[1], val)
    assert len(ds.split(0.0)[1]) == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            ds.split(bad)


# -- rejections -----------------------------------------------------------------------------


def test_rejects_header_without_trajectories(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_lines(path, [header_line()])
    expect_refusal(path, tmp_path / "cache", "2: ", "no trajectories")


def test_a_directory_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory, expected a dataset file"):
        load_dataset(tmp_path, cache_root=tmp_path / "cache")


# -- export ---------------------------------------------------------------------------------


def test_export_gives_back_the_trajectories_and_their_header(tmp_path: Path) -> None:
    records, header = sample_records(), synthetic_header(SIZE)
    records[0]["provenance"] = {
        "source": "a.log.json",
        "battle_id": "1",
        "player": "ab",
        "opponent": "cd",
    }
    write_trajectories(tmp_path / "a.jsonl", header, records)
    write_trajectories(tmp_path / "b.jsonl", header, [records[3], sample_record(8)])
    cache = tmp_path / "cache"
    combine_datasets(
        [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "ab.json", cache_root=cache
    )
    combined = load_dataset(tmp_path / "ab.json", cache_root=cache, shard_rows=4)
    assert export_trajectories(combined, tmp_path / "out.jsonl.gz") == 5  # the repeat left out
    exported = list(read_trajectories(tmp_path / "out.jsonl.gz"))
    assert [r.replay_id for r in exported] == list(
        np.asarray(combined.replay_ids)[~combined.excluded]
    )
    assert exported[0].provenance is not None and exported[0].provenance.player == "ab"
    assert read_header(tmp_path / "out.jsonl.gz") == combined.header
    again = load_dataset(tmp_path / "out.jsonl.gz", cache_root=cache)
    rows = np.arange(again.num_transitions + again.num_trajectories)
    kept_rows = np.concatenate(
        [
            np.arange(start + t, end + t + 1)
            for t, (start, end) in enumerate(
                zip(combined.trajectory_starts[:-1], combined.trajectory_starts[1:], strict=True)
            )
            if not combined.excluded[t]
        ]
    )
    assert again.observations_at(rows).tobytes() == combined.observations_at(kept_rows).tobytes()
    np.testing.assert_array_equal(again.masks_at(rows), combined.masks_at(kept_rows))
