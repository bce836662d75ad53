"""The data flywheel's plan: the loop's settings checked once, what each round trains on,
which battles it generates, the spec of its sweep, and when the loop stops. Pure functions
over the settings and the loop record; the stages (`stages.py`) run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poke_tune.eval.paired import PairedDifference, paired_difference
from poke_tune.tuning.records import CurvePoint, LoopRecord
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_data import DatasetSpec, GenerateRecipe, LeagueRecipe
from poke_tune.tuning.spec_rounds import RoundsSpec

__all__ = [
    "PREVIOUS_CHAMPION",
    "LoopSettings",
    "gain",
    "generation_recipe",
    "model_name",
    "round_name",
    "round_parts",
    "round_spec",
    "stop_reason",
]

PREVIOUS_CHAMPION = "previous champion"
"""The curve's head-to-head opponent: the champion before this round."""


@dataclass(frozen=True)
class LoopSettings:
    """A loop's spec, checked once (`LoopSettings.of`): the sweep every round runs, its
    `rounds:` section, and the recipe the rounds' new battles follow."""

    spec: SearchSpec
    rounds: RoundsSpec
    recipe: GenerateRecipe
    """The dataset's `generate` recipe: each round's battles are made like its battles."""

    @classmethod
    def of(cls, spec: SearchSpec) -> LoopSettings:
        """The settings of a loop of `spec`; a spec without a `rounds:` section is refused."""
        if spec.rounds is None:
            raise ValueError(
                f"spec {spec.name!r} has no `rounds:` section: add one or pass --rounds N"
            )
        if spec.dataset.generate is None:  # SearchSpec._rounds_problems refuses it first
            raise ValueError(
                f"spec {spec.name!r}: the data flywheel generates battles like the dataset's "
                "`generate` recipe, and this dataset has none"
            )
        return cls(spec=spec, rounds=spec.rounds, recipe=spec.dataset.generate)

    @property
    def reference(self) -> str:
        """The stop rule's opponent (the objective's unless `rounds.reference`)."""
        return self.rounds.reference_opponent(self.spec.objective.opponent)

    @property
    def curve_against(self) -> list[str]:
        """The curve's opponents, the stop rule's reference among them."""
        return self.rounds.curve_against(self.spec.objective.opponent)


def round_name(spec: SearchSpec, index: int) -> str:
    """The sweep name of round `index`: `NAME-rINDEX`."""
    return f"{spec.name}-r{index}"


def model_name(spec: SearchSpec) -> str:
    """The one registered model of every round (the sweep's default would differ)."""
    return spec.mlflow.registered_model or f"poke-tune-{spec.name}"


def round_parts(files: Sequence[str], window: int | None) -> list[str]:
    """The data files a round trains on: the last `window` rounds' (all when None)."""
    return list(files if window is None else files[-window:])


def generation_recipe(
    settings: LoopSettings, index: int, champion: str, earlier: Sequence[str] = ()
) -> GenerateRecipe:
    """Round `index`'s new battles: the champion at each temperature, the opponent pool
    and (`earlier_champions`) the earlier champions. Every ordered pair of them in turn,
    or with `rounds.league` drawn per battle: the champion against the pool in
    `champion_share` of the battles, the earlier champions `earlier_share` of the pool's
    draws. Seeded apart from every other round (the recipe's seed + index) and otherwise
    like the dataset's recipe."""
    rounds, base = settings.rounds, settings.recipe
    players = list(dict.fromkeys(f"{champion}:softmax={t:g}" for t in rounds.temperatures))
    opponents = list(rounds.opponents if rounds.opponents is not None else base.policies)
    earlier_pool = (
        [name for name in earlier if name != champion] if rounds.earlier_champions else []
    )
    weights = {name: 1.0 for name in players}
    for name in opponents:
        weights.setdefault(name, 1.0)
    if earlier_pool and rounds.league is not None:
        share = rounds.league.earlier_share  # of the pool's total weight
        each = share / (1.0 - share) * len(opponents) / len(earlier_pool)
        for name in earlier_pool:
            weights.setdefault(name, each)
    else:
        for name in earlier_pool:
            weights.setdefault(name, 1.0)
    league = None
    if rounds.league is not None:
        league = LeagueRecipe(
            learners=len(players),
            learner_share=rounds.league.champion_share,
            weights=list(weights.values()),
        )
    return base.model_copy(
        update={
            "battles": rounds.battles,
            "policies": list(weights),
            "seed": base.seed + index,
            "league": league,
        }
    )


def round_spec(
    settings: LoopSettings,
    index: int,
    folder: Path,
    *,
    dataset: Path | None = None,
    warm_start: dict[str, Any] | None = None,
) -> SearchSpec:
    """The sweep of round `index`, in the loop folder, registering under the loop's model
    and logging into the loop's MLflow experiment. Later rounds train on `dataset`, start
    from `warm_start` (the previous round's best), run `rounds.num_samples` trials and keep
    the spec's baselines (not the learned behaviour policies of the grown data). Each
    round's sampler is seeded apart (the searcher's seed + index): with one seed, TPE's
    first random proposals repeat every round and one of them can be the warm start
    again, a duplicate trial."""
    spec = settings.spec
    mlflow = spec.mlflow.model_copy(
        update={
            "registered_model": model_name(spec),
            "experiment": spec.mlflow.experiment or spec.name,
        }
    )
    update: dict[str, Any] = {
        "name": round_name(spec, index),
        "storage_path": str(folder),
        "mlflow": mlflow,
        "rounds": None,
    }
    if index > 0:
        assert dataset is not None, "a later round trains on its combined data"
        baselines = spec.confirm.baselines
        if baselines is None:
            baselines = list(dict.fromkeys(settings.recipe.policies))
        starts = [warm_start] if warm_start else []
        starts += [p for p in spec.searcher.warm_start if p != warm_start]
        update |= {
            "dataset": DatasetSpec(path=dataset),
            "confirm": spec.confirm.model_copy(update={"baselines": baselines}),
            "searcher": spec.searcher.model_copy(
                update={"warm_start": starts, "seed": spec.searcher.seed + index}
            ),
            "num_samples": settings.rounds.num_samples or spec.num_samples,
        }
    return spec.model_copy(update=update)


def gain(
    record: LoopRecord, index: int, reference: str, since: int | None = None
) -> PairedDifference | None:
    """Round `index`'s champion against round `since`'s (default `index - 1`) on the
    curve battles against `reference` (None for round 0; zero when the champion stayed)."""
    if index == 0:
        return None
    now, before = (
        _champion_point(record, index, reference),
        _champion_point(record, index - 1 if since is None else since, reference),
    )
    if now is None or before is None:
        return None
    return paired_difference(now.won, before.won)


def _champion_point(record: LoopRecord, index: int, opponent: str) -> CurvePoint | None:
    champion = record.rounds[index].champion_round
    return None if champion is None else record.rounds[champion].point(opponent)


def stop_reason(settings: LoopSettings, record: LoopRecord, index: int) -> str | None:
    """Why the loop ends after round `index`: all rounds done, or the stop rule."""
    rounds = settings.rounds
    if index >= rounds.count:
        return None
    if rounds.min_gain is None or index == 0:
        return None
    reference = settings.reference
    difference = gain(record, index, reference)
    if difference is None or difference.difference >= rounds.min_gain:
        return None
    return (
        f"round {index}'s champion gained {difference.difference:+.3f} against {reference} "
        f"(paired [{difference.ci_low:+.3f}, {difference.ci_high:+.3f}]), less than "
        f"rounds.min_gain {rounds.min_gain:+.3f}"
    )
