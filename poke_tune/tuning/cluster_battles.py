"""Battles on the whole cluster: data generation and confirmation battles as Ray tasks.

On a Ray cluster of more than one node, `cluster_play()` gives a `PlayBattles` (the seam of
`generate_dataset`, `evaluate` and `race`) that splits the battles into chunks of
consecutive indices and plays each chunk as a Ray task (one CPU, a one-worker
`SimulatorPool` on whichever node Ray picks). A battle is fixed by its spec (the seed and
index give the simulator's seeds, `battle_seeds`, and the policies' RNGs,
`BattleSpec.policy_rng`), so a battle played on another node is the same battle: the
callers put results back in index order and write the same dataset bytes and the same
confirmation numbers as the local pool.

Policies travel as objects: each distinct policy of a call is pickled into the object
store once (`ray.put`) and every task reads it from there. Built-ins are a few bytes; a
learned policy is its network (a small MLP), so no node needs the checkpoint file, shared
storage or the MLflow registry. A spec's policies are swapped for name-only stand-ins
before its result travels back, and the driver puts its own specs back in.

Generated datasets go one step further (`cluster_shards()`): each Ray task plays a chunk of
battles and writes it as a shard (`generate_shards`) into the shard store on storage every
node sees, so only a shard's summary travels back and the driver writes the manifest.

Without Ray, or on a one-node Ray, `cluster_play()` is None and the callers keep their
local pool, unchanged. `POKE_TUNE_CLUSTER_BATTLES=1` forces the Ray tasks on any Ray that
is started (tests, benchmarks), `=0` turns them off. Ray is imported only once it is
already loaded (a Ray that is not imported is not started), so confirming or generating
without Ray loads none.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from poke_tune.data.generate import PlayShards, ShardRecipe, ShardSummary, play_shard
from poke_tune.sim.battle_records import BattleResult, BattleSpec, PlayBattles
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import PlayerView, Policy

__all__ = [
    "CLUSTER_BATTLES_ENV",
    "RayBattles",
    "RayShards",
    "chunk_plan",
    "cluster_play",
    "cluster_shards",
    "in_completion_order",
    "on_cluster",
]

_logger = logging.getLogger(__name__)
_Key = TypeVar("_Key")

CLUSTER_BATTLES_ENV = "POKE_TUNE_CLUSTER_BATTLES"
"""`1`: play battles as Ray tasks whenever Ray is started; `0`: never; unset: on a Ray of
more than one node."""

CHUNKS_PER_CPU = 2
"""Chunks per cluster CPU: enough to even out slow and fast chunks, few enough that each
task's worker start (about a second) stays small next to its battles."""


def chunk_plan(count: int, chunks: int) -> list[range]:
    """Positions `0 .. count - 1` split into at most `chunks` near-equal runs of consecutive
    positions, in order: concatenated, they are `range(count)` again."""
    chunks = max(1, min(chunks, count))
    edges = [count * c // chunks for c in range(chunks + 1)]
    return [range(a, b) for a, b in itertools.pairwise(edges) if b > a]


def on_cluster() -> bool:
    """Ray is started and has more than one node (or `POKE_TUNE_CLUSTER_BATTLES=1`)."""
    setting = os.environ.get(CLUSTER_BATTLES_ENV, "")
    if setting == "0" or "ray" not in sys.modules:
        return False
    import ray

    if not ray.is_initialized():
        return False
    return setting == "1" or sum(1 for node in ray.nodes() if node.get("Alive")) > 1


def cluster_play(*, chunks: int | None = None) -> PlayBattles | None:
    """Ray tasks that play battles over the cluster, when Ray is started and has more than
    one node (or `POKE_TUNE_CLUSTER_BATTLES=1`); None for the local pool."""
    return RayBattles(chunks=chunks) if on_cluster() else None


def cluster_shards() -> PlayShards | None:
    """Ray tasks that each play a chunk of generated battles and write it as a shard on
    their node (`generate_shards`), under the same conditions as `cluster_play`; None
    for the local pool. The shard store must be storage every node and the driver see."""
    return RayShards() if on_cluster() else None


@dataclass(frozen=True)
class _Named:
    """A policy's stand-in on a result's way back: its name only."""

    name: str

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        raise RuntimeError(f"{self.name!r} is a name-only stand-in: it cannot play")


class RayBattles:
    """`PlayBattles` as Ray tasks, one per chunk of consecutive battles; `played_on` counts
    the battles each node played (by node id)."""

    def __init__(self, *, chunks: int | None = None) -> None:
        self.chunks = chunks
        self.played_on: Counter[str] = Counter()

    def __call__(
        self, specs: Sequence[BattleSpec], *, keep_logs: bool = False
    ) -> Iterator[BattleResult]:
        if not specs:
            return iter(())
        return self._play(list(specs), keep_logs)

    def _play(self, specs: list[BattleSpec], keep_logs: bool) -> Iterator[BattleResult]:
        import ray

        chunks = self.chunks or CHUNKS_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
        refs = _policy_refs(specs)
        pending = {
            _remote_chunk().remote(
                [_wire(specs[i], refs) for i in positions], keep_logs
            ): positions
            for positions in chunk_plan(len(specs), chunks)
        }
        _logger.info("playing %d battles as %d Ray tasks", len(specs), len(pending))
        for positions, (node, results) in in_completion_order(pending):
            self.played_on[node] += len(results)
            for position, result in zip(positions, results, strict=True):
                yield replace(result, spec=specs[position])


class RayShards:
    """`PlayShards` as Ray tasks, one per chunk: each plays its battles in a one-worker pool
    and writes their shard where it ran; only the shard's summary travels back."""

    def __init__(self) -> None:
        self.played_on: Counter[str] = Counter()

    def __call__(
        self, chunks: Sequence[Sequence[BattleSpec]], recipe: ShardRecipe
    ) -> Iterator[tuple[int, ShardSummary]]:
        refs = _policy_refs([spec for chunk in chunks for spec in chunk])
        pending = {
            _remote_shard().remote([_wire(spec, refs) for spec in chunk], recipe): number
            for number, chunk in enumerate(chunks)
        }
        _logger.info("generating %d shards as Ray tasks", len(pending))
        for number, (node, summary) in in_completion_order(pending):
            self.played_on[node] += summary.battles
            yield number, summary


def in_completion_order(pending: dict[Any, _Key]) -> Iterator[tuple[_Key, Any]]:
    """Each Ray task's key and value as the task finishes. The tasks still running are
    cancelled when the caller stops early (an error, a closed generator)."""
    import ray

    try:
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done), ray.get(done)
    finally:
        for ref in pending:
            ray.cancel(ref)


def _policy_refs(specs: Sequence[BattleSpec]) -> dict[int, Any]:
    """One object in the store per distinct policy of `specs` (by identity)."""
    import ray

    refs: dict[int, Any] = {}
    for spec in specs:
        for policy in (spec.p1, spec.p2):
            if id(policy) not in refs:
                refs[id(policy)] = ray.put(policy)
    return refs


def _wire(spec: BattleSpec, refs: dict[int, Any]) -> dict[str, Any]:
    """A spec as a task argument: the policies as object refs, inside a dict so that Ray
    passes the refs through instead of resolving them (the task gets each policy once)."""
    return {
        "spec": replace(spec, p1=_Named(spec.p1.name), p2=_Named(spec.p2.name)),
        "p1": refs[id(spec.p1)],
        "p2": refs[id(spec.p2)],
    }


@functools.cache
def _remote_chunk() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_play_chunk)


@functools.cache
def _remote_shard() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_build_shard)


def _unwire(wired: list[dict[str, Any]]) -> list[BattleSpec]:
    """The chunk's specs with their policies read from the object store, each once."""
    import ray

    policies: dict[Any, Policy] = {}

    def policy(ref: Any) -> Policy:
        if ref not in policies:
            policies[ref] = ray.get(ref)
        return policies[ref]

    return [replace(w["spec"], p1=policy(w["p1"]), p2=policy(w["p2"])) for w in wired]


def _build_shard(wired: list[dict[str, Any]], recipe: ShardRecipe) -> tuple[str, ShardSummary]:
    """Play one chunk on this node and write its shard into the recipe's store."""
    import ray

    with SimulatorPool(num_workers=1) as pool:
        summary = play_shard(_unwire(wired), recipe, pool.play)
    return ray.get_runtime_context().get_node_id(), summary


def _play_chunk(wired: list[dict[str, Any]], keep_logs: bool) -> tuple[str, list[BattleResult]]:
    """Play one chunk on this node; the results in the chunk's order, their specs with
    name-only policies."""
    import ray

    specs = _unwire(wired)
    with SimulatorPool(num_workers=1) as pool:
        by_index = {r.spec.index: r for r in pool.play(specs, keep_logs=keep_logs)}
    results = [
        replace(by_index[s.index], spec=w["spec"]) for s, w in zip(specs, wired, strict=True)
    ]
    return ray.get_runtime_context().get_node_id(), results
