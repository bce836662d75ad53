"""Trajectory-JSONL validation, writing, and the compiled columnar cache."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from poke_tune.data import dataset
from poke_tune.data.dataset import (
    DatasetError,
    DatasetHeader,
    OfflineDataset,
    TrajectoryWriter,
    dataset_info,
    load_dataset,
    read_trajectories,
    write_trajectories,
)
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_index
from poke_tune.sim.encoding import ENCODER_VERSION

SIZE = 8
VERSION = "test-v1"


def _header(encoder_version: str = VERSION, size: int = SIZE) -> DatasetHeader:
    return DatasetHeader(
        encoder_version=encoder_version,
        observation_size=size,
        action_layout=ACTION_LAYOUT,
        num_actions=NUM_ACTIONS,
        battle_format="gen9randombattle",
        generator={"test": True},
    )


def _record(
    number: int, steps: int = 3, *, truncated: bool = False, size: int = SIZE
) -> dict[str, Any]:
    """A valid trajectory whose values encode (trajectory, step, feature)."""
    rng = np.random.default_rng(number)
    records = []
    for t in range(steps):
        action = (number + t) % NUM_ACTIONS
        mask = rng.random(NUM_ACTIONS) < 0.5
        mask[action] = True
        action_type = 0 if action < 4 else 1 if action < 10 else 2
        target = action - (0, 4, 10)[action_type]
        records.append(
            {
                "observation": np.arange(size, dtype=np.float32) / 7 + number * 100 + t,
                "action_type": action_type,
                "action_target": target,
                "reward": 0.5 * t - number,
                "done": t == steps - 1,
                "action_mask": mask,
            }
        )
    return {
        "replay_id": f"gen9randombattle-0-{number // 2}",
        "player": "p1" if number % 2 == 0 else "p2",
        "policy": "random" if number % 3 else "max-damage",
        "total_reward": float(number % 3 - 1),
        "truncated": truncated,
        "steps": records,
        "final_observation": np.full(size, -number, dtype=np.float32) if truncated else None,
        "final_action_mask": np.ones(NUM_ACTIONS, dtype=bool) if truncated else None,
    }


def _records() -> list[dict[str, Any]]:
    return [_record(0), _record(1, steps=5, truncated=True), _record(2, steps=1), _record(3)]


def _load(path: Path, cache: Path, **kwargs: Any) -> OfflineDataset:
    kwargs.setdefault("expected_encoder_version", VERSION)
    return load_dataset(path, cache_root=cache, **kwargs)


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def _line(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def _header_line(header: DatasetHeader | None = None) -> bytes:
    return _line({"header": (header or _header()).model_dump()})


# -- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    records = _records()
    path = tmp_path / name
    assert write_trajectories(path, _header(), records) == len(records) + 1
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    ds = _load(path, tmp_path / "cache")

    assert ds.header == _header()
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


def test_gzip_is_detected_by_magic_bytes(tmp_path: Path) -> None:
    write_trajectories(tmp_path / "data.jsonl.gz", _header(), _records())
    renamed = tmp_path / "data.jsonl"
    (tmp_path / "data.jsonl.gz").rename(renamed)
    assert _load(renamed, tmp_path / "cache").num_trajectories == len(_records())


def test_real_versions_are_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(encoder_version=ENCODER_VERSION), _records())
    ds = load_dataset(path, cache_root=tmp_path / "cache")
    assert ds.header.encoder_version == ENCODER_VERSION
    assert ds.header.action_layout == ACTION_LAYOUT


def test_read_trajectories_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), _records())
    loaded = list(read_trajectories(path, expected_encoder_version=VERSION))
    assert [r.replay_id for r in loaded] == [r["replay_id"] for r in _records()]
    assert loaded[1].final_observation == _records()[1]["final_observation"].tolist()


def test_writer_rejects_inconsistent_records(tmp_path: Path) -> None:
    bad = _record(0)
    bad["steps"][0]["observation"] = np.zeros(SIZE + 1, dtype=np.float32)
    with pytest.raises(ValueError, match=r"steps\[0\]\.observation: length 9"):
        write_trajectories(tmp_path / "data.jsonl", _header(), [bad])
    assert not (tmp_path / "data.jsonl").exists()
    with TrajectoryWriter(tmp_path / "ok.jsonl", _header()) as writer:
        writer.write(_record(0))
    assert writer.lines_written == 2 and (tmp_path / "ok.jsonl").exists()


# -- cache ----------------------------------------------------------------------------------


def test_second_load_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), _records())
    first = _load(path, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.key]

    def no_compile(*args: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(dataset, "_compile", no_compile)
    second = _load(path, tmp_path / "cache")
    assert second.key == first.key and isinstance(second.observations, np.memmap)
    np.testing.assert_array_equal(second.observations, first.observations)
    # Other content is another key, so it does compile.
    write_trajectories(path, _header(), _records()[:2])
    with pytest.raises(AssertionError, match="compiled again"):
        _load(path, tmp_path / "cache")


def test_cached_load_still_checks_versions(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), _records())
    _load(path, tmp_path / "cache")
    with pytest.raises(DatasetError, match=r"data.jsonl:1: header.encoder_version"):
        _load(path, tmp_path / "cache", expected_encoder_version="test-v2")


def test_pickle_reopens_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), _records())
    ds = _load(path, tmp_path / "cache")
    assert len(pickle.dumps(ds)) < 1000  # by reference, not by value
    copy = pickle.loads(pickle.dumps(ds))
    assert isinstance(copy.observations, np.memmap)
    np.testing.assert_array_equal(copy.observations, ds.observations)


def test_dataset_info(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), _records())
    info = dataset_info(_load(path, tmp_path / "cache"))
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
    write_trajectories(path, _header(), [_record(n, steps=1 + n % 4) for n in range(40)])
    ds = _load(path, tmp_path / "cache")
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


def _expect(path: Path, cache: Path, where: str, *fragments: str, **kwargs: Any) -> None:
    with pytest.raises(DatasetError) as caught:
        _load(path, cache, **kwargs)
    message = str(caught.value)
    assert f"{path.name}:{where}" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert not (cache.exists() and any(p.name.endswith("tmp") for p in cache.iterdir()))


def test_rejects_truncated_json_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), _records())
    path.write_bytes(path.read_bytes()[:-40])
    _expect(path, tmp_path / "cache", "5: ", "Invalid JSON")


def test_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    write_trajectories(path, _header(), _records())
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"data.jsonl.gz:\d+: "):
        _load(path, tmp_path / "cache")


def test_rejects_string_instead_of_float(tmp_path: Path) -> None:
    record = _record(1)
    record["steps"][1]["observation"] = [*range(3), "0.5", *range(4)]
    path = tmp_path / "data.jsonl"
    _write_lines(path, [_header_line(), _line(_record(0)), _line(record)])
    _expect(path, tmp_path / "cache", "3: steps[1].observation[3]", "valid number", "'0.5'")


def test_rejects_nan_observation(tmp_path: Path) -> None:
    record = _record(0)
    record["steps"][2]["observation"] = [0.0] * 5 + [12345.5] + [0.0] * 2
    line = _line(record).replace(b"12345.5", b"NaN")
    assert b"NaN" in line
    path = tmp_path / "data.jsonl"
    _write_lines(path, [_header_line(), line])
    _expect(path, tmp_path / "cache", "2: steps[2].observation[5]", "finite number")


def test_rejects_action_forbidden_by_its_mask(tmp_path: Path) -> None:
    record = _record(0)
    record["steps"][1].update(action_type=1, action_target=1)
    record["steps"][1]["action_mask"][5] = False
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [_record(4), _record(5), record], check=False)
    _expect(path, tmp_path / "cache", "4: steps[1].action_mask[5]", "forbids", "action 5")


def test_rejects_unknown_action(tmp_path: Path) -> None:
    record = _record(0)
    record["steps"][0].update(action_type=1, action_target=6)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [record], check=False)
    _expect(path, tmp_path / "cache", "2: steps[0].action_target", "(1, 6)")


def test_rejects_wrong_observation_length(tmp_path: Path) -> None:
    record = _record(0)
    record["steps"][1]["observation"] = np.zeros(SIZE - 1, dtype=np.float32)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [record], check=False)
    _expect(path, tmp_path / "cache", "2: steps[1].observation", "length 7", "size 8")


def test_rejects_missing_header(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    _write_lines(path, [_line(_record(0)), _line(_record(1))])
    _expect(path, tmp_path / "cache", "1: header", "Field required")


def test_rejects_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"")
    _expect(path, tmp_path / "cache", "1: ", "empty file")


def test_rejects_header_without_trajectories(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    _write_lines(path, [_header_line()])
    _expect(path, tmp_path / "cache", "2: ", "no trajectories")


def test_rejects_encoder_version_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(encoder_version="obs-v0"), _records())
    _expect(path, tmp_path / "cache", "1: header.encoder_version", "'obs-v0'", f"'{VERSION}'")


def test_rejects_done_before_the_last_step(tmp_path: Path) -> None:
    record = _record(0)
    record["steps"][1]["done"] = True
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [_record(1), record], check=False)
    _expect(path, tmp_path / "cache", "3: steps[1].done", "before the last step")


def test_rejects_missing_done_on_the_last_step(tmp_path: Path) -> None:
    record = _record(0)
    record["steps"][2]["done"] = False
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [record], check=False)
    _expect(path, tmp_path / "cache", "2: steps[2].done", "last step")


def test_rejects_truncated_trajectory_without_final_observation(tmp_path: Path) -> None:
    record = _record(0, truncated=True)
    record["final_observation"] = None
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [record], check=False)
    _expect(path, tmp_path / "cache", "2: final_observation", "truncated is true")


def test_rejects_final_observation_after_a_terminal(tmp_path: Path) -> None:
    record = _record(0)
    record["final_observation"] = np.zeros(SIZE, dtype=np.float32)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, _header(), [record], check=False)
    _expect(path, tmp_path / "cache", "2: final_observation", "truncated is false")


def test_error_survives_pickling(tmp_path: Path) -> None:
    error = DatasetError(tmp_path / "data.jsonl", 3, "steps[0].done", "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.line == 3


def test_gzip_reader_accepts_concatenated_members(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    lines = [_header_line(), *(_line(r) for r in _records())]
    path.write_bytes(gzip.compress(b"\n".join(lines[:3]) + b"\n") + gzip.compress(lines[3]))
    assert _load(path, tmp_path / "cache").num_trajectories == 3
