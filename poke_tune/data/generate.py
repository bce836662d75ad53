"""`poke-tune data generate`: play seeded battles between behaviour policies and record
every player's trajectory in the trajectory-JSONL format (see `jsonl.py`).

Reward: +1 for a win and -1 for a loss on the last step (0 for a tie or a cut-off
battle). With `hp_shaping = c > 0`, each step also earns c times the change in HP
balance ((own HP - opponent HP) / 6, public HP fractions, unrevealed Pokemon counted
full) between this decision and the next one (or the battle's end). Off by default:
shaping changes the optimal policy unless it is potential-based; this one is
potential-based with gamma = 1.

Behaviour policies are named (`policies`) and built by a resolver: the built-ins by
default (`sim.policies.make_policy`); the tuning layer hands down the one that also loads
checkpoints and registered models (`poke_tune.tuning.policies.resolve_policy`). A policy
whose name is a file (a checkpoint) is recorded with the SHA-256 of its bytes
(`policy_file_digests`), in the header and in a recipe's cache key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from poke_tune.data.compiled import write_manifest
from poke_tune.data.jsonl import TrajectoryWriter
from poke_tune.data.league import League
from poke_tune.data.records import DatasetHeader, TrajectoryRecord
from poke_tune.data.shards import ShardBuilder, open_shard
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_parts
from poke_tune.sim.battle_records import BattleResult, BattleSpec, PlayBattles, Trajectory
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import load_dex
from poke_tune.sim.encoding import ENCODER_VERSION, ObservationEncoder
from poke_tune.sim.policies import Policy, make_policy, split_policy_name

__all__ = [
    "BATTLES_PER_SHARD",
    "GenerationSummary",
    "PlayShards",
    "ShardRecipe",
    "ShardSummary",
    "generate_dataset",
    "generate_shards",
    "play_shard",
    "policy_file_digests",
    "trajectory_record",
]

_logger = logging.getLogger(__name__)

BATTLES_PER_SHARD = 2_000
"""Battles per generated shard (about 150,000 transitions, 37 MB): a Ray task's worth of
battles (a few minutes on one core), and few shards for a batch to gather from."""


@dataclass(frozen=True)
class GenerationSummary:
    """What a generation run wrote."""

    path: Path
    battles: int
    trajectories: int
    transitions: int
    failed_battles: int
    truncated_battles: int


def trajectory_record(
    trajectory: Trajectory, replay_id: str, hp_shaping: float = 0.0
) -> dict[str, Any]:
    """One trajectory-JSONL line (as a dict) from a recorded `Trajectory`."""
    balances = [*trajectory.hp_balance, trajectory.final_hp_balance]
    rewards = hp_shaping * np.diff(np.asarray(balances, dtype=np.float64))
    rewards[-1] += trajectory.outcome
    last = len(trajectory.actions) - 1
    steps = []
    for t, (observation, mask, action) in enumerate(
        zip(trajectory.observations, trajectory.masks, trajectory.actions, strict=True)
    ):
        action_type, action_target = action_parts(action)
        steps.append(
            {
                "observation": observation,
                "action_type": action_type,
                "action_target": action_target,
                "reward": float(rewards[t]),
                "done": t == last,
                "action_mask": mask,
            }
        )
    truncated = trajectory.final_observation is not None
    return {
        "replay_id": replay_id,
        "player": trajectory.side,
        "policy": trajectory.policy,
        "total_reward": float(rewards.sum()),
        "truncated": truncated,
        "steps": steps,
        "final_observation": trajectory.final_observation if truncated else None,
        "final_action_mask": trajectory.final_mask if truncated else None,
    }


def policy_file_digests(policies: Sequence[str]) -> dict[str, str]:
    """The SHA-256 of each policy whose name (less its exploration suffix) is a file: what
    a checkpoint's path alone cannot say (the file can be overwritten)."""
    digests = {}
    for name in policies:
        path = Path(split_policy_name(name)[0])
        if path.is_file():
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _battle_specs(
    built: Sequence[Policy],
    battles: int,
    seed: int,
    battle_format: str,
    max_turns: int,
    league: League | None,
) -> list[BattleSpec]:
    """Battle i is played by the i-th ordered pair of the policies (cycling through all
    pairs, mirror matches included), or by the league's draw for it; both sides recorded."""
    pairs = list(itertools.product(range(len(built)), repeat=2))
    matchups = [
        league.matchup(seed, i) if league is not None else pairs[i % len(pairs)]
        for i in range(battles)
    ]
    return [
        BattleSpec(
            index=i,
            p1=built[matchups[i][0]],
            p2=built[matchups[i][1]],
            seed=seed,
            battle_format=battle_format,
            max_turns=max_turns,
            record=(True, True),
        )
        for i in range(battles)
    ]


def _header(
    policies: Sequence[str],
    battles: int,
    seed: int,
    battle_format: str,
    max_turns: int,
    hp_shaping: float,
    league: League | None,
) -> DatasetHeader:
    generator: dict[str, Any] = {
        "policies": list(policies),
        "battles": battles,
        "seed": seed,
        "max_turns": max_turns,
        "hp_shaping": hp_shaping,
    }
    if league is not None:  # only then: the headers of all-pairs recipes stay as they were
        generator["league"] = league.describe(list(policies))
    digests = policy_file_digests(policies)
    if digests:  # only then: the headers of built-in recipes stay as they were
        generator["policy_files"] = digests
    return DatasetHeader(
        format_version=1,
        encoder_version=ENCODER_VERSION,
        observation_size=ObservationEncoder(load_dex(battle_format)).size,
        action_layout=ACTION_LAYOUT,
        num_actions=NUM_ACTIONS,
        battle_format=battle_format,
        generator=generator,
    )


def _in_battle_order(results: Iterable[BattleResult], first: int) -> Iterator[BattleResult]:
    """Results arrive in completion order; a small reorder buffer yields them in battle
    order from battle `first`, so the same seed gives the same bytes (and cache key)."""
    waiting: dict[int, BattleResult] = {}
    next_index = first
    for result in results:
        waiting[result.spec.index] = result
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1


@dataclass
class _Counts:
    battles: int = 0
    trajectories: int = 0
    transitions: int = 0
    failed: int = 0
    truncated: int = 0

    def records(
        self, result: BattleResult, battle_format: str, seed: int, hp_shaping: float
    ) -> Iterator[dict[str, Any]]:
        """The battle's trajectory records (none for a failed battle), counted."""
        self.battles += 1
        if result.error is not None:
            self.failed += 1
            return
        self.truncated += result.truncated
        replay_id = f"{battle_format}-{seed}-{result.spec.index}"
        for trajectory in result.trajectories.values():
            if trajectory.actions:
                self.trajectories += 1
                self.transitions += len(trajectory.actions)
                yield trajectory_record(trajectory, replay_id, hp_shaping)


def generate_dataset(
    out: Path,
    *,
    policies: Sequence[str],
    battles: int,
    seed: int = 0,
    battle_format: str = "gen9randombattle",
    max_turns: int = 200,
    hp_shaping: float = 0.0,
    num_workers: int | None = None,
    on_result: Callable[[BattleResult], None] | None = None,
    keep_logs: bool = False,
    resolver: Callable[[str], Policy] = make_policy,
    play: PlayBattles | None = None,
    league: League | None = None,
) -> GenerationSummary:
    """Play `battles` battles and write both players' trajectories to the trajectory file
    `out` (the interchange format; `generate_shards` writes a compiled dataset directly).

    Battle i is played by the i-th ordered pair of `policies` (cycling through all
    pairs, mirror matches included), so `["random", "max-damage"]` gives a mix of
    random and max-damage behaviour on both sides. `keep_logs` keeps each battle's log in
    the `BattleResult` `on_result` gets (to write battles out as server logs). `resolver`
    builds each policy from its name; name learned policies as they should be recorded
    (pinned: `poke_tune.tuning.policies.pin_policy_name`). `play` plays the battles
    (default: a `SimulatorPool` of `num_workers` on this machine; the tuning layer hands
    down Ray tasks on a cluster): the file is the same bytes whoever plays them. With a
    `league`, each battle's players are drawn instead (`data.league`), and the header
    records the league.
    """
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    built = [resolver(name) for name in policies]
    specs = _battle_specs(built, battles, seed, battle_format, max_turns, league)
    header = _header(policies, battles, seed, battle_format, max_turns, hp_shaping, league)
    counts = _Counts()
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if play is None:
            play = stack.enter_context(SimulatorPool(num_workers=num_workers)).play
        writer = stack.enter_context(TrajectoryWriter(out, header))
        for result in _in_battle_order(_observed(play(specs, keep_logs=keep_logs), on_result), 0):
            for record in counts.records(result, battle_format, seed, hp_shaping):
                writer.write(record)
    return GenerationSummary(
        out, battles, counts.trajectories, counts.transitions, counts.failed, counts.truncated
    )


def _observed(
    results: Iterable[BattleResult], on_result: Callable[[BattleResult], None] | None
) -> Iterator[BattleResult]:
    for result in results:
        if on_result is not None:
            on_result(result)
        yield result


# -- straight into shards -----------------------------------------------------------------------


@dataclass(frozen=True)
class ShardRecipe:
    """What a shard of generated battles needs besides its battles. Picklable: a Ray task
    on another node builds the very same shard (the same content key) from it."""

    header: DatasetHeader
    store: Path
    """The shard store (`<cache>/datasets/shards`); on a cluster, storage every node maps."""
    seed: int
    hp_shaping: float


@dataclass(frozen=True)
class ShardSummary:
    """One shard of generated battles, as written."""

    folder: Path
    battles: int
    trajectories: int
    transitions: int
    failed: int
    truncated: int


PlayShards = Callable[
    [Sequence[Sequence[BattleSpec]], ShardRecipe], Iterator[tuple[int, ShardSummary]]
]
"""Plays each chunk of battles and writes it as one shard (`play_shard`), yielding (chunk
number, summary) as chunks finish. The default plays them on this machine; the tuning layer
hands down Ray tasks that build each shard on the node that played it."""


def play_shard(
    specs: Sequence[BattleSpec],
    recipe: ShardRecipe,
    play: PlayBattles,
    on_result: Callable[[BattleResult], None] | None = None,
) -> ShardSummary:
    """Play `specs` and write their trajectories, in battle order, as one shard. Each record
    goes through the trajectory-JSONL form, so a shard holds exactly what compiling the
    generated file would (`tests/data/test_generate.py` checks the keys match)."""
    header = recipe.header
    builder = ShardBuilder(recipe.store, header, recipe.store)
    counts = _Counts()
    for result in _in_battle_order(_observed(play(specs), on_result), specs[0].index):
        for record in counts.records(result, header.battle_format, recipe.seed, recipe.hp_shaping):
            line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
            builder.add(result.spec.index, TrajectoryRecord.model_validate_json(line))
    shard = builder.flush()
    if shard is None:
        raise RuntimeError(
            f"battles {specs[0].index}-{specs[-1].index} recorded no decision "
            f"({counts.failed} failed): nothing to write"
        )
    return ShardSummary(
        shard.folder,
        counts.battles,
        counts.trajectories,
        counts.transitions,
        counts.failed,
        counts.truncated,
    )


def generate_shards(
    manifest: Path,
    *,
    policies: Sequence[str],
    battles: int,
    store: Path,
    seed: int = 0,
    battle_format: str = "gen9randombattle",
    max_turns: int = 200,
    hp_shaping: float = 0.0,
    battles_per_shard: int = BATTLES_PER_SHARD,
    num_workers: int | None = None,
    on_result: Callable[[BattleResult], None] | None = None,
    resolver: Callable[[str], Policy] = make_policy,
    play_shards: PlayShards | None = None,
    league: League | None = None,
    progress: Path | None = None,
) -> GenerationSummary:
    """Play the battles of `generate_dataset` (the same battles, the same policies) and
    write them straight into shards of `battles_per_shard` consecutive battles under
    `store`, listed by the manifest `manifest` (`*.json`; open it with `load_dataset`).

    Memory holds one shard's battles. A shard's content depends only on its battles, so
    whoever builds it (this machine's pool, or `play_shards`: Ray tasks on the nodes) writes
    the same key; a shard already in the store is not written again.

    Each finished shard is noted in `progress` (default `MANIFEST.progress.jsonl`; deleted
    at the end), so a run that was stopped and started again with the same recipe plays
    only the battles of the shards it lacks.
    """
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    if manifest.suffix != ".json":
        raise ValueError(f"{manifest}: a generated dataset's manifest is named *.json")
    built = [resolver(name) for name in policies]
    specs = _battle_specs(built, battles, seed, battle_format, max_turns, league)
    header = _header(policies, battles, seed, battle_format, max_turns, hp_shaping, league)
    recipe = ShardRecipe(header=header, store=store, seed=seed, hp_shaping=hp_shaping)
    chunks = [specs[i : i + battles_per_shard] for i in range(0, battles, battles_per_shard)]
    noted = _Progress(
        progress or manifest.with_name(f"{manifest.name}.progress.jsonl"),
        f"{header.model_dump_json()} {battles_per_shard}",
    )
    summaries = noted.done(len(chunks))
    todo = [number for number in range(len(chunks)) if number not in summaries]
    if summaries:
        _logger.info(
            "%d of %d shards were written before: played again only the rest",
            len(summaries),
            len(chunks),
        )
    if todo:
        with contextlib.ExitStack() as stack:
            if play_shards is None:
                pool = stack.enter_context(SimulatorPool(num_workers=num_workers))
                play_shards = _local_shards(pool.play, on_result)
            for position, summary in play_shards([chunks[n] for n in todo], recipe):
                summaries[todo[position]] = summary
                noted.add(todo[position], summary)
                _logger.info(
                    "generated shard %d of %d (%d battles, %d transitions)",
                    len(summaries),
                    len(chunks),
                    summary.battles,
                    summary.transitions,
                )
    ordered = [summaries[number] for number in range(len(chunks))]
    shards = [open_shard(summary.folder) for summary in ordered]
    write_manifest(
        manifest,
        key=hashlib.sha256(" ".join(shard.key for shard in shards).encode()).hexdigest()[:16],
        header=header,
        size_bytes=sum(shard.nbytes() for shard in shards),
        shards=[(shard, 0) for shard in shards],
    )
    noted.remove()
    return GenerationSummary(
        manifest,
        battles,
        sum(s.trajectories for s in ordered),
        sum(s.transitions for s in ordered),
        sum(s.failed for s in ordered),
        sum(s.truncated for s in ordered),
    )


class _Progress:
    """The shards a `generate_shards` run has finished, a JSON line each. A line counts only
    for the same recipe (its digest) and while its shard is in the store."""

    def __init__(self, path: Path, recipe: str) -> None:
        self.path = path
        self.digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def done(self, chunks: int) -> dict[int, ShardSummary]:
        found: dict[int, ShardSummary] = {}
        lines = self.path.read_bytes().splitlines() if self.path.is_file() else []
        for line in lines:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                entry = orjson.loads(line)  # a line cut off by a kill is skipped
                summary = ShardSummary(
                    **{**entry["summary"], "folder": Path(entry["summary"]["folder"])}
                )
                if (
                    entry["recipe"] == self.digest
                    and entry["chunk"] < chunks
                    and summary.folder.is_dir()
                ):
                    found[entry["chunk"]] = summary
        return found

    def add(self, chunk: int, summary: ShardSummary) -> None:
        entry = {
            "recipe": self.digest,
            "chunk": chunk,
            "summary": {**dataclasses.asdict(summary), "folder": str(summary.folder)},
        }
        with self.path.open("ab") as out:
            out.write(orjson.dumps(entry) + b"\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _local_shards(
    play: PlayBattles, on_result: Callable[[BattleResult], None] | None
) -> PlayShards:
    def play_shards(
        chunks: Sequence[Sequence[BattleSpec]], recipe: ShardRecipe
    ) -> Iterator[tuple[int, ShardSummary]]:
        for number, chunk in enumerate(chunks):
            yield number, play_shard(chunk, recipe, play, on_result)

    return play_shards
