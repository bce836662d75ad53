"""Head to head: every policy of a set against every other, on the same seeded battles.

Each pair plays battles `0 .. battles - 1` of the set `seed` once, through `evaluate()`:
the row policy (the earlier name) is p1 in even battles and p2 in odd ones, so each plays
both seats equally (up to one battle), and `matrix[a][b]` is exactly `evaluate(a, b)` on
that set. The rules treat p1 and p2 alike; in random battles a seat decides which of the
battle's two seeded teams a policy gets, and the alternation keeps a policy from always
holding one side's draws. The reverse of a pair is derived from the same battles, not
played again: the column policy won a battle when its side won it. A tie or a battle cut
off at `max_turns` counts for neither (as in `evaluate()`, ties are not wins), so per
battle `matrix[a][b].won[i] + matrix[b][a].won[i] + tied[i] == 1` and the two win rates
plus the tie rate make 1.

Every pair meets the same two teams at a battle index, so the matrix compares policies on
common random numbers; a policy holds the same seat in the pairs where it is the row, the
other seat where it is the column.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from poke_tune.eval.winrate import WinRate, evaluate, wilson_interval
from poke_tune.sim.battle_records import BattleResult, PlayBattles
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy

__all__ = ["HeadToHead", "head_to_head", "reverse_win_rate"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadToHead:
    """Win rates of each row policy against each column policy; None on the diagonal."""

    names: tuple[str, ...]
    matrix: tuple[tuple[WinRate | None, ...], ...]
    """`matrix[i][j]`: `names[i]`'s win rate against `names[j]` (95% Wilson interval)."""
    battles: int
    seed: int

    def result(self, row: str, column: str) -> WinRate | None:
        """`row`'s win rate against `column` (None when they are the same policy)."""
        return self.matrix[self.names.index(row)][self.names.index(column)]


def head_to_head(
    policies: Mapping[str, Policy],
    *,
    battles: int,
    seed: int,
    max_turns: int,
    battle_format: str = "gen9randombattle",
    play: PlayBattles | None = None,
    on_result: Callable[[BattleResult], None] | None = None,
) -> HeadToHead:
    """Play every pair of `policies` (by name) on battles `0 .. battles - 1` of the set
    `seed`, once per pair, and derive each reverse from the same battles. `play` plays
    each pair's battles (default: one `SimulatorPool` on this machine; the tuning layer
    hands down Ray tasks); the results are the same either way."""
    names = tuple(policies)
    if len(names) < 2:
        raise ValueError(f"a head-to-head needs at least 2 policies, got {list(names)}")
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    played: dict[tuple[str, str], WinRate] = {}
    with contextlib.ExitStack() as stack:
        if play is None:
            play = stack.enter_context(SimulatorPool()).play
        for row, column in itertools.combinations(names, 2):
            _logger.info("head to head: %s vs %s, %d battles", row, column, battles)
            seen: list[BattleResult] = []
            forward = evaluate(
                policies[row],
                policies[column],
                battles=battles,
                seed=seed,
                battle_format=battle_format,
                max_turns=max_turns,
                play=play,
                on_result=_recording(seen, on_result),
            )
            played[row, column] = forward
            played[column, row] = reverse_win_rate(forward, seen)
    matrix = tuple(
        tuple(None if row == column else played[row, column] for column in names) for row in names
    )
    return HeadToHead(names=names, matrix=matrix, battles=battles, seed=seed)


def reverse_win_rate(forward: WinRate, results: Sequence[BattleResult]) -> WinRate:
    """The opponent's win rate over the battles of `forward`, from their results: it won
    the battles its side won; ties and cut-off battles stay nobody's."""
    by_index = sorted(results, key=lambda r: r.spec.index)
    indices = [r.spec.index for r in by_index]
    if indices != list(range(forward.first, forward.first + forward.battles)):
        raise ValueError(
            f"results of battles {indices[:3]}... are not the {forward.battles} battles "
            f"from {forward.first} of {forward.policy} vs {forward.opponent}"
        )
    # evaluate() seats the evaluated policy as p1 in even battles: its opponent is p2 there.
    won = tuple(r.winner == ("p2" if r.spec.index % 2 == 0 else "p1") for r in by_index)
    assert not any(a and b for a, b in zip(won, forward.won, strict=True)), "one winner a battle"
    wins = sum(won)
    assert wins == forward.losses, (wins, forward.losses)
    low, high = wilson_interval(wins, forward.battles)
    return replace(
        forward,
        policy=forward.opponent,
        opponent=forward.policy,
        wins=wins,
        losses=forward.wins,
        win_rate=wins / forward.battles,
        ci_low=low,
        ci_high=high,
        won=won,
    )


def _recording(
    seen: list[BattleResult], on_result: Callable[[BattleResult], None] | None
) -> Callable[[BattleResult], None]:
    """An `on_result` that keeps each result (for the reverse) and passes it on."""

    def record(result: BattleResult) -> None:
        seen.append(result)
        if on_result is not None:
            on_result(result)

    return record
