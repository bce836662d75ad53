"""Battles in chunks (the cluster's Ray tasks' plan) give the same results as one pool:
chunks played on separate pools and handed back out of order, like Ray tasks finishing on
different nodes. The Ray tasks themselves run in tests/cluster/test_cluster_battles.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from poke_tune.data.generate import generate_dataset
from poke_tune.eval.race import race
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.battle_records import BattleResult, BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.cluster_battles import CLUSTER_BATTLES_ENV, chunk_plan, cluster_play


@pytest.mark.parametrize(("count", "chunks"), [(1, 4), (7, 3), (24, 4), (5, 5), (10, 1)])
def test_chunk_plan_splits_consecutive_runs_that_reassemble_in_order(
    count: int, chunks: int
) -> None:
    plan = chunk_plan(count, chunks)
    assert len(plan) == min(count, chunks)
    assert [i for part in plan for i in part] == list(range(count))
    assert max(map(len, plan)) - min(map(len, plan)) <= 1


def test_without_ray_the_callers_keep_their_local_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cluster_play() is None  # Ray is not started in the fast lane
    monkeypatch.setenv(CLUSTER_BATTLES_ENV, "1")
    assert cluster_play() is None  # forcing needs a started Ray


class ChunkedPlay:
    """Plays each chunk of `chunk_plan` on its own (a task on some node), on one reused
    one-worker pool to keep the test fast, and yields the chunks last first."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.calls = 0

    def __call__(
        self, specs: Sequence[BattleSpec], *, keep_logs: bool = False
    ) -> Iterator[BattleResult]:
        self.calls += 1
        done = []
        with SimulatorPool(num_workers=1) as pool:
            for positions in chunk_plan(len(specs), self.chunks):
                done.append(list(pool.play([specs[i] for i in positions], keep_logs=keep_logs)))
        for results in reversed(done):
            yield from results


def test_generation_in_chunks_is_byte_identical(tmp_path: Path) -> None:
    local, chunked = tmp_path / "local.jsonl", tmp_path / "chunked.jsonl"
    kwargs = {"policies": ["random", "max-damage:softmax=0.3"], "battles": 6, "seed": 3}
    generate_dataset(local, **kwargs)  # type: ignore[arg-type]
    play = ChunkedPlay(chunks=3)
    generate_dataset(chunked, play=play, **kwargs)  # type: ignore[arg-type]
    assert play.calls == 1
    assert local.read_bytes() == chunked.read_bytes()


def test_evaluation_in_chunks_gives_the_same_numbers() -> None:
    policy, opponent = make_policy("max-damage:eps=0.2"), make_policy("random")
    local = evaluate(policy, opponent, battles=6, seed=4, first=2)
    chunked = evaluate(policy, opponent, battles=6, seed=4, first=2, play=ChunkedPlay(4))
    assert local.won == chunked.won
    assert local.mean_turns == chunked.mean_turns and local.wins == chunked.wins


@pytest.mark.slow
def test_a_race_in_chunks_gives_the_same_numbers() -> None:
    opponent = make_policy("random")
    entrants = {"md": make_policy("max-damage"), "rand": make_policy("random")}
    kwargs = {"battles": 4, "seed": 5, "rounds": 2, "max_turns": 200}
    raced = race(entrants, {}, opponent, **kwargs)  # type: ignore[arg-type]
    raced_chunked = race(entrants, {}, opponent, play=ChunkedPlay(2), **kwargs)  # type: ignore[arg-type]
    assert raced.stopped == raced_chunked.stopped
    for name, result in raced.results.items():
        other = raced_chunked.results[name]
        assert (result.won, result.mean_turns) == (other.won, other.mean_turns)


def test_a_named_cluster_is_connected_before_the_dataset_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from poke_tune.tuning.search import search

    calls: list[str | None] = []
    monkeypatch.setattr(search, "init_ray", calls.append)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not search.connect_named_cluster(None) and calls == []  # a local sweep: later
    assert search.connect_named_cluster("10.0.0.1:6379") and calls == ["10.0.0.1:6379"]
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a Ray Job's driver
    assert search.connect_named_cluster(None) and calls[-1] is None
