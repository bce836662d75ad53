"""Head-to-head matrices: the reverse derived from the same battles (no simulator), then a
small real matrix of the built-in policies."""

from __future__ import annotations

import pytest

from poke_tune.eval.head_to_head import head_to_head, reverse_win_rate
from poke_tune.eval.winrate import WinRate, wilson_interval
from poke_tune.sim.battle_records import BattleResult, BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import make_policy


def _results(winners: list[str | None]) -> list[BattleResult]:
    a, b = make_policy("max-damage"), make_policy("random")
    return [
        BattleResult(BattleSpec(index=i, p1=a if i % 2 == 0 else b, p2=b if i % 2 == 0 else a), w)
        for i, w in enumerate(winners)
    ]


def test_the_reverse_wins_what_the_row_lost_and_ties_stay_nobodys() -> None:
    # max-damage is p1 in even battles: it wins 0 and 3, loses 1 and 2, ties 4.
    winners: list[str | None] = ["p1", "p1", "p2", "p2", None]
    won = (True, False, False, True, False)
    low, high = wilson_interval(2, 5)
    forward = WinRate(
        policy="max-damage", opponent="random", battles=5, wins=2, losses=2, ties=1,
        win_rate=0.4, ci_low=low, ci_high=high, mean_turns=10.0, invalid_choices=0,
        seconds=1.0, won=won,
    )  # fmt: skip
    back = reverse_win_rate(forward, list(reversed(_results(winners))))
    assert (back.policy, back.opponent) == ("random", "max-damage")
    assert back.won == (False, True, True, False, False)
    assert (back.wins, back.losses, back.ties, back.win_rate) == (2, 2, 1, 0.4)
    assert (back.ci_low, back.ci_high) == wilson_interval(2, 5)
    with pytest.raises(ValueError, match="are not the 5 battles"):
        reverse_win_rate(forward, _results(winners)[:4])


def test_a_matrix_of_the_built_in_policies(pool: SimulatorPool) -> None:
    names = ("random", "max-damage", "heuristic")
    battles = 6
    matrix = head_to_head(
        {name: make_policy(name) for name in names},
        battles=battles,
        seed=5,
        max_turns=200,
        play=pool.play,
    )
    assert matrix.names == names and matrix.battles == battles
    for row in names:
        assert matrix.result(row, row) is None
        for column in names:
            if row == column:
                continue
            forward, back = matrix.result(row, column), matrix.result(column, row)
            assert forward is not None and back is not None
            assert (forward.policy, forward.opponent) == (row, column)
            assert forward.ties == back.ties and forward.battles == battles
            assert forward.wins + back.wins + forward.ties == battles
            assert all(not (a and b) for a, b in zip(forward.won, back.won, strict=True))
    beats = matrix.result("max-damage", "random")
    assert beats is not None and beats.win_rate > 0.5
    assert matrix.matrix[1][0] == beats
