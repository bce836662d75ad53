"""One battle as poke-tune plays it: what to play (`BattleSpec`, seeded by `battle_seeds`),
what one player did (`Trajectory`), how it ended (`BattleResult`), and the `PlayBattles`
protocol of whoever plays them (the worker pool in `battles.py`, or Ray tasks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from poke_tune.sim.policies import Policy
from poke_tune.sim.state import BattleState

__all__ = [
    "SIDES",
    "BattleResult",
    "BattleSpec",
    "PlayBattles",
    "Trajectory",
    "battle_seeds",
    "check_battle_format",
    "hp_balance",
]

SIDES = ("p1", "p2")


def check_battle_format(battle_format: str) -> None:
    """Refuse a format whose teams the simulator does not generate: poke-tune sends no
    teams, so only random-team formats (`gen9randombattle`, `gen8randombattle`, ...) play."""
    if "random" not in battle_format.lower():
        raise ValueError(
            f"battle format {battle_format!r}: poke-tune plays random-team formats (the "
            "simulator generates the teams), e.g. gen9randombattle or gen8randombattle"
        )


def battle_seeds(seed: int, index: int) -> tuple[list[int], list[int], list[int]]:
    """Showdown PRNG seeds (battle, p1 team, p2 team) for battle `index` of a seeded set."""
    words = np.random.SeedSequence([seed, index]).generate_state(12) & 0xFFFF
    values = [int(w) for w in words]
    return values[0:4], values[4:8], values[8:12]


@dataclass(frozen=True)
class BattleSpec:
    """One battle to play: the two policies, the seeds and what to record."""

    index: int
    p1: Policy
    p2: Policy
    seed: int = 0
    battle_format: str = "gen9randombattle"
    max_turns: int = 200
    record: tuple[bool, bool] = (False, False)

    def policy(self, side: str) -> Policy:
        return self.p1 if side == "p1" else self.p2

    def policy_rng(self, side: str) -> np.random.Generator:
        """The policy's RNG for this battle and side, fresh on every (re)play."""
        return np.random.default_rng([self.seed, self.index, SIDES.index(side) + 1])


@dataclass
class Trajectory:
    """One player's decisions in one battle, as recorded for offline datasets."""

    side: str
    policy: str
    observations: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    hp_balance: list[float] = field(default_factory=list)  # before each decision
    final_hp_balance: float = 0.0
    final_observation: np.ndarray | None = None  # set only when the battle was cut off
    final_mask: np.ndarray | None = None
    outcome: float = 0.0  # +1 win, -1 loss, 0 tie or cut off


@dataclass
class BattleResult:
    """How one battle ended."""

    spec: BattleSpec
    winner: str | None = None  # "p1", "p2", or None for a tie or a cut-off battle
    turns: int = 0
    truncated: bool = False
    invalid_choices: int = 0
    attempts: int = 1
    error: str | None = None  # set when every attempt failed
    log: list[str] = field(default_factory=list)  # battle log, with `keep_logs`
    input_log: list[str] = field(default_factory=list)  # Showdown's input log: replays it
    trajectories: dict[str, Trajectory] = field(default_factory=dict)


class PlayBattles(Protocol):
    """Plays battles and yields one result per spec, in any order: `SimulatorPool.play`,
    or the tuning layer's Ray tasks spreading chunks of them over a cluster. A battle is
    fixed by its spec (seed, index, policies), so whoever plays it gives the same result."""

    def __call__(
        self, specs: Sequence[BattleSpec], *, keep_logs: bool = False
    ) -> Iterator[BattleResult]: ...


def hp_balance(state: BattleState, side: str) -> float:
    """(own HP - opponent HP) / 6 from public HP fractions; unrevealed Pokemon count full."""
    total = 0.0
    for sign, side_state in ((1.0, state.sides[side]), (-1.0, state.sides[_other(side)])):
        hp = sum(p.hp for p in side_state.pokemon.values())
        total += sign * (hp + 6 - len(side_state.pokemon))
    return total / 6.0


def _other(side: str) -> str:
    return "p2" if side == "p1" else "p1"
