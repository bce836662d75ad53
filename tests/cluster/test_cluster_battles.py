"""Battles on the whole cluster: generation and a race played as Ray tasks on the two-node
local cluster (conftest.py) give the same bytes and numbers as the local pool."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset, generate_shards
from poke_tune.data.importer import REPEATED, import_battles
from poke_tune.eval.race import race
from poke_tune.sim.battle_records import BattleResult
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.cluster_battles import RayBattles, RayShards, cluster_play, cluster_shards
from poke_tune.tuning.cluster_import import ImportSettings, import_on_cluster
from poke_tune.tuning.policies import resolve_policy
from tests.cluster.conftest import LocalCluster, driver_of
from tests.data.test_importer import server_log

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


def test_an_import_on_two_nodes_holds_what_a_local_import_holds(
    driver: LocalCluster, tmp_path: Path
) -> None:
    """Groups of files imported on both nodes, compiled there; a battle in two groups (a
    copied log) is kept once, as the local import keeps it."""
    results: list[BattleResult] = []
    generate_dataset(
        tmp_path / "played.jsonl",
        policies=["random", "max-damage"],
        battles=5,
        seed=13,
        on_result=results.append,
        keep_logs=True,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    for result in results:
        (logs / f"{result.spec.index}.log.json").write_text(json.dumps(server_log(result)))
    shutil.copy(logs / "0.log.json", logs / "9.log.json")  # sorts last: another group
    local = import_battles([logs], tmp_path / "local.jsonl.gz")
    assert local.refused_by_reason() == {REPEATED: 1}
    spread = import_on_cluster(
        [logs], tmp_path / "spread.json", tmp_path / "parts", ImportSettings(), groups=2
    )
    assert len(spread.nodes) == 2, f"groups per node: {dict(spread.nodes)}"
    assert (spread.read, spread.imported, spread.repeats_dropped) == (6, 6, 2)

    def kept(dataset: OfflineDataset) -> list[str]:
        labels = [label["digest"] for shard in dataset.shards for label in shard.labels()]
        return [d for d, out in zip(labels, dataset.excluded, strict=True) if not out]

    local_data = load_dataset(tmp_path / "local.jsonl.gz")
    spread_data = load_dataset(tmp_path / "spread.json")
    assert kept(spread_data) == kept(local_data)
    assert spread_data.num_trajectories == local_data.num_trajectories


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
