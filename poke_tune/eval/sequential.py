"""Sequential paired confirmation: a round's winner against the champion, chunk by chunk.

Both play the same seeded battles against one opponent, in chunks. After each chunk the
paired interval of the candidate's win rate minus the champion's (`paired.py`) is looked
at; the confirmation stops as soon as it excludes zero, or when the battle budget is spent.
A clear winner (or loser) is settled after a chunk or two; only close calls use the budget.

Looking after every chunk at a 95% interval would stop on noise far more often than 5%:
each look is another chance. The interval at each look is therefore wider, at the
Pocock (1977) constant for the most looks the budget allows, `pocock_z(looks)`: the
width at which K looks at a random walk cross either bound with probability 5% in all,
so an equal candidate is promoted 2.5% of the time. Pocock rather than O'Brien-Fleming
(whose first looks need about 2 * sqrt(K) standard errors) because what we buy is
stopping early: Pocock spends its error evenly, so a clearly better candidate stops after
the first chunk. `benchmarks/bench_sequential.py` measures the whole rule by simulation
(false promotions, power, battles used); docs/benchmarks.md has its table.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from poke_tune.eval.paired import (
    PairedDifference,
    paired_difference,
    paired_difference_from_counts,
)
from poke_tune.eval.winrate import WinRate, combine, evaluate
from poke_tune.sim.battle_records import BattleResult, PlayBattles
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy

__all__ = [
    "SequentialDecision",
    "SequentialResult",
    "Stop",
    "confirm_sequentially",
    "max_looks",
    "pocock_z",
    "sequential_decision",
]

_logger = logging.getLogger(__name__)

Stop = Literal["candidate better", "champion better", "budget"]

_GRID_STEP = 0.25
"""Simpson grid step of `pocock_z`'s integration, in steps of the walk: the constants of
Jennison & Turnbull's Table 2.1 come out within 1e-4."""


@dataclass(frozen=True)
class SequentialDecision:
    """Where the looks at a growing set of paired outcomes stand: stop, and why, or go on."""

    stop: Stop | None
    """Why to stop, or None: play the next chunk."""
    battles: int
    """Battles up to the last look (later outcomes, short of a chunk, are not looked at)."""
    looks: int
    difference: PairedDifference
    """At the last look, at the per-look width (not 95%)."""


@dataclass(frozen=True)
class SequentialResult:
    """A sequential confirmation: both win rates over the battles played, and the verdict."""

    candidate: WinRate
    champion: WinRate
    difference: PairedDifference
    """Candidate minus champion over the battles played, reported at 95%."""
    battles: int
    """Battles each of the two played."""
    looks: int
    stopped: Stop
    z: float
    """The per-look width the decisions used."""

    @property
    def promoted(self) -> bool:
        """The candidate beat the champion beyond the per-look interval."""
        return self.stopped == "candidate better"


def max_looks(chunk: int, budget: int) -> int:
    """How many looks a budget of `budget` battles in chunks of `chunk` allows (the last
    chunk may be short)."""
    _check_chunking(chunk, budget)
    return math.ceil(budget / chunk)


@functools.lru_cache(maxsize=64)
def pocock_z(looks: int, alpha: float = 0.05) -> float:
    """The Pocock constant: with `looks` equally spaced looks at a paired difference that is
    truly zero, |z statistic| > this at any look has probability `alpha` (two-sided).
    1.96 for one look, 2.413 for 5, 2.555 for 10, 2.672 for 20."""
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    low, high = 0.5, 8.0
    while high - low > 1e-6:  # bisection: crossing falls as the bound widens
        middle = (low + high) / 2
        if _crossing_probability(middle, looks) > alpha:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _crossing_probability(z: float, looks: int) -> float:
    """P(|S_k| >= z sqrt(k) at some k <= looks) for a random walk with N(0, 1) steps, by
    Armitage, McPherson & Rowe's (1969) recursive integration of the density of the walks
    that have not crossed yet."""

    def grid(look: int) -> tuple[np.ndarray, np.ndarray]:
        half = z * math.sqrt(look)
        points = 2 * math.ceil(half / _GRID_STEP) + 1
        x = np.linspace(-half, half, points)
        weights = np.full(points, 2.0)
        weights[1::2] = 4.0
        weights[[0, -1]] = 1.0
        return x, weights * (x[1] - x[0]) / 3.0

    def normal(x: np.ndarray) -> np.ndarray:
        density: np.ndarray = np.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)
        return density

    x, weights = grid(1)
    density = normal(x)
    for look in range(2, looks + 1):
        y, next_weights = grid(look)
        density = normal(y[:, None] - x[None, :]) @ (weights * density)
        x, weights = y, next_weights
    return 1.0 - float(weights @ density)


def sequential_decision(
    a_won: Sequence[bool], b_won: Sequence[bool], *, chunk: int, budget: int, z: float
) -> SequentialDecision:
    """Replay the looks at battles `chunk`, `2 * chunk`, ... (at most `budget`) of paired
    outcomes (A: the candidate, B: the champion) and say where they stop: at the first
    look whose interval at width `z` excludes zero, or at the budget. Pure, so the rule
    is tested and simulated without battles."""
    _check_chunking(chunk, budget)
    if len(a_won) != len(b_won):
        raise ValueError(
            f"paired outcomes need the same battles, got {len(a_won)} and {len(b_won)}"
        )
    if len(a_won) < min(chunk, budget):
        raise ValueError(f"{len(a_won)} outcomes are short of the first look at {chunk}")
    only_a = [0, *itertools.accumulate(a and not b for a, b in zip(a_won, b_won, strict=True))]
    only_b = [0, *itertools.accumulate(b and not a for a, b in zip(a_won, b_won, strict=True))]
    decision: SequentialDecision | None = None
    for look, end in enumerate(range(chunk, budget + chunk, chunk), 1):
        battles = min(end, budget)
        if battles > len(a_won):
            break
        difference = paired_difference_from_counts(only_a[battles], only_b[battles], battles, z)
        decision = SequentialDecision(
            _verdict(difference, battles == budget), battles, look, difference
        )
        if decision.stop is not None:
            break
    assert decision is not None  # the first look's outcomes were checked above
    return decision


def _verdict(difference: PairedDifference, at_budget: bool) -> Stop | None:
    if difference.a_better:
        return "candidate better"
    if difference.b_better:
        return "champion better"
    return "budget" if at_budget else None


def _check_chunking(chunk: int, budget: int) -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 battle, got {chunk}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1 battle, got {budget}")


def confirm_sequentially(
    candidate: Policy,
    champion: Policy,
    opponent: Policy,
    *,
    seed: int,
    chunk: int,
    budget: int,
    max_turns: int,
    battle_format: str = "gen9randombattle",
    z: float | None = None,
    play: PlayBattles | None = None,
    on_result: Callable[[BattleResult], None] | None = None,
) -> SequentialResult:
    """Play `candidate` and `champion` against `opponent` on battles `0, 1, ...` of the set
    `seed`, `chunk` battles at a time, until the paired interval at width `z` (default: the
    Pocock constant of `max_looks(chunk, budget)`) excludes zero or `budget` battles each
    are spent. `play` plays each chunk (default: one `SimulatorPool` on this machine; the
    tuning layer hands down Ray tasks); the results are the same either way."""
    _check_chunking(chunk, budget)
    width = pocock_z(max_looks(chunk, budget)) if z is None else z
    if width <= 0.0:
        raise ValueError(f"z must be > 0, got {z}")
    parts: dict[str, list[WinRate]] = {"candidate": [], "champion": []}
    played = 0
    with contextlib.ExitStack() as stack:
        if play is None:
            play = stack.enter_context(SimulatorPool()).play
        while True:
            count = min(chunk, budget - played)
            for role, policy in (("candidate", candidate), ("champion", champion)):
                parts[role].append(
                    evaluate(
                        policy,
                        opponent,
                        battles=count,
                        seed=seed,
                        first=played,
                        battle_format=battle_format,
                        max_turns=max_turns,
                        play=play,
                        on_result=on_result,
                    )
                )
            played += count
            ours, theirs = combine(parts["candidate"]), combine(parts["champion"])
            decision = sequential_decision(
                ours.won, theirs.won, chunk=chunk, budget=budget, z=width
            )
            assert decision.battles == played, (decision, played)
            _logger.info(
                "sequential confirmation look %d: %d battles, %s - %s = %+.3f [%+.3f, %+.3f] "
                "at z=%.3f%s",
                decision.looks,
                played,
                candidate.name,
                champion.name,
                decision.difference.difference,
                decision.difference.ci_low,
                decision.difference.ci_high,
                width,
                f": {decision.stop}" if decision.stop else "",
            )
            if decision.stop is not None:
                return SequentialResult(
                    candidate=ours,
                    champion=theirs,
                    difference=paired_difference(ours.won, theirs.won),
                    battles=played,
                    looks=decision.looks,
                    stopped=decision.stop,
                    z=width,
                )
