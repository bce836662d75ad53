"""How a sweep's answer depends on its budget: the expected best of `n` trials drawn from
this sweep's (Dodge et al. 2019, "Show your work"), judged by selection score and by the
pick's confirmation win rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from poke_tune.tuning.confirm.confirm import Confirmation
from poke_tune.tuning.records import TrialRow

__all__ = ["BudgetPoint", "budget_curve", "budget_summary"]


@dataclass(frozen=True)
class BudgetPoint:
    """What a sweep of `trials` trials, drawn from this one's, is expected to hand back."""

    trials: int
    selection: float
    """Expected best selection score (optimistic: it is the score selection maximised)."""
    confirmation_low: float
    confirmation_high: float
    """Bounds on the expected confirmation win rate of the trial selection picks: the
    unconfirmed trials' unknown win rates count as 0 and as 1."""


def budget_curve(confirmation: Confirmation, ranked: Sequence[TrialRow]) -> list[BudgetPoint]:
    """Expected performance against the number of trials (Dodge et al. 2019, "Show your
    work"; for offline RL, Kurenkov & Kolesnikov 2022): `n` trials are drawn with
    replacement from this sweep's, selection picks the best of them, and the pick is worth
    its confirmation win rate. A curve still rising at the sweep's size says more trials
    would pay; a flat one says they would not. `ranked`: the scored trials, best
    selection score first (`records.ranked`)."""
    confirmed = {
        s.trial_id: s.result.win_rate for s in confirmation.standings if s.role == "candidate"
    }
    size = len(ranked)
    points = []
    for n in range(1, size + 1):
        selection = low = high = 0.0
        for rank, row in enumerate(ranked):
            # P(the best of n draws has this rank) = P(all below rank-1) - P(all below rank).
            chance = ((size - rank) / size) ** n - ((size - rank - 1) / size) ** n
            selection += chance * (row.score or 0.0)
            if row.trial_id in confirmed:
                low += chance * confirmed[row.trial_id]
                high += chance * confirmed[row.trial_id]
            else:
                high += chance
        points.append(BudgetPoint(n, selection, low, high))
    return points


def budget_summary(points: Sequence[BudgetPoint]) -> str:
    """One line: the expected confirmation of the pick at a quarter, half and all trials."""
    n = len(points)
    sizes = sorted({max(1, n // 4), max(1, n // 2), n}) if points else []
    parts = [
        f"of {size} trials [{points[size - 1].confirmation_low:.3f}, "
        f"{points[size - 1].confirmation_high:.3f}]"
        for size in sizes
    ]
    return (
        "budget: expected confirmation win rate of the trial selection picks "
        "(unconfirmed trials counted as 0 and as 1): " + ", ".join(parts or ["no trials"])
    )
