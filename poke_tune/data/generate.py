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
import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poke_tune.data.jsonl import TrajectoryWriter
from poke_tune.data.records import DatasetHeader
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_parts
from poke_tune.sim.battles import (
    BattleResult,
    BattleSpec,
    PlayBattles,
    SimulatorPool,
    Trajectory,
)
from poke_tune.sim.dex import load_dex
from poke_tune.sim.encoding import ENCODER_VERSION, ObservationEncoder
from poke_tune.sim.policies import Policy, make_policy, split_policy_name

__all__ = ["GenerationSummary", "generate_dataset", "policy_file_digests", "trajectory_record"]


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
) -> GenerationSummary:
    """Play `battles` battles and write both players' trajectories to `out`.

    Battle i is played by the i-th ordered pair of `policies` (cycling through all
    pairs, mirror matches included), so `["random", "max-damage"]` gives a mix of
    random and max-damage behaviour on both sides. `keep_logs` keeps each battle's log in
    the `BattleResult` `on_result` gets (to write battles out as server logs). `resolver`
    builds each policy from its name; name learned policies as they should be recorded
    (pinned: `poke_tune.tuning.policies.pin_policy_name`). `play` plays the battles
    (default: a `SimulatorPool` of `num_workers` on this machine; the tuning layer hands
    down Ray tasks on a cluster): the file is the same bytes whoever plays them.
    """
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    built = [resolver(name) for name in policies]
    pairs = list(itertools.product(built, repeat=2))
    specs = [
        BattleSpec(
            index=i,
            p1=pairs[i % len(pairs)][0],
            p2=pairs[i % len(pairs)][1],
            seed=seed,
            battle_format=battle_format,
            max_turns=max_turns,
            record=(True, True),
        )
        for i in range(battles)
    ]
    generator: dict[str, Any] = {
        "policies": list(policies),
        "battles": battles,
        "seed": seed,
        "max_turns": max_turns,
        "hp_shaping": hp_shaping,
    }
    digests = policy_file_digests(policies)
    if digests:  # only then: the headers of built-in recipes stay as they were
        generator["policy_files"] = digests
    header = DatasetHeader(
        format_version=1,
        encoder_version=ENCODER_VERSION,
        observation_size=ObservationEncoder(load_dex(battle_format)).size,
        action_layout=ACTION_LAYOUT,
        num_actions=NUM_ACTIONS,
        battle_format=battle_format,
        generator=generator,
    )
    trajectories = transitions = failed = truncated = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    # Results arrive in completion order; a small reorder buffer writes them in battle
    # order, so the same seed gives a byte-identical file (and the same cache key).
    waiting: dict[int, BattleResult] = {}
    next_index = 0
    with contextlib.ExitStack() as stack:
        if play is None:
            play = stack.enter_context(SimulatorPool(num_workers=num_workers)).play
        writer = stack.enter_context(TrajectoryWriter(out, header))
        for result in play(specs, keep_logs=keep_logs):
            if on_result is not None:
                on_result(result)
            waiting[result.spec.index] = result
            while next_index in waiting:
                ready = waiting.pop(next_index)
                next_index += 1
                if ready.error is not None:
                    failed += 1
                    continue
                truncated += ready.truncated
                replay_id = f"{battle_format}-{seed}-{ready.spec.index}"
                for trajectory in ready.trajectories.values():
                    if trajectory.actions:
                        writer.write(trajectory_record(trajectory, replay_id, hp_shaping))
                        trajectories += 1
                        transitions += len(trajectory.actions)
    return GenerationSummary(out, battles, trajectories, transitions, failed, truncated)
