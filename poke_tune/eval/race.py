"""Racing: policies play the same seeded battles in rounds, and the clearly worse stop early.

After each round, a candidate whose paired interval against the leading candidate lies
wholly below zero stops (successive elimination). The interval is 99%, not 95%, because
the race looks after every round, and 95% at each look would stop too often. The leader
and the entrants that always play (baselines) play every battle. With one round nothing
stops: the fixed budget.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from poke_tune.eval.paired import paired_difference
from poke_tune.eval.winrate import WinRate, combine, evaluate
from poke_tune.sim.battle_records import BattleResult, PlayBattles
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy

__all__ = ["ELIMINATION_Z", "RaceResult", "race"]

_logger = logging.getLogger(__name__)

ELIMINATION_Z = 2.576
"""99% two-sided: a candidate stops only when its paired interval against the leader is
below zero at this width."""


@dataclass(frozen=True)
class RaceResult:
    """Each entrant's win rate over the battles it played, and who stopped early."""

    results: dict[str, WinRate]
    stopped: frozenset[str]


def _chunks(battles: int, rounds: int) -> list[tuple[int, int]]:
    """(first, count) of `rounds` near-equal consecutive chunks of `battles`."""
    rounds = max(1, min(rounds, battles))
    edges = [battles * r // rounds for r in range(rounds + 1)]
    return [(a, b - a) for a, b in itertools.pairwise(edges) if b > a]


def race(
    candidates: Mapping[str, Policy],
    always: Mapping[str, Policy],
    opponent: Policy,
    *,
    battles: int,
    seed: int,
    rounds: int,
    max_turns: int,
    on_result: Callable[[BattleResult], None] | None = None,
    play: PlayBattles | None = None,
) -> RaceResult:
    """Play `candidates` and `always` (by name) on battles `0 .. battles - 1` of the set
    `seed` against `opponent`, in `rounds` chunks, stopping the clearly worse candidates.
    `play` plays each entrant's chunk (default: one `SimulatorPool` on this machine; the
    tuning layer hands down Ray tasks on a cluster); the results are the same either way."""
    chunks = _chunks(battles, rounds)
    active = list(candidates)
    parts: dict[str, list[WinRate]] = {name: [] for name in [*candidates, *always]}
    stopped: set[str] = set()
    policies = {**candidates, **always}
    with contextlib.ExitStack() as stack:
        if play is None:
            play = stack.enter_context(SimulatorPool()).play
        for number, (first, count) in enumerate(chunks, 1):
            _logger.info(
                "race round %d/%d: battles %d-%d, %d candidates, %d always playing",
                number,
                len(chunks),
                first,
                first + count - 1,
                len(active),
                len(always),
            )
            for name in [*active, *always]:
                parts[name].append(
                    evaluate(
                        policies[name],
                        opponent,
                        battles=count,
                        seed=seed,
                        first=first,
                        max_turns=max_turns,
                        play=play,
                        on_result=on_result,
                    )
                )
            if number < len(chunks) and len(active) > 1:
                so_far = {name: combine(parts[name]) for name in active}
                leader = max(active, key=lambda name: so_far[name].win_rate)
                for name in active:
                    gap = paired_difference(so_far[name].won, so_far[leader].won, z=ELIMINATION_Z)
                    if name != leader and gap.b_better:
                        stopped.add(name)
                active = [name for name in active if name not in stopped]
    results = {name: combine(chunked) for name, chunked in parts.items() if chunked}
    return RaceResult(results, frozenset(stopped))
