"""A trajectory file with a repeated trajectory is refused at the repeat's line; a
directory is not a dataset."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from poke_tune.data.dataset import DatasetError, load_dataset, write_trajectories
from tests.synthetic import synthetic_header, synthetic_records


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    write_trajectories(path, synthetic_header(), records)
    return path


def test_the_same_replay_and_player_twice_is_refused(tmp_path: Path) -> None:
    records = synthetic_records(6)
    repeat = copy.deepcopy(records[1])
    repeat["steps"][0]["reward"] = 0.5  # type: ignore[index]  # other content, same key
    path = _write(tmp_path / "d.jsonl", [*records, repeat])
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, cache_root=tmp_path / "cache")
    # Line 1 is the header: records[1] is line 3, the repeat line 8.
    assert str(caught.value) == (
        f"{path}:8: replay_id: trajectory 'synthetic-0' p2 repeats line 3"
    )


def test_a_copy_under_another_replay_id_is_refused(tmp_path: Path) -> None:
    records = synthetic_records(6)
    copied = copy.deepcopy(records[2]) | {"replay_id": "renamed-7"}
    path = _write(tmp_path / "d.jsonl.gz", [*records, copied])
    with pytest.raises(DatasetError, match=r"d.jsonl.gz:8: .*is a copy of line 4"):
        load_dataset(path, cache_root=tmp_path / "cache")


def test_distinct_trajectories_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", synthetic_records(6))
    assert load_dataset(path, cache_root=tmp_path / "cache").num_trajectories == 6


def test_a_directory_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory, expected a dataset file"):
        load_dataset(tmp_path, cache_root=tmp_path / "cache")
