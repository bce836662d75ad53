"""A small synthetic trajectory file for fast tests: no simulator, compiled in milliseconds.

Observations are Gaussian noise; the legal-action mask is random (never empty); the data
action is the legal action with the largest of the first NUM_ACTIONS observation features
80% of the time (so BC has something to learn), else a random legal one. Trajectories end
in +1 or -1 (a win or a loss); every fourth is cut off (truncated, with a final
observation), like battles at the turn limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from poke_tune.data.jsonl import write_trajectories
from poke_tune.data.records import DatasetHeader
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_parts
from poke_tune.sim.encoding import ENCODER_VERSION

__all__ = ["OBSERVATION_SIZE", "synthetic_header", "synthetic_records", "write_synthetic"]

OBSERVATION_SIZE = 32


def synthetic_header(
    observation_size: int = OBSERVATION_SIZE, *, encoder_version: str = ENCODER_VERSION
) -> DatasetHeader:
    """A dataset header with the action layout; by default one this poke-tune accepts
    (the current encoder version)."""
    return DatasetHeader(
        encoder_version=encoder_version,
        observation_size=observation_size,
        action_layout=ACTION_LAYOUT,
        num_actions=NUM_ACTIONS,
        battle_format="gen9randombattle",
        generator={"synthetic": True},
    )


def _mask(rng: np.random.Generator) -> np.ndarray:
    mask = rng.random(NUM_ACTIONS) < 0.5
    mask[rng.integers(NUM_ACTIONS)] = True
    return mask


def synthetic_records(
    trajectories: int = 24, *, seed: int = 0, observation_size: int = OBSERVATION_SIZE
) -> list[dict[str, Any]]:
    """`trajectories` records (two players per battle), 4-12 steps each."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(trajectories):
        length = int(rng.integers(4, 13))
        truncated = index % 4 == 3
        win = bool(rng.random() < 0.5)
        steps = []
        for step in range(length):
            observation = rng.normal(size=observation_size).astype(np.float32)
            mask = _mask(rng)
            legal = np.flatnonzero(mask)
            if rng.random() < 0.8:
                action = int(legal[np.argmax(observation[:NUM_ACTIONS][legal])])
            else:
                action = int(rng.choice(legal))
            action_type, action_target = action_parts(action)
            last = step == length - 1
            steps.append(
                {
                    "observation": observation.tolist(),
                    "action_type": action_type,
                    "action_target": action_target,
                    "reward": (1.0 if win else -1.0) if last and not truncated else 0.0,
                    "done": last,
                    "action_mask": mask.tolist(),
                }
            )
        total = sum(step["reward"] for step in steps)
        records.append(
            {
                "replay_id": f"synthetic-{index // 2}",
                "player": "p1" if index % 2 == 0 else "p2",
                "policy": "random" if index % 3 else "max-damage",
                "total_reward": float(total),
                "truncated": truncated,
                "steps": steps,
                "final_observation": (
                    rng.normal(size=observation_size).astype(np.float32).tolist()
                    if truncated
                    else None
                ),
                "final_action_mask": _mask(rng).tolist() if truncated else None,
            }
        )
    return records


def write_synthetic(
    path: Path,
    trajectories: int = 24,
    *,
    seed: int = 0,
    observation_size: int = OBSERVATION_SIZE,
) -> Path:
    """Write a synthetic trajectory file (`.jsonl`, or gzip for `.gz`) and return its path."""
    records = synthetic_records(trajectories, seed=seed, observation_size=observation_size)
    write_trajectories(path, synthetic_header(observation_size), records)
    return path
