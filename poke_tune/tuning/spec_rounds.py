"""The spec's `rounds:` section: the data flywheel's rounds, their league, promotion and
curve (`poke-tune iterate`; `tuning/loop/` runs it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from poke_tune.tuning.spec_base import Strict

__all__ = ["CURVE_SEED", "PROMOTION_SEED", "PromotionSpec", "RoundsLeague", "RoundsSpec"]

CURVE_SEED = 20_261_404
"""Seed of the data flywheel's curve battles (`rounds.curve_battles`): apart from the
selection (`EVAL_SEED`), confirmation (`CONFIRM_SEED`) and benchmark seeds."""
PROMOTION_SEED = 20_261_207
"""Seed of the flywheel's sequential promotion battles: apart from the curve's, which
report the champion it picks."""


class RoundsLeague(Strict):
    """Each round's battles drawn per battle (`data.league`), not every pair in turn."""

    champion_share: float = Field(default=0.5, ge=0.0, le=1.0)
    """Battles of the champion (a temperature drawn per battle) against the pool; the rest
    are two of the pool (the scripted bots' exploring battles)."""
    earlier_share: float = Field(default=0.25, ge=0.0, lt=1.0)
    """With `earlier_champions`, the earlier champions' share of the pool's draws (equal
    among them; the opponents share the rest equally)."""


class PromotionSpec(Strict):
    """A round's winner is promoted over the champion by sequential paired battles
    (`eval.sequential`): chunks of `chunk` battles against the reference opponent until the
    paired interval (Pocock's width for the looks the budget allows) excludes 0, or
    `budget` battles are spent."""

    chunk: int = Field(default=500, gt=0)
    budget: int = Field(default=3000, gt=0)
    seed: int = PROMOTION_SEED


class RoundsSpec(Strict):
    """The data flywheel (`poke-tune iterate`): after the spec's sweep (round 0), each
    round's champion plays new battles with exploration against a pool of opponents, the
    battles join the data, and the sweep runs again on the grown dataset, warm-started from
    the previous round's best hyperparameters. Every round registers under the same model,
    so its confirmation replays the previous champion and promotion must beat it."""

    count: int = Field(default=2, ge=1)
    """Rounds after round 0."""
    battles: int = Field(default=400, gt=0)
    """New battles per round."""
    temperatures: list[Annotated[float, Field(gt=0)]] = Field(default=[0.1, 0.2], min_length=1)
    """The champion plays as `:softmax=T` for each T (normalised per decision: the best
    legal action exp(1/T) times as likely as the worst). The quick start's champion picks
    its argmax with probability 0.96, 0.89, 0.79, 0.62, 0.50 on average at T = 0.02, 0.05,
    0.1, 0.2, 0.3 (2,838 decisions of its data): 0.1 and 0.2 are the issue's probe's 0.78
    and 0.57."""
    opponents: list[str] | None = None
    """The pool besides earlier champions; default: the generate recipe's policies."""
    earlier_champions: bool = False
    """Add earlier rounds' champions (greedy) to the pool."""
    window: int | None = Field(default=None, gt=0)
    """Train on the last N rounds' data (round 0's data counts as a round); null: all."""
    num_samples: int | None = Field(default=None, gt=0)
    """Trials per round after round 0; default the spec's `num_samples`."""
    min_gain: float | None = None
    """Stop rule: a round whose champion beats the previous one by less than this (win
    rate against `reference` on the curve battles) ends the loop; null: never early."""
    reference: str | None = None
    """The stop rule's opponent; default the objective's."""
    curve_battles: int = Field(default=500, gt=0)
    """Fresh battles (the same for every round: paired) of the loop's curve."""
    curve_opponents: list[str] = Field(default=["max-damage", "heuristic"], min_length=1)
    curve_seed: int = CURVE_SEED
    league: RoundsLeague | None = None
    """Draw each battle's players (a league); null: every ordered pair in turn."""
    promotion: PromotionSpec | None = None
    """Promote by sequential paired battles against the previous champion; null: the
    registry's verdict (MLflow on), else the curve's paired difference."""
    head_to_head_battles: int = Field(default=0, ge=0)
    """Battles of each new champion against every earlier one (the report's matrix); 0:
    none."""

    def reference_opponent(self, objective_opponent: str) -> str:
        """The stop rule's and the promotion's opponent: `reference`, else the objective's."""
        return self.reference or objective_opponent

    def curve_against(self, objective_opponent: str) -> list[str]:
        """The curve's opponents, the stop rule's reference among them."""
        reference = self.reference_opponent(objective_opponent)
        return list(dict.fromkeys([*self.curve_opponents, reference]))
