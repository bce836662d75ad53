"""Win rate of a policy against an opponent over a fixed, seeded set of real battles.

Battle `i` of an evaluation uses the simulator seeds `battle_seeds(seed, i)` whatever the
policy, so every policy evaluated with the same `seed` meets the same teams and the same
random draws (common random numbers: a fair comparison between tuning trials). The
evaluated policy plays p1 in even battles and p2 in odd ones, so side effects cancel.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from poke_tune.sim.battle_records import BattleResult, BattleSpec, PlayBattles
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy

__all__ = [
    "BENCHMARK_SEED",
    "CONFIRM_SEED",
    "EVAL_SEED",
    "EvaluationError",
    "WinRate",
    "combine",
    "evaluate",
    "wilson_interval",
]

EVAL_SEED = 20_261_121
"""Default seed of the evaluation (selection) battle set; far from the dataset seeds."""
CONFIRM_SEED = 20_261_202
"""Default seed of the confirmation battle set: fresh battles, never selected on."""
BENCHMARK_SEED = 20_261_303
"""Seed of the benchmarks' battle sets: neither selection nor confirmation."""


class EvaluationError(RuntimeError):
    """Some battles of an evaluation could not be played even after retries."""


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WinRate:
    """The outcome of an evaluation. Ties (including battles cut off) are not wins."""

    policy: str
    opponent: str
    battles: int
    wins: int
    losses: int
    ties: int
    win_rate: float
    ci_low: float
    ci_high: float
    mean_turns: float
    invalid_choices: int
    seconds: float
    seed: int = EVAL_SEED
    first: int = 0
    """Index of the first battle: the set is battles `first .. first + battles - 1`."""
    won: tuple[bool, ...] = ()
    """Per battle, in index order: did `policy` win? (Paired comparisons need it.)"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    policy: Policy,
    opponent: Policy,
    *,
    battles: int = 500,
    seed: int = EVAL_SEED,
    battle_format: str = "gen9randombattle",
    max_turns: int = 200,
    pool: SimulatorPool | None = None,
    num_workers: int | None = None,
    on_result: Callable[[BattleResult], None] | None = None,
    first: int = 0,
    play: PlayBattles | None = None,
) -> WinRate:
    """Play `battles` seeded battles of `policy` against `opponent`; return the win rate.

    The battles are indices `first .. first + battles - 1` of the set `seed` names, so a
    set can be played in chunks (racing) and the chunks add up to the whole set.

    Pass an open `pool` to reuse its workers across evaluations (e.g. inside a tuning
    trial), or a `play` (the tuning layer's Ray tasks on a cluster); otherwise a pool is
    started for this call. `on_result` sees each finished battle
    (progress bars). Raises `EvaluationError` if any battle failed after its retries.
    """
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    specs = [
        BattleSpec(
            index=i,
            p1=policy if i % 2 == 0 else opponent,
            p2=opponent if i % 2 == 0 else policy,
            seed=seed,
            battle_format=battle_format,
            max_turns=max_turns,
        )
        for i in range(first, first + battles)
    ]
    start = time.perf_counter()
    if play is not None:
        results = _play(play, specs, on_result)
    elif pool is None:
        with SimulatorPool(num_workers=num_workers) as own_pool:
            results = _play(own_pool.play, specs, on_result)
    else:
        results = _play(pool.play, specs, on_result)
    seconds = time.perf_counter() - start

    failed = [r for r in results if r.error is not None]
    if failed:
        detail = "; ".join(f"battle {r.spec.index}: {r.error}" for r in failed[:5])
        raise EvaluationError(f"{len(failed)} of {battles} battles failed: {detail}")
    by_index = sorted(results, key=lambda r: r.spec.index)
    won = tuple(r.winner == ("p1" if r.spec.index % 2 == 0 else "p2") for r in by_index)
    wins = sum(won)
    ties = sum(r.winner is None for r in results)
    low, high = wilson_interval(wins, battles)
    return WinRate(
        policy=policy.name,
        opponent=opponent.name,
        battles=battles,
        wins=wins,
        losses=battles - wins - ties,
        ties=ties,
        win_rate=wins / battles,
        ci_low=low,
        ci_high=high,
        mean_turns=sum(r.turns for r in results) / battles,
        invalid_choices=sum(r.invalid_choices for r in results),
        seconds=seconds,
        seed=seed,
        first=first,
        won=won,
    )


def combine(parts: Sequence[WinRate]) -> WinRate:
    """One result from results of consecutive chunks of the same battle set."""
    first, *rest = parts
    for before, after in itertools.pairwise(parts):
        if (after.seed, after.first) != (before.seed, before.first + before.battles):
            raise ValueError("combine() needs consecutive chunks of one seeded battle set")
    if not rest:
        return first
    battles = sum(p.battles for p in parts)
    wins = sum(p.wins for p in parts)
    low, high = wilson_interval(wins, battles)
    return replace(
        first,
        battles=battles,
        wins=wins,
        losses=sum(p.losses for p in parts),
        ties=sum(p.ties for p in parts),
        win_rate=wins / battles,
        ci_low=low,
        ci_high=high,
        mean_turns=sum(p.mean_turns * p.battles for p in parts) / battles,
        invalid_choices=sum(p.invalid_choices for p in parts),
        seconds=sum(p.seconds for p in parts),
        won=tuple(w for p in parts for w in p.won),
    )


def _play(
    play: PlayBattles,
    specs: list[BattleSpec],
    on_result: Callable[[BattleResult], None] | None,
) -> list[BattleResult]:
    results = []
    for result in play(specs):
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
