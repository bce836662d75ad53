"""The league's per-battle draws: shares, weights, seats, and seeds."""

from __future__ import annotations

from collections import Counter

import pytest

from poke_tune.data.league import League


def _draws(league: League, battles: int, seed: int = 0) -> list[tuple[int, int]]:
    return [league.matchup(seed, i) for i in range(battles)]


def test_learner_share_weights_and_seats_are_what_was_asked() -> None:
    # Policies 0-1 learn, 2-4 are the pool weighted 2:1:1; 70% learner battles.
    league = League(learners=2, learner_share=0.7, weights=(1, 1, 2, 1, 1), policies=5)
    draws = _draws(league, 20_000)
    with_learner = [d for d in draws if min(d) < 2]
    assert abs(len(with_learner) / len(draws) - 0.7) < 0.015
    assert all(max(d) >= 2 and min(d) < 2 for d in with_learner)  # never two learners
    assert abs(sum(d[0] < 2 for d in with_learner) / len(with_learner) - 0.5) < 0.02
    pool = Counter(i for d in draws for i in d if i >= 2)
    assert abs(pool[2] / (pool[3] + pool[4]) - 1.0) < 0.06  # 2 : (1 + 1)
    learners = Counter(min(d) for d in with_learner)
    assert abs(learners[0] / learners[1] - 1.0) < 0.08


def test_a_battle_draws_the_same_players_whatever_the_count() -> None:
    league = League(learners=1, learner_share=0.5, weights=None, policies=3)
    assert _draws(league, 50) == _draws(league, 200)[:50]
    assert _draws(league, 50, seed=1) != _draws(league, 50, seed=0)


def test_only_learner_battles_and_only_pool_battles() -> None:
    assert all(min(d) == 0 for d in _draws(League(1, 1.0, None, 3), 200))
    assert all(min(d) >= 1 for d in _draws(League(1, 0.0, None, 3), 200))


@pytest.mark.parametrize(
    ("learners", "share", "weights", "message"),
    [
        (3, 0.5, None, "at least one policy for the pool"),
        (0, 0.5, None, "at least one policy for the pool"),
        (1, 1.5, None, r"learner_share must be in \[0, 1\]"),
        (1, 0.5, (1.0, 2.0), "one positive weight per policy"),
        (1, 0.5, (1.0, 0.0, 1.0), "one positive weight per policy"),
    ],
)
def test_a_league_that_does_not_fit_says_why(
    learners: int, share: float, weights: tuple[float, ...] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        League(learners, share, weights, policies=3)
