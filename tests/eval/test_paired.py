"""Paired differences of win rates over shared battles (no simulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from poke_tune.eval.paired import paired_difference


def test_difference_counts_only_the_discordant_battles() -> None:
    a = [True, True, False, False, True, True]
    b = [True, False, False, True, False, True]
    result = paired_difference(a, b)
    assert (result.only_a, result.only_b, result.battles) == (2, 1, 6)
    assert result.difference == pytest.approx(1 / 6)
    assert result.ci_low < result.difference < result.ci_high


def test_identical_outcomes_give_an_interval_around_zero() -> None:
    same = [True, False] * 50
    result = paired_difference(same, same)
    assert result.difference == 0.0
    assert result.ci_low < 0.0 < result.ci_high
    assert not result.a_better and not result.b_better


def test_a_clear_gap_is_found() -> None:
    better = [True] * 80 + [False] * 20
    worse = [True] * 40 + [False] * 60
    assert paired_difference(better, worse).a_better
    assert paired_difference(worse, better).b_better


def test_paired_interval_is_tighter_than_the_unpaired_one() -> None:
    # 200 shared battles, two policies that agree on 180: the paired interval is much
    # narrower than the +-0.1 of comparing two independent win rates near 0.5.
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.5
    b = a.copy()
    flip = rng.choice(200, 20, replace=False)
    b[flip] = ~b[flip]
    result = paired_difference(a.tolist(), b.tolist())
    assert result.ci_high - result.ci_low < 0.1


def test_coverage_is_near_95_percent_for_equal_policies() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(2000):
        shared = rng.random(150) < 0.5  # battles both win or lose (teams decide)
        noise_a, noise_b = rng.random(150) < 0.15, rng.random(150) < 0.15
        a, b = shared ^ noise_a, shared ^ noise_b
        result = paired_difference(a.tolist(), b.tolist())
        covered += result.ci_low <= 0.0 <= result.ci_high
    assert 0.93 <= covered / 2000 <= 0.98


def test_unequal_battle_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="same non-empty battles"):
        paired_difference([True], [True, False])
