"""A round's three stages: generating (the champion's new battles and the round's
combined data), sweeping (the spec's sweep on that data, started, resumed or read back)
and measuring (the winner on the curve battles, and the loop's champion after the round).
What the caller hands the loop from outside travels as one `LoopHooks` value.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.eval.head_to_head import head_to_head
from poke_tune.eval.sequential import confirm_sequentially
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.cluster_battles import cluster_play
from poke_tune.tuning.confirm.confirm import winner
from poke_tune.tuning.datasets import Recorder, build_once, prepare_dataset
from poke_tune.tuning.experiment import Experiment
from poke_tune.tuning.loop.folder import Loop
from poke_tune.tuning.loop.plan import (
    PREVIOUS_CHAMPION,
    LoopSettings,
    gain,
    generation_recipe,
    round_parts,
    round_spec,
)
from poke_tune.tuning.policies import resolve_policy
from poke_tune.tuning.records import (
    CurvePoint,
    HeadToHeadCell,
    LoopRecord,
    PromotionRecord,
    RoundRecord,
    SweepRecord,
)
from poke_tune.tuning.spec_data import DatasetSpec
from poke_tune.tuning.sweep import OnBattle, SweepOutcome, resume_sweep, run_sweep, track_sweep

__all__ = ["LoopHooks", "OnRound", "generate_round", "measure_round", "sweep_round"]

_logger = logging.getLogger(__name__)

OnRound = Callable[[LoopSettings, LoopRecord, RoundRecord], None]
"""Called after each finished round (the CLI prints its verdict)."""


@dataclass(frozen=True)
class LoopHooks:
    """What the caller hands the loop, built once (the CLI's): where the rounds' sweeps
    run, and the callbacks the loop calls out through."""

    address: str | None = None
    """The Ray cluster of the rounds' sweeps (None: a local Ray, or RAY_ADDRESS)."""
    on_battle: OnBattle | None = None
    """Each finished battle of the sweeps' confirmations and of the curve."""
    on_round: OnRound | None = None
    """Each finished round."""
    recorder: Recorder | None = None
    """Plays a dataset's `record` recipe (round 0's data; see `tuning.datasets`)."""


def generate_round(settings: LoopSettings, record: LoopRecord, current: RoundRecord) -> None:
    """The round's new battles (cached by their recipe) and its dataset (cached too)."""
    spec = settings.spec
    earlier = [r.champion for r in record.rounds[:-1] if r.champion]
    champion = earlier[-1]
    recipe = generation_recipe(settings, current.index, champion, earlier[:-1])
    _logger.info(
        "round %d: %d battles of %s", current.index, recipe.battles, ", ".join(recipe.policies)
    )
    generated = prepare_dataset(
        DatasetSpec(generate=recipe), tracking_uri=spec.mlflow.tracking_uri
    )
    current.behaviour = recipe.policies
    current.generated = str(generated.source)
    current.new_battles = recipe.battles
    files = [r.generated for r in record.rounds]
    _describe(current, _combined(round_parts(files, settings.rounds.window)))


def _combined(parts: list[str]) -> OfflineDataset:
    if len(parts) == 1:
        return load_dataset(Path(parts[0]))
    key = hashlib.sha256(" ".join(Path(p).name for p in parts).encode()).hexdigest()[:16]
    out = cache_dir() / "combined" / f"{key}.json"  # the rounds' shards listed, not copied
    paths = [Path(p) for p in parts]
    return load_dataset(build_once(out, lambda path: combine_datasets(paths, path)))


def _describe(current: RoundRecord, dataset: OfflineDataset) -> None:
    parts = dataset.header.generator.get("parts")
    current.data = [p["path"] for p in parts] if parts else [str(dataset.source)]
    current.dataset = str(dataset.source)
    current.battles = dataset.num_battles
    current.trajectories = dataset.num_trajectories
    current.transitions = dataset.num_transitions


def sweep_round(
    loop: Loop, record: LoopRecord, current: RoundRecord, hooks: LoopHooks
) -> SweepOutcome:
    """The round's sweep: started, resumed where it was cut off, or read back if it ended."""
    settings, spec = loop.settings, loop.spec
    if current.index == 0:
        dataset = prepare_dataset(
            spec.dataset, recorder=hooks.recorder, tracking_uri=spec.mlflow.tracking_uri
        )
        current.generated = str(dataset.source)
        current.new_battles = dataset.num_battles
        _describe(current, dataset)
        sweep_spec = round_spec(settings, 0, loop.folder)
    else:
        previous = record.rounds[current.index - 1]
        sweep_spec = round_spec(
            settings,
            current.index,
            loop.folder,
            dataset=Path(current.dataset),
            warm_start=_best_params(record, previous),
        )
    experiment = Experiment(sweep_spec)
    assert experiment.folder is not None
    current.sweep = str(experiment.folder)
    if not experiment.started:
        started = SweepRecord(
            spec_file=record.spec_file, overrides=record.overrides, argv=record.argv
        )
        outcome = run_sweep(
            sweep_spec,
            address=hooks.address,
            record=started,
            on_battle=hooks.on_battle,
            recorder=hooks.recorder,
        )
    elif experiment.read_record().stage in ("searching", "interrupted"):
        outcome = resume_sweep(
            experiment.folder,
            address=hooks.address,
            on_battle=hooks.on_battle,
            recorder=hooks.recorder,
        )
    else:  # finished: its answer and promotion read back, nothing played again
        outcome = track_sweep(experiment.folder)
    if not outcome.interrupted:
        _answer(current, outcome)
    return outcome


def _best_params(record: LoopRecord, previous: RoundRecord) -> dict[str, object]:
    """The previous round's best hyperparameters: its winner's, else its champion's."""
    if previous.best_params:
        return previous.best_params
    champion = previous.champion_round
    return record.rounds[champion].best_params if champion is not None else {}


def _answer(current: RoundRecord, outcome: SweepOutcome) -> None:
    """The round's winner, pinned, and what the registry decided of it."""
    answer = winner(outcome.ranked, outcome.confirmation)
    if answer is None or answer.checkpoint is None:
        current.winner = None
        current.best_params = {}
        return
    current.best_params = dict(answer.params)
    tracking = outcome.tracking
    promotion = tracking.promotion if tracking is not None else None
    if tracking is not None:
        current.sweep_run_id = tracking.parent_run_id
    if promotion is not None:
        current.winner = f"models:/{promotion.model}/{promotion.version}"
        current.promotion = ("promoted: " if promotion.promoted else "not promoted: ") + (
            promotion.reason
        )
        current.promoted = promotion.promoted
    else:
        current.winner = str(answer.checkpoint)


def measure_round(
    settings: LoopSettings,
    record: LoopRecord,
    current: RoundRecord,
    on_battle: OnBattle | None,
) -> None:
    """The winner's curve; the loop's champion after the round."""
    spec, rounds = settings.spec, settings.rounds
    previous = record.rounds[current.index - 1] if current.index > 0 else None
    if current.winner is None:
        if previous is None:
            raise ValueError(
                f"round 0 of {spec.name!r} found no champion (every trial failed or "
                f"diverged): see {current.sweep}"
            )
        current.promoted = False
        current.champion_round, current.champion = previous.champion_round, previous.champion
        return
    uri = spec.mlflow.tracking_uri
    policy = resolve_policy(current.winner, uri)
    against: dict[str, Policy] = {name: make_policy(name) for name in settings.curve_against}
    if previous is not None and previous.champion is not None:
        against[PREVIOUS_CHAMPION] = resolve_policy(previous.champion, uri)
    done = {p.opponent for p in current.curve}
    for opponent, other in against.items():
        if opponent in done:
            continue
        result = evaluate(
            policy,
            other,
            battles=rounds.curve_battles,
            seed=rounds.curve_seed,
            battle_format=settings.recipe.battle_format,
            max_turns=spec.objective.max_turns,
            on_result=on_battle,
            play=cluster_play(),
        )
        current.curve.append(
            CurvePoint(
                opponent=opponent,
                win_rate=result.win_rate,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                won=list(result.won),
            )
        )
    if previous is None:
        current.promoted = True if current.promoted is None else current.promoted
        beats = True  # round 0's winner starts the loop, promoted or not
    elif rounds.promotion is not None and previous.champion is not None:
        beats = _promote_sequentially(settings, current, policy, previous.champion, on_battle)
    elif spec.mlflow.enabled:
        beats = bool(current.promoted)
    else:
        current.champion_round = current.index  # compare the winner as if champion
        difference = gain(record, current.index, settings.reference)
        beats = difference is not None and difference.difference > 0
        current.promoted = beats
    if beats or previous is None:
        current.champion_round, current.champion = current.index, current.winner
    else:
        current.champion_round, current.champion = previous.champion_round, previous.champion
    if rounds.head_to_head_battles and (previous is None or beats):
        _head_to_head(settings, record, current, on_battle)


def _promote_sequentially(
    settings: LoopSettings,
    current: RoundRecord,
    policy: Policy,
    champion: str,
    on_battle: OnBattle | None,
) -> bool:
    """The winner against the champion in sequential paired battles (`rounds.promotion`):
    promoted only when the paired interval excludes 0 in its favour. With MLflow on, the
    registry's `champion` alias follows the loop's decision, so the next round's
    confirmation replays the loop's champion."""
    spec, promotion = settings.spec, settings.rounds.promotion
    assert promotion is not None, "called only with rounds.promotion"
    if current.sequential is None:  # not yet played (a resumed round keeps its answer)
        result = confirm_sequentially(
            policy,
            resolve_policy(champion, spec.mlflow.tracking_uri),
            make_policy(settings.reference),
            seed=promotion.seed,
            chunk=promotion.chunk,
            budget=promotion.budget,
            max_turns=spec.objective.max_turns,
            battle_format=settings.recipe.battle_format,
            play=cluster_play(),
            on_result=on_battle,
        )
        difference = result.difference
        current.sequential = PromotionRecord(
            opponent=settings.reference,
            difference=difference.difference,
            ci_low=difference.ci_low,
            ci_high=difference.ci_high,
            battles=result.battles,
            looks=result.looks,
            stopped=result.stopped,
        )
    decided = current.sequential
    current.promoted = decided.stopped == "candidate better"
    current.promotion = (
        f"{'promoted' if current.promoted else 'not promoted'}: {decided.stopped} after "
        f"{decided.battles} paired battles against {decided.opponent} "
        f"({decided.difference:+.3f} [{decided.ci_low:+.3f}, {decided.ci_high:+.3f}])"
    )
    if spec.mlflow.enabled and current.winner and current.winner.startswith("models:/"):
        from poke_tune.tuning.track.registry import move_champion  # MLflow only when on

        move_champion(
            spec.mlflow.tracking_uri,
            current.winner if current.promoted else champion,
            f"the flywheel's sequential promotion, round {current.index}: {current.promotion}",
        )
    return current.promoted


def _head_to_head(
    settings: LoopSettings, record: LoopRecord, current: RoundRecord, on_battle: OnBattle | None
) -> None:
    """The new champion against every earlier champion on the same seeded battles (the
    curve's seed: the same teams, other opponents), both directions recorded."""
    rounds, uri = settings.rounds, settings.spec.mlflow.tracking_uri
    assert current.champion is not None
    earlier = {
        r.index: r.champion
        for r in record.rounds[: current.index]
        if r.champion_round == r.index and r.champion is not None
    }
    played = {(cell.row, cell.column) for cell in record.head_to_head}
    new = resolve_policy(current.champion, uri)
    for index, name in earlier.items():
        if (current.index, index) in played:
            continue
        match = head_to_head(
            {"new": new, "old": resolve_policy(name, uri)},
            battles=rounds.head_to_head_battles,
            seed=rounds.curve_seed,
            max_turns=settings.spec.objective.max_turns,
            battle_format=settings.recipe.battle_format,
            play=cluster_play(),
            on_result=on_battle,
        )
        for row, column, key in (
            (current.index, index, ("new", "old")),
            (index, current.index, ("old", "new")),
        ):
            result = match.result(*key)
            assert result is not None
            record.head_to_head.append(
                HeadToHeadCell(
                    row=row,
                    column=column,
                    win_rate=result.win_rate,
                    ci_low=result.ci_low,
                    ci_high=result.ci_high,
                    battles=result.battles,
                )
            )
