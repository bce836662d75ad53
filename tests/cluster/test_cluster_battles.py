"""Battles on the whole cluster: generation and a race played as Ray tasks on the two-node
local cluster (conftest.py) give the same bytes and numbers as the local pool."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from poke_tune.data.compiled import load_dataset
from poke_tune.data.generate import generate_dataset, generate_shards
from poke_tune.eval.race import race
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.cluster_battles import RayBattles, RayShards, cluster_play, cluster_shards
from poke_tune.tuning.policies import resolve_policy
from tests.cluster.conftest import LocalCluster, driver_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def driver(cluster: LocalCluster) -> Iterator[LocalCluster]:
    with driver_of(cluster):
        yield cluster


def _two_node_play() -> RayBattles:
    play = cluster_play()
    assert isinstance(play, RayBattles), "a two-node Ray must give Ray tasks"
    return play


def test_generation_on_two_nodes_is_byte_identical_to_local(
    driver: LocalCluster, learned_checkpoint: Path, tmp_path: Path
) -> None:
    """A learned policy (a checkpoint, sampling) plays too: it travels as an object."""
    local, spread = tmp_path / "local.jsonl.gz", tmp_path / "spread.jsonl.gz"
    kwargs = {
        "policies": ["random", "max-damage:softmax=0.3", f"{learned_checkpoint}:softmax=0.5"],
        "battles": 24,
        "seed": 11,
        "resolver": resolve_policy,
    }
    generate_dataset(local, **kwargs)  # type: ignore[arg-type]
    play = _two_node_play()
    summary = generate_dataset(spread, play=play, **kwargs)  # type: ignore[arg-type]
    assert summary.battles == 24 and summary.failed_battles == 0
    assert len(play.played_on) == 2, f"battles per node: {dict(play.played_on)}"
    assert sum(play.played_on.values()) == 24
    assert gzip.decompress(local.read_bytes()) == gzip.decompress(spread.read_bytes())


def test_shards_generated_on_two_nodes_are_the_local_shards(
    driver: LocalCluster, tmp_path: Path
) -> None:
    """Each node writes the shards of the battles it played; the manifest is the local one."""
    kwargs = {"policies": ["random", "max-damage"], "battles": 8, "seed": 12}
    store = tmp_path / "shards"
    generate_shards(tmp_path / "local.json", store=store, battles_per_shard=2, **kwargs)  # type: ignore[arg-type]
    play_shards = cluster_shards()
    assert isinstance(play_shards, RayShards), "a two-node Ray must give Ray tasks"
    summary = generate_shards(
        tmp_path / "spread.json",
        store=tmp_path / "spread-shards",
        battles_per_shard=2,
        play_shards=play_shards,
        **kwargs,  # type: ignore[arg-type]
    )
    assert summary.battles == 8 and summary.failed_battles == 0
    assert len(play_shards.played_on) == 2, f"battles per node: {dict(play_shards.played_on)}"
    local, spread = load_dataset(tmp_path / "local.json"), load_dataset(tmp_path / "spread.json")
    assert [s.key for s in spread.shards] == [s.key for s in local.shards]
    assert all(s.folder.parent == tmp_path / "spread-shards" for s in spread.shards)


def test_a_race_on_two_nodes_gives_the_local_numbers(driver: LocalCluster) -> None:
    candidates = {"md": make_policy("max-damage:eps=0.2"), "heur": make_policy("heuristic")}
    always = {"rand": make_policy("random")}
    opponent = make_policy("max-damage")
    kwargs = {"battles": 8, "seed": 5, "rounds": 2, "max_turns": 200}
    local = race(candidates, always, opponent, **kwargs)  # type: ignore[arg-type]
    play = _two_node_play()
    spread = race(candidates, always, opponent, play=play, **kwargs)  # type: ignore[arg-type]
    assert len(play.played_on) == 2, f"battles per node: {dict(play.played_on)}"
    assert spread.stopped == local.stopped
    untimed = {name: replace(r, seconds=0.0) for name, r in local.results.items()}
    assert {name: replace(r, seconds=0.0) for name, r in spread.results.items()} == untimed
