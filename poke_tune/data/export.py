"""A compiled dataset back out as a trajectory file (the interchange format), streaming one
trajectory at a time: the header (a combined manifest's lists its parts) and each
trajectory's provenance carry over, and repeats a manifest excludes are left out.

Observations, masks and actions come back exactly; rewards and returns as the float32 the
cache holds (a file written by `generate` or `import` carries float64 rewards, so an
exported file can differ from its source in the last digits of those two fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from poke_tune.data.compiled import OfflineDataset
from poke_tune.data.jsonl import TrajectoryWriter
from poke_tune.data.shards import Shard
from poke_tune.sim.actions import action_parts

__all__ = ["export_trajectories"]


def export_trajectories(dataset: OfflineDataset, out: Path) -> int:
    """Write `dataset` to the trajectory file `out` (gzip for `.gz`); returns the number of
    trajectories written."""
    written = 0
    replay_ids = dataset.replay_ids
    first = 0  # the dataset's index of the shard's first trajectory
    with TrajectoryWriter(out, dataset.header) as writer:
        for shard in dataset.shards:
            starts = np.r_[0, np.cumsum(shard.arrays["lengths"])]
            for local, label in enumerate(shard.labels()):
                if not dataset.excluded[first + local]:
                    replay_id = replay_ids[first + local]
                    writer.write(_record(shard, local, int(starts[local]), label, replay_id))
                    written += 1
            first += shard.num_trajectories
    return written


def _record(
    shard: Shard, local: int, start: int, label: dict[str, Any], replay_id: str
) -> dict[str, Any]:
    """The shard's trajectory `local`, whose first transition is `start`, as a file line."""
    arrays = shard.arrays
    length = int(arrays["lengths"][local])
    rows = np.arange(length + 1) + start + local  # one extra row per trajectory before it
    observations, masks = shard.observations(rows), shard.masks(rows)
    actions = [action_parts(int(a)) for a in arrays["actions"][start : start + length]]
    rewards = arrays["rewards"][start : start + length]
    truncated = bool(arrays["truncated"][local])
    return {
        "replay_id": replay_id,
        "player": label["player"],
        "policy": label["policy"],
        "total_reward": float(arrays["returns"][local]),
        "truncated": truncated,
        "steps": [
            {
                "observation": observations[t],
                "action_type": action_type,
                "action_target": action_target,
                "reward": float(rewards[t]),
                "done": t == length - 1,
                "action_mask": masks[t],
            }
            for t, (action_type, action_target) in enumerate(actions)
        ],
        "final_observation": observations[-1] if truncated else None,
        "final_action_mask": masks[-1] if truncated else None,
        "provenance": label["provenance"],
    }
