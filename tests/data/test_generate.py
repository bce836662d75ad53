"""Dataset generation from real battles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from poke_tune.data.compiled import load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.data.jsonl import read_trajectories


@pytest.mark.slow
def test_same_seed_gives_a_byte_identical_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.gz"
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        generate_dataset(path, policies=["random", "max-damage"], battles=8, seed=seed)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_generated_file_loads_with_outcome_rewards(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    summary = generate_dataset(path, policies=["random", "heuristic"], battles=8, seed=1)
    assert summary.trajectories == 16 and summary.failed_battles == 0
    records = list(read_trajectories(path))
    for record in records:
        assert [s.reward for s in record.steps[:-1]] == [0.0] * (len(record.steps) - 1)
        assert record.steps[-1].reward in (1.0, -1.0, 0.0)
        assert record.total_reward == record.steps[-1].reward
    # Both players of a battle get opposite outcomes.
    by_battle: dict[str, list[float]] = {}
    for record in records:
        by_battle.setdefault(record.replay_id, []).append(record.total_reward)
    assert all(sum(rewards) == 0.0 for rewards in by_battle.values())
    dataset = load_dataset(path, cache_root=tmp_path / "cache")
    assert dataset.num_transitions == summary.transitions
    assert dataset.num_trajectories == 16


@pytest.mark.slow
def test_hp_shaping_adds_potential_differences(tmp_path: Path) -> None:
    plain, shaped = tmp_path / "plain.jsonl", tmp_path / "shaped.jsonl"
    generate_dataset(plain, policies=["max-damage"], battles=4, seed=2)
    generate_dataset(shaped, policies=["max-damage"], battles=4, seed=2, hp_shaping=0.5)
    for a, b in zip(read_trajectories(plain), read_trajectories(shaped), strict=True):
        shaping = np.array([s.reward for s in b.steps]) - np.array([s.reward for s in a.steps])
        assert np.any(shaping != 0.0)
        # Potential-based: the shaping telescopes to c * (final - initial HP balance), and
        # the initial balance is 0 (both sides full), so it is bounded by c * 2.
        assert abs(shaping.sum()) <= 0.5 * 2 + 1e-9
        assert [s.action_type for s in a.steps] == [s.action_type for s in b.steps]
