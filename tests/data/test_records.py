"""A record or header that breaks the rules is refused as `file:line: field: problem`."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from poke_tune.data.jsonl import write_trajectories
from poke_tune.data.records import DatasetError
from tests.data.trajectory_files import (
    HEADER,
    SIZE,
    VERSION,
    expect_refusal,
    header_line,
    json_line,
    sample_record,
    sample_records,
    write_lines,
)
from tests.synthetic import synthetic_header


def test_rejects_string_instead_of_float(tmp_path: Path) -> None:
    record = sample_record(1)
    record["steps"][1]["observation"] = [*range(3), "0.5", *range(4)]
    path = tmp_path / "data.jsonl"
    write_lines(path, [header_line(), json_line(sample_record(0)), json_line(record)])
    expect_refusal(path, tmp_path / "cache", "3: steps[1].observation[3]", "valid number", "'0.5'")


def test_rejects_nan_observation(tmp_path: Path) -> None:
    record = sample_record(0)
    record["steps"][2]["observation"] = [0.0] * 5 + [12345.5] + [0.0] * 2
    line = json_line(record).replace(b"12345.5", b"NaN")
    assert b"NaN" in line
    path = tmp_path / "data.jsonl"
    write_lines(path, [header_line(), line])
    expect_refusal(path, tmp_path / "cache", "2: steps[2].observation[5]", "finite number")


def test_rejects_action_forbidden_by_its_mask(tmp_path: Path) -> None:
    record = sample_record(0)
    record["steps"][1].update(action_type=1, action_target=1)
    record["steps"][1]["action_mask"][5] = False
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [sample_record(4), sample_record(5), record], check=False)
    expect_refusal(path, tmp_path / "cache", "4: steps[1].action_mask[5]", "forbids", "action 5")


def test_rejects_unknown_action(tmp_path: Path) -> None:
    record = sample_record(0)
    record["steps"][0].update(action_type=1, action_target=6)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [record], check=False)
    expect_refusal(path, tmp_path / "cache", "2: steps[0].action_target", "(1, 6)")


def test_rejects_wrong_observation_length(tmp_path: Path) -> None:
    record = sample_record(0)
    record["steps"][1]["observation"] = np.zeros(SIZE - 1, dtype=np.float32)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [record], check=False)
    expect_refusal(path, tmp_path / "cache", "2: steps[1].observation", "length 7", "size 8")


def test_rejects_encoder_version_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_trajectories(path, synthetic_header(SIZE, encoder_version="obs-v0"), sample_records())
    expect_refusal(
        path, tmp_path / "cache", "1: header.encoder_version", "'obs-v0'", f"'{VERSION}'"
    )


def test_rejects_done_before_the_last_step(tmp_path: Path) -> None:
    record = sample_record(0)
    record["steps"][1]["done"] = True
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [sample_record(1), record], check=False)
    expect_refusal(path, tmp_path / "cache", "3: steps[1].done", "before the last step")


def test_rejects_missing_done_on_the_last_step(tmp_path: Path) -> None:
    record = sample_record(0)
    record["steps"][2]["done"] = False
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [record], check=False)
    expect_refusal(path, tmp_path / "cache", "2: steps[2].done", "last step")


def test_rejects_truncated_trajectory_without_final_observation(tmp_path: Path) -> None:
    record = sample_record(0, truncated=True)
    record["final_observation"] = None
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [record], check=False)
    expect_refusal(path, tmp_path / "cache", "2: final_observation", "truncated is true")


def test_rejects_final_observation_after_a_terminal(tmp_path: Path) -> None:
    record = sample_record(0)
    record["final_observation"] = np.zeros(SIZE, dtype=np.float32)
    path = tmp_path / "data.jsonl"
    write_trajectories(path, HEADER, [record], check=False)
    expect_refusal(path, tmp_path / "cache", "2: final_observation", "truncated is false")


def test_error_survives_pickling(tmp_path: Path) -> None:
    error = DatasetError(tmp_path / "data.jsonl", 3, "steps[0].done", "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.line == 3
