"""The compiled cache: the row layout, cached loads, pickling by reference, summary
statistics, the seeded split; a file without trajectories or a directory is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from poke_tune.data import compiled
from poke_tune.data.compiled import dataset_info, load_dataset
from poke_tune.data.jsonl import write_trajectories
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


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    records = sample_records()
    path = tmp_path / name
    assert write_trajectories(path, HEADER, records) == len(records) + 1
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    ds = load(path, tmp_path / "cache")

    assert ds.header == HEADER
    assert ds.num_transitions == sum(len(r["steps"]) for r in records)
    assert ds.observations.shape == (ds.num_transitions + len(records), SIZE)
    assert ds.observations.dtype == np.float32 and ds.action_masks.dtype == bool
    assert ds.replay_ids == tuple(r["replay_id"] for r in records)
    assert ds.players == ("p1", "p2", "p1", "p2")
    np.testing.assert_array_equal(ds.trajectory_truncated, [False, True, False, False])
    np.testing.assert_array_equal(ds.trajectory_returns, [r["total_reward"] for r in records])

    i = 0
    for traj, record in enumerate(records):
        steps = record["steps"]
        for t, step in enumerate(steps):
            row = ds.rows[i]
            assert ds.trajectory_ids[i] == traj
            np.testing.assert_array_equal(ds.observations[row], step["observation"])
            np.testing.assert_array_equal(ds.action_masks[row], step["action_mask"])
            assert ds.actions[i] == action_index(step["action_type"], step["action_target"])
            assert ds.rewards[i] == np.float32(step["reward"])
            last = t == len(steps) - 1
            assert ds.terminals[i] == (1.0 if last and not record["truncated"] else 0.0)
            next_obs = ds.observations[ds.next_rows[i]]
            next_mask = ds.action_masks[ds.next_rows[i]]
            if not last:
                np.testing.assert_array_equal(next_obs, steps[t + 1]["observation"])
            elif record["truncated"]:
                np.testing.assert_array_equal(next_obs, record["final_observation"])
                np.testing.assert_array_equal(next_mask, record["final_action_mask"])
            else:
                assert not next_obs.any() and not next_mask.any()
            i += 1
    assert i == ds.num_transitions


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
    first = load(path, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.key]

    def no_compile(*args: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiled, "_compile", no_compile)
    second = load(path, tmp_path / "cache")
    assert second.key == first.key and isinstance(second.observations, np.memmap)
    np.testing.assert_array_equal(second.observations, first.observations)
    # Other content is another key, so it does compile.
    write_trajectories(path, HEADER, sample_records()[:2])
    with pytest.raises(AssertionError, match="compiled again"):
        load(path, tmp_path / "cache")


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
    assert isinstance(copy.observations, np.memmap)
    np.testing.assert_array_equal(copy.observations, ds.observations)


def test_dataset_info(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    info = dataset_info(load(path, tmp_path / "cache"))
    assert info["size_bytes"] == path.stat().st_size
    assert (info["battles"], info["trajectories"], info["transitions"]) == (2, 4, 12)
    assert info["truncated"] == 1 and info["truncated_fraction"] == 0.25
    # last-step rewards: 1.0, (truncated), -2.0, -2.0
    assert (info["wins"], info["losses"], info["draws"]) == (1, 2, 0)
    assert sum(info["action_frequency"]) == pytest.approx(1.0)
    assert len(info["action_frequency"]) == NUM_ACTIONS
    assert sum(info["action_type_frequency"].values()) == pytest.approx(1.0)
    assert info["policies"] == {"max-damage": 2, "random": 2}
    assert 1 <= info["mean_legal_actions"] <= NUM_ACTIONS


# -- split ----------------------------------------------------------------------------------


def test_split_is_by_trajectory_and_seeded(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [sample_record(n, steps=1 + n % 4) for n in range(40)])
    ds = load(path, tmp_path / "cache")
    train, val = ds.split(0.25, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(ds.num_transitions))
    train_ids, val_ids = set(ds.trajectory_ids[train]), set(ds.trajectory_ids[val])
    assert not train_ids & val_ids and len(val_ids) == 10
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
