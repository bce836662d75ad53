"""The report's logic on hand-made records: the expected-best-vs-budget curve."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from poke_tune.eval.winrate import WinRate
from poke_tune.tuning.confirm.budget import budget_curve, budget_summary
from poke_tune.tuning.confirm.confirm import Confirmation, Standing
from poke_tune.tuning.records import TrialRow, ranked
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).parents[1] / "tiny.yaml"


def _row(trial_id: str, score: float) -> TrialRow:
    return TrialRow(trial_id, {}, score, "completed", 3, Path(f"/ckpt/{trial_id}"))


def _standing(trial_id: str, win_rate: float) -> Standing:
    result = WinRate("p", "max-damage", 100, int(win_rate * 100), 0, 0, win_rate, 0, 1, 0, 0, 0)
    return Standing(name=trial_id, role="candidate", result=result, trial_id=trial_id)


def _confirmation(standings: list[Standing]) -> Confirmation:
    return Confirmation("max-damage", 1, 100, standings, None, None, None, 0, 0)


def test_budget_curve_is_the_expected_pick_of_n_trials_drawn_with_replacement() -> None:
    spec = load_spec(TINY)
    scores = {"a": 0.9, "b": 0.7, "c": 0.5}
    confirmed = {"a": 0.45, "b": 0.55, "c": 0.40}
    rows = [_row(t, s) for t, s in scores.items()]
    standings = [_standing(t, w) for t, w in confirmed.items()]
    curve = budget_curve(_confirmation(standings), ranked(rows, spec.objective))
    assert [p.trials for p in curve] == [1, 2, 3]
    for point in curve:
        # Every ordered draw of n trials is equally likely; selection picks its best.
        picks = [
            max(draw, key=scores.__getitem__)
            for draw in itertools.product(scores, repeat=point.trials)
        ]
        assert point.selection == pytest.approx(np.mean([scores[t] for t in picks]))
        assert point.confirmation_low == point.confirmation_high
        assert point.confirmation_low == pytest.approx(np.mean([confirmed[t] for t in picks]))
    # One trial is the average trial; more trials make selection pick "a" ever more often.
    assert curve[0].confirmation_low == pytest.approx(np.mean(list(confirmed.values())))
    assert curve[0].selection < curve[1].selection < curve[2].selection


def test_budget_curve_bounds_the_unconfirmed_trials_between_0_and_1() -> None:
    spec = load_spec(TINY)
    rows = [_row("a", 0.9), _row("b", 0.7), _row("c", 0.5), _row("d", 0.3)]
    curve = budget_curve(_confirmation([_standing("a", 0.6)]), ranked(rows, spec.objective))
    # The pick of one trial is unconfirmed 3 times in 4; of 4 trials, (3/4)^4 of the time.
    assert (curve[0].confirmation_low, curve[0].confirmation_high) == pytest.approx((0.15, 0.9))
    unknown = 0.75**4
    assert curve[3].confirmation_low == pytest.approx(0.6 * (1 - unknown))
    assert curve[3].confirmation_high == pytest.approx(0.6 * (1 - unknown) + unknown)
    assert budget_summary(curve).endswith(
        f"4 trials [{curve[3].confirmation_low:.3f}, {curve[3].confirmation_high:.3f}]"
    )
