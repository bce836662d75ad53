"""Dataset generation from real battles."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from poke_tune.data.compiled import load_dataset
from poke_tune.data.generate import (
    PlayShards,
    ShardRecipe,
    ShardSummary,
    generate_dataset,
    generate_shards,
    play_shard,
)
from poke_tune.data.jsonl import read_header, read_trajectories
from poke_tune.data.league import League
from poke_tune.sim.battle_records import BattleSpec
from poke_tune.sim.battles import SimulatorPool


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


def test_shards_hold_what_compiling_the_generated_file_holds(tmp_path: Path) -> None:
    # The same battles, straight into shards of 3 battles: the same transitions in the
    # same order as the trajectory file compiled, and one shard for all of them carries
    # the compiled file's key (the very same content).
    recipe = {"policies": ["random", "max-damage"], "battles": 7, "seed": 3, "hp_shaping": 0.5}
    generate_dataset(tmp_path / "d.jsonl", **recipe)
    compiled = load_dataset(tmp_path / "d.jsonl", cache_root=tmp_path / "cache")
    store = tmp_path / "cache" / "shards"
    summary = generate_shards(tmp_path / "d.json", store=store, battles_per_shard=3, **recipe)
    sharded = load_dataset(tmp_path / "d.json")
    assert len(sharded.shards) == 3 and summary.battles == 7
    assert summary.transitions == sharded.num_transitions == compiled.num_transitions
    assert sharded.header == compiled.header
    assert sharded.replay_ids == compiled.replay_ids
    rows = np.arange(sharded.num_transitions + sharded.num_trajectories)
    np.testing.assert_array_equal(sharded.observations_at(rows), compiled.observations_at(rows))
    np.testing.assert_array_equal(sharded.masks_at(rows), compiled.masks_at(rows))
    np.testing.assert_array_equal(sharded.trajectory_returns, compiled.trajectory_returns)
    whole = generate_shards(tmp_path / "w.json", store=store, battles_per_shard=7, **recipe)
    assert load_dataset(whole.path).shards[0].key == compiled.shards[0].key


def test_shards_are_written_by_whoever_plays_them(tmp_path: Path) -> None:
    # A `play_shards` seam (as the Ray tasks are) gets the chunks and the recipe and
    # builds each shard itself: the manifest lists them in battle order, whatever order
    # they finish in.
    seen: list[list[int]] = []

    def backwards(
        chunks: Sequence[Sequence[BattleSpec]], recipe: ShardRecipe
    ) -> Iterator[tuple[int, ShardSummary]]:
        with SimulatorPool(num_workers=1) as pool:
            for number in reversed(range(len(chunks))):
                seen.append([spec.index for spec in chunks[number]])
                yield number, play_shard(chunks[number], recipe, pool.play)

    args = {"policies": ["random"], "battles": 5, "seed": 4, "store": tmp_path / "shards"}
    generate_shards(tmp_path / "a.json", battles_per_shard=2, play_shards=backwards, **args)
    generate_shards(tmp_path / "b.json", battles_per_shard=2, **args)
    assert seen == [[4], [2, 3], [0, 1]]
    a, b = load_dataset(tmp_path / "a.json"), load_dataset(tmp_path / "b.json")
    assert [s.key for s in a.shards] == [s.key for s in b.shards]
    assert a.replay_ids == tuple(f"gen9randombattle-4-{i}" for i in range(5) for _ in (1, 2))


def _played_into(played: list[list[int]], stop_at: int | None = None) -> PlayShards:
    def play_shards(
        chunks: Sequence[Sequence[BattleSpec]], recipe: ShardRecipe
    ) -> Iterator[tuple[int, ShardSummary]]:
        with SimulatorPool(num_workers=1) as pool:
            for number, chunk in enumerate(chunks):
                if number == stop_at:
                    raise KeyboardInterrupt  # stopped while this shard plays
                played.append([spec.index for spec in chunk])
                yield number, play_shard(chunk, recipe, pool.play)

    return play_shards


def test_a_stopped_generation_plays_only_the_shards_it_lacks(tmp_path: Path) -> None:
    args = {"policies": ["random"], "battles": 6, "store": tmp_path / "s", "battles_per_shard": 2}
    played: list[list[int]] = []
    with pytest.raises(KeyboardInterrupt):
        generate_shards(tmp_path / "a.json", seed=5, play_shards=_played_into(played, 1), **args)
    assert not (tmp_path / "a.json").exists() and played == [[0, 1]]
    generate_shards(tmp_path / "a.json", seed=5, play_shards=_played_into(played), **args)
    assert played == [[0, 1], [2, 3], [4, 5]]
    assert not (tmp_path / "a.json.progress.jsonl").exists()
    whole = generate_shards(tmp_path / "whole.json", seed=5, **args)
    shards = [s.key for s in load_dataset(tmp_path / "a.json").shards]
    assert shards == [s.key for s in load_dataset(whole.path).shards]
    # Another recipe under the same name plays all its battles.
    with pytest.raises(KeyboardInterrupt):
        generate_shards(tmp_path / "c.json", seed=5, play_shards=_played_into([], 1), **args)
    again: list[list[int]] = []
    generate_shards(tmp_path / "c.json", seed=6, play_shards=_played_into(again), **args)
    assert again == [[0, 1], [2, 3], [4, 5]]


def test_a_league_draws_each_battle_and_the_header_says_so(tmp_path: Path) -> None:
    league = League(learners=1, learner_share=0.75, weights=(1.0, 3.0, 1.0), policies=3)
    policies = ["max-damage:softmax=0.1", "random", "heuristic"]
    generate_dataset(tmp_path / "l.jsonl", policies=policies, battles=8, seed=6, league=league)
    generator = read_header(tmp_path / "l.jsonl").generator
    assert generator["league"] == {
        "learners": policies[:1],
        "pool": policies[1:],
        "learner_share": 0.75,
        "weights": [1.0, 3.0, 1.0],
    }
    played: dict[str, dict[str, str]] = {}
    for record in read_trajectories(tmp_path / "l.jsonl"):
        played.setdefault(record.replay_id, {})[record.player] = record.policy
    for i in range(8):
        p1, p2 = league.matchup(6, i)
        assert played[f"gen9randombattle-6-{i}"] == {"p1": policies[p1], "p2": policies[p2]}
