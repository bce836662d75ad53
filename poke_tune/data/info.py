"""Summary statistics of a compiled dataset, read shard by shard (`poke-tune data info`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from poke_tune.data.compiled import OfflineDataset
from poke_tune.data.records import ACTION_TYPES
from poke_tune.sim.actions import action_parts

__all__ = ["dataset_info"]


def dataset_info(dataset: OfflineDataset) -> dict[str, Any]:
    """Summary statistics of a compiled dataset (for `poke-tune data info` and logs),
    read shard by shard.

    Outcomes (`wins`/`losses`/`draws`) count trajectories that ended in a real terminal by
    the sign of their last step's reward, which holds the battle result; this assumes any
    reward shaping on that step is smaller than the +-1 outcome. Cut-off trajectories are
    counted apart, under `truncated`. Repeats excluded by a combined manifest are left out.
    """
    kept = ~dataset.excluded
    count, transitions = dataset.num_trajectories, dataset.num_transitions
    ends = dataset.trajectory_starts[1:][kept] - 1
    _, final_rewards, _ = dataset.transitions_at(ends)
    finished = ~dataset.trajectory_truncated[kept]
    returns = dataset.trajectory_returns[kept].astype(np.float64)
    action_counts = np.zeros(dataset.num_actions, dtype=np.int64)
    legal = 0
    first = 0
    for shard in dataset.shards:
        lengths = np.asarray(shard.arrays["lengths"])
        keep = np.repeat(kept[first : first + len(lengths)], lengths)
        first += len(lengths)
        actions = np.asarray(shard.arrays["actions"])[keep]
        action_counts += np.bincount(actions, minlength=dataset.num_actions)
        rows = np.arange(len(keep)) + np.repeat(np.arange(len(lengths)), lengths)
        legal += int(shard.masks(rows[keep]).sum())
    by_type = np.zeros(len(ACTION_TYPES))
    for index, frequency in enumerate(action_counts):
        by_type[action_parts(index)[0]] += frequency
    policies = np.asarray(dataset.policies)[kept]
    return {
        "path": str(dataset.source),
        "key": dataset.key,
        "size_bytes": dataset.size_bytes,
        "cache_bytes": dataset.nbytes(),
        "cache_bytes_per_transition": dataset.nbytes() / transitions,
        "shards": len(dataset.shards),
        "encoder_version": dataset.header.encoder_version,
        "action_layout": dataset.header.action_layout,
        "battle_format": dataset.header.battle_format,
        "battles": dataset.num_battles,
        "trajectories": count,
        "transitions": transitions,
        "mean_steps_per_trajectory": transitions / count,
        "truncated_fraction": float(np.mean(~finished)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "wins": int(np.sum(finished & (final_rewards > 0))),
        "losses": int(np.sum(finished & (final_rewards < 0))),
        "draws": int(np.sum(finished & (final_rewards == 0))),
        "truncated": int(np.sum(~finished)),
        "action_frequency": (action_counts / transitions).tolist(),
        "action_type_frequency": dict(
            zip(ACTION_TYPES, (by_type / transitions).tolist(), strict=True)
        ),
        "mean_legal_actions": legal / transitions,
        "policies": dict(sorted(Counter(policies.tolist()).items())),
    }
