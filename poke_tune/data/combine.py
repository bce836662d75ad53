"""One dataset from several trajectory files: an import and a `generate` recipe, or two
imports. The header lists every part's own header provenance (`generator.parts`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poke_tune.data.jsonl import TrajectoryWriter, open_trajectories, read_header
from poke_tune.data.records import DatasetError, DatasetHeader, TrajectoryRecord

__all__ = ["CombinedDataset", "combine_datasets"]


@dataclass(frozen=True)
class CombinedDataset:
    """What `combine_datasets` wrote."""

    path: Path
    header: DatasetHeader
    trajectories: int
    repeats_dropped: int
    """Trajectories already in an earlier part (the same decisions, whatever their ids)."""


def _decisions_digest(record: TrajectoryRecord) -> bytes:
    """The same player's same decisions in the same battle, whatever the labels around them
    (policy, provenance, replay id): two imports of one server log, or a log and its replay."""
    digest = hashlib.blake2b(record.player.encode(), digest_size=16)
    for step in record.steps:
        digest.update(np.asarray(step.observation, dtype=np.float32).tobytes())
        digest.update(bytes((step.action_type, step.action_target)))
    return digest.digest()


_MUST_AGREE = ("encoder_version", "observation_size", "action_layout", "num_actions")


def combine_datasets(parts: Sequence[Path], out: Path) -> CombinedDataset:
    """Write the trajectories of `parts`, in order, to `out`.

    The parts must agree on encoder, action layout, sizes and battle format (a
    `DatasetError` names the first part that does not). Each replay id gets its part's
    index as a prefix (`0/...`, `1/...`): two sources may number battles alike. A
    trajectory already written from an earlier part is dropped and counted (overlapping
    imports would otherwise weigh a battle twice and could put it on both sides of the split).
    """
    if not parts:
        raise ValueError("combine_datasets needs at least one part")
    headers = [read_header(part) for part in parts]
    first = headers[0]
    for part, header in zip(parts, headers, strict=True):
        for name in (*_MUST_AGREE, "battle_format"):
            if getattr(header, name) != getattr(first, name):
                raise DatasetError(
                    part,
                    1,
                    f"header.{name}",
                    f"{getattr(header, name)!r}, but {parts[0]} has {getattr(first, name)!r}: "
                    "combined parts must agree",
                )
    combined = first.model_copy(
        update={
            "generator": {
                "parts": [
                    {"path": str(part), "generator": header.generator}
                    for part, header in zip(parts, headers, strict=True)
                ]
            }
        }
    )
    seen: set[bytes] = set()
    written = dropped = 0
    with TrajectoryWriter(out, combined) as writer:
        for index, part in enumerate(parts):
            with open_trajectories(part) as (_, records):
                for _, record in records:
                    digest = _decisions_digest(record)
                    if digest in seen:
                        dropped += 1
                        continue
                    seen.add(digest)
                    replay_id = f"{index}/{record.replay_id}"
                    writer.write(record.model_copy(update={"replay_id": replay_id}))
                    written += 1
    return CombinedDataset(out, combined, written, dropped)
