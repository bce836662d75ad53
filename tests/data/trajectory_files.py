"""Small hand-made trajectory files for the data tests: a header, records whose values
encode (trajectory, step, feature), and the assertion that a file is refused where expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.records import DatasetError, DatasetHeader
from poke_tune.sim.actions import NUM_ACTIONS
from tests.synthetic import synthetic_header

__all__ = [
    "HEADER",
    "SIZE",
    "VERSION",
    "expect_refusal",
    "header_line",
    "json_line",
    "load",
    "sample_record",
    "sample_records",
    "write_lines",
]

SIZE = 8
VERSION = "test-v1"


HEADER = synthetic_header(SIZE, encoder_version=VERSION)
"""The header of the hand-made files (an encoder version of their own)."""


def sample_record(
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


def sample_records() -> list[dict[str, Any]]:
    return [
        sample_record(0),
        sample_record(1, steps=5, truncated=True),
        sample_record(2, steps=1),
        sample_record(3),
    ]


def load(path: Path, cache: Path, **kwargs: Any) -> OfflineDataset:
    kwargs.setdefault("expected_encoder_version", VERSION)
    return load_dataset(path, cache_root=cache, **kwargs)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def json_line(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def header_line(header: DatasetHeader | None = None) -> bytes:
    return json_line({"header": (header or HEADER).model_dump()})


def expect_refusal(path: Path, cache: Path, where: str, *fragments: str, **kwargs: Any) -> None:
    with pytest.raises(DatasetError) as caught:
        load(path, cache, **kwargs)
    message = str(caught.value)
    assert f"{path.name}:{where}" in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert not (cache.exists() and any(p.name.endswith("tmp") for p in cache.iterdir()))
