"""Sequential paired confirmation: the stopping rule on outcome lists (no simulator), then
one short real confirmation played locally and replayed through another `play`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from poke_tune.eval.paired import paired_difference
from poke_tune.eval.sequential import (
    confirm_sequentially,
    max_looks,
    pocock_z,
    sequential_decision,
)
from poke_tune.sim.battle_records import BattleResult, BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import make_policy


@pytest.mark.parametrize(
    ("looks", "constant"), [(1, 1.960), (2, 2.178), (5, 2.413), (10, 2.555), (20, 2.672)]
)
def test_pocock_constants_match_the_published_table(looks: int, constant: float) -> None:
    # Jennison & Turnbull (2000), Table 2.1, two-sided alpha 0.05.
    assert pocock_z(looks) == pytest.approx(constant, abs=1e-3)


def test_looks_count_a_short_last_chunk() -> None:
    assert max_looks(250, 3000) == 12
    assert max_looks(20, 50) == 3
    assert max_looks(500, 200) == 1


def _paired(
    rng: np.random.Generator, battles: int, only_a: float, only_b: float
) -> tuple[list[bool], list[bool]]:
    """Outcomes where the champion wins 0.6 and the two disagree on `only_a + only_b`."""
    kind = rng.choice(4, size=battles, p=[0.6 - only_b, only_a, only_b, 0.4 - only_a])
    return ((kind == 0) | (kind == 1)).tolist(), ((kind == 0) | (kind == 2)).tolist()


def test_a_clearly_better_candidate_stops_after_the_first_chunk() -> None:
    better, worse = _paired(np.random.default_rng(0), 1000, only_a=0.3, only_b=0.02)
    decision = sequential_decision(better, worse, chunk=100, budget=1000, z=pocock_z(10))
    assert (decision.stop, decision.looks, decision.battles) == ("candidate better", 1, 100)
    reverse = sequential_decision(worse, better, chunk=100, budget=1000, z=pocock_z(10))
    assert (reverse.stop, reverse.looks) == ("champion better", 1)


def test_a_smaller_gain_takes_more_chunks() -> None:
    # Every 100 battles: 16 won by the candidate only, 9 by the champion only (+0.07).
    block = np.random.default_rng(3).permutation([0] * 51 + [1] * 16 + [2] * 9 + [3] * 24)
    kind = np.tile(block, 30)
    better, worse = ((kind == 0) | (kind == 1)).tolist(), ((kind == 0) | (kind == 2)).tolist()
    decision = sequential_decision(better, worse, chunk=250, budget=3000, z=pocock_z(12))
    assert decision.stop == "candidate better"
    assert 1 < decision.looks < 12 and decision.battles == 250 * decision.looks


def test_equal_policies_stop_at_the_budget_with_a_short_last_look() -> None:
    same = [True, False, True] * 20
    decision = sequential_decision(same, same, chunk=20, budget=50, z=2.5)
    assert (decision.stop, decision.looks, decision.battles) == ("budget", 3, 50)


def test_outcomes_short_of_the_budget_say_go_on() -> None:
    same = [True, False] * 35  # 70 battles: looks at 20, 40 and 60, none resolved
    decision = sequential_decision(same, same, chunk=20, budget=100, z=2.5)
    assert (decision.stop, decision.looks, decision.battles) == (None, 3, 60)


def test_the_decision_is_the_paired_interval_at_the_per_look_width() -> None:
    a, b = _paired(np.random.default_rng(1), 300, only_a=0.15, only_b=0.1)
    decision = sequential_decision(a, b, chunk=100, budget=300, z=2.3)
    n = decision.battles
    assert decision.difference == paired_difference(a[:n], b[:n], z=2.3)


def test_looking_at_the_pocock_width_keeps_false_promotions_near_2_5_percent() -> None:
    # 10 looks at equal policies: 1.96 at each look promotes far more often than 2.5%.
    rng = np.random.default_rng(7)
    outcomes = [_paired(rng, 1000, only_a=0.125, only_b=0.125) for _ in range(600)]
    rates = {}
    for z in (pocock_z(10), 1.96):
        stops = [sequential_decision(a, b, chunk=100, budget=1000, z=z).stop for a, b in outcomes]
        rates[z] = stops.count("candidate better") / len(stops)
    assert rates[pocock_z(10)] <= 0.045
    assert rates[1.96] > 2 * rates[pocock_z(10)]


@pytest.mark.parametrize(("chunk", "budget", "message"), [(0, 100, "chunk"), (10, 0, "budget")])
def test_bad_chunking_is_refused(chunk: int, budget: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequential_decision([True] * 10, [True] * 10, chunk=chunk, budget=budget, z=2.0)


def test_too_few_outcomes_are_refused() -> None:
    with pytest.raises(ValueError, match="short of the first look"):
        sequential_decision([True] * 5, [True] * 5, chunk=10, budget=100, z=2.0)


class ReversedPlay:
    """Plays on the shared pool and hands the results back last first (like remote tasks
    finishing out of order)."""

    def __init__(self, pool: SimulatorPool) -> None:
        self.pool = pool
        self.calls = 0

    def __call__(
        self, specs: Sequence[BattleSpec], *, keep_logs: bool = False
    ) -> Iterator[BattleResult]:
        self.calls += 1
        yield from reversed(list(self.pool.play(specs, keep_logs=keep_logs)))


def test_a_real_confirmation_stops_early_and_replays_the_same(pool: SimulatorPool) -> None:
    candidate, champion = make_policy("max-damage"), make_policy("random")
    opponent = make_policy("max-damage")
    kwargs = {"seed": 11, "chunk": 20, "budget": 200, "max_turns": 200}
    local = confirm_sequentially(candidate, champion, opponent, **kwargs)  # type: ignore[arg-type]
    assert (local.stopped, local.looks, local.battles) == ("candidate better", 1, 20)
    assert local.promoted and local.difference.a_better
    assert local.z == pytest.approx(pocock_z(10))
    assert (local.candidate.battles, local.champion.battles) == (20, 20)
    play = ReversedPlay(pool)
    replayed = confirm_sequentially(candidate, champion, opponent, play=play, **kwargs)  # type: ignore[arg-type]
    assert play.calls == 2  # one chunk each
    assert replayed.difference == local.difference
    assert (replayed.candidate.won, replayed.champion.won) == (
        local.candidate.won,
        local.champion.won,
    )
