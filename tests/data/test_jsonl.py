"""Trajectory files read and written (plain or gzip); a damaged file, or one with a repeated
trajectory, is refused at its line."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import numpy as np
import pytest

from poke_tune.data.compiled import load_dataset
from poke_tune.data.jsonl import TrajectoryWriter, read_trajectories, write_trajectories
from poke_tune.data.records import DatasetError
from tests.data.trajectory_files import (
    HEADER,
    SIZE,
    VERSION,
    expect_refusal,
    header_line,
    json_line,
    load,
    sample_record,
    sample_records,
    write_lines,
)
from tests.synthetic import synthetic_header, synthetic_records

# -- reading and writing --------------------------------------------------------------------


def test_gzip_is_detected_by_magic_bytes(tmp_path: Path) -> None:
    write_trajectories(tmp_path / "data.jsonl.gz", HEADER, sample_records())
    renamed = tmp_path / "data.jsonl"
    (tmp_path / "data.jsonl.gz").rename(renamed)
    assert load(renamed, tmp_path / "cache").num_trajectories == len(sample_records())


def test_read_trajectories_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    loaded = list(read_trajectories(path, expected_encoder_version=VERSION))
    assert [r.replay_id for r in loaded] == [r["replay_id"] for r in sample_records()]
    assert loaded[1].final_observation == sample_records()[1]["final_observation"].tolist()


def test_writer_rejects_inconsistent_records(tmp_path: Path) -> None:
    bad = sample_record(0)
    bad["steps"][0]["observation"] = np.zeros(SIZE + 1, dtype=np.float32)
    with pytest.raises(ValueError, match=r"steps\[0\]\.observation: length 9"):
        write_trajectories(tmp_path / "data.jsonl", HEADER, [bad])
    assert not (tmp_path / "data.jsonl").exists()
    with TrajectoryWriter(tmp_path / "ok.jsonl", HEADER) as writer:
        writer.write(sample_record(0))
    assert writer.lines_written == 2 and (tmp_path / "ok.jsonl").exists()


def test_gzip_reader_accepts_concatenated_members(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    lines = [header_line(), *(json_line(r) for r in sample_records())]
    path.write_bytes(gzip.compress(b"\n".join(lines[:3]) + b"\n") + gzip.compress(lines[3]))
    assert load(path, tmp_path / "cache").num_trajectories == 3


# -- rejections -----------------------------------------------------------------------------


def test_rejects_truncated_json_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, sample_records())
    path.write_bytes(path.read_bytes()[:-40])
    expect_refusal(path, tmp_path / "cache", "5: ", "Invalid JSON")


def test_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    write_trajectories(path, HEADER, sample_records())
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"data.jsonl.gz:\d+: "):
        load(path, tmp_path / "cache")


def test_rejects_missing_header(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_lines(path, [json_line(sample_record(0)), json_line(sample_record(1))])
    expect_refusal(path, tmp_path / "cache", "1: header", "Field required")


def test_rejects_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"")
    expect_refusal(path, tmp_path / "cache", "1: ", "empty file")


# -- repeats --------------------------------------------------------------------------------


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
