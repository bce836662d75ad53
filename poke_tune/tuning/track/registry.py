"""Stage 4, promote: the winner as a registered MLflow model, and the `champion` alias.

The winner's checkpoint is logged as a pyfunc model ("models from code", so it loads with
`torch.load(weights_only=True)`) and registered. A sweep registers its winner once: a
resumed, re-confirmed or re-tracked sweep finds the version it registered by its tags.

The alias `champion` moves to the new version only when, on the confirmation battles,
the winner beats the best baseline beyond the paired 95% interval and beats the current
champion (replayed on the same battles). Without a confirmation (offline objectives) a
champion judged on the same objective is compared by its recorded value. The decision
and its numbers are written on the model version (tags and description).
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from poke_tune.algos import CheckpointError, read_checkpoint
from poke_tune.eval.paired import PairedDifference
from poke_tune.sim.policies import Policy
from poke_tune.tuning.confirm.confirm import Confirmation
from poke_tune.tuning.confirm.report import verdict
from poke_tune.tuning.policies import fluent_tracking_uri, load_registered_policy
from poke_tune.tuning.records import TrialRow
from poke_tune.tuning.spec import ObjectiveSpec, SearchSpec
from poke_tune.tuning.track.store import EXPERIMENT_TAG, TRIAL_TAG
from poke_tune.tuning.track.tracker import CHAMPION, Promotion

__all__ = [
    "CHAMPION",
    "Promotion",
    "current_champion",
    "move_champion",
    "promote",
    "register",
    "registered_name",
    "replayable_champion",
]

_logger = logging.getLogger(__name__)

CHECKPOINT_TAG = "poke_tune.checkpoint"


def registered_name(spec: SearchSpec) -> str:
    return spec.mlflow.registered_model or f"poke-tune-{spec.name}"


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def replayable_champion(client: MlflowClient, name: str, tracking_uri: str) -> Policy | None:
    """The current champion as a policy to replay on the confirmation battles; `None` when
    there is none, or when its checkpoint cannot be loaded here (typically: saved with
    another encoder version). The winner is then judged against the baselines alone, with
    a warning, instead of every later sweep failing at its confirmation."""
    champion = current_champion(client, name)
    if champion is None:
        return None
    try:
        policy = load_registered_policy(f"models:/{name}/{champion.version}", tracking_uri)
    except CheckpointError as error:
        _logger.warning("champion v%s is not replayed: %s", champion.version, error)
        return None
    policy.name = f"champion v{champion.version}"
    return policy


def register(
    client: MlflowClient, spec: SearchSpec, experiment: str, row: TrialRow, run_id: str
) -> str:
    """The model version of `row`'s checkpoint: found when this sweep registered it
    before (resume, confirm, track), else logged and registered now."""
    name = registered_name(spec)
    assert row.checkpoint is not None
    try:
        known = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        known = []
    for found in known:
        tags = found.tags or {}
        if tags.get(EXPERIMENT_TAG) == experiment and tags.get(CHECKPOINT_TAG) == str(
            row.checkpoint
        ):
            return str(found.version)
    state = read_checkpoint(row.checkpoint)
    example = {
        "observation": np.zeros((1, state["observation_size"]), np.float32),
        "action_mask": np.ones((1, state["num_actions"]), bool),
    }
    with fluent_tracking_uri(spec.mlflow.tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="policy",
            # Models from code: MLflow imports this file instead of unpickling an object.
            python_model=str(Path(__file__).with_name("policy_model.py")),
            artifacts={"checkpoint": str(row.checkpoint)},
            input_example=example,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    for key, value in {
        EXPERIMENT_TAG: experiment,
        TRIAL_TAG: row.trial_id,
        CHECKPOINT_TAG: str(row.checkpoint),
        "objective": objective_tag(spec.objective),
        "objective_value": str(row.score),
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def objective_tag(objective: ObjectiveSpec) -> str:
    """The selection objective in words (a champion's recorded value is comparable only
    with another judged on the same objective)."""
    if objective.uses_battles:
        return (
            f"{objective.metric} vs {objective.opponent}, {objective.battles} battles, "
            f"seed {objective.seed}, max_turns {objective.max_turns}"
        )
    return f"{objective.metric} ({objective.mode})"


def _interval(difference: PairedDifference) -> str:
    return f"{difference.difference:+.3f} [{difference.ci_low:+.3f}, {difference.ci_high:+.3f}]"


def promote(
    client: MlflowClient,
    spec: SearchSpec,
    version: str,
    row: TrialRow,
    confirmation: Confirmation | None,
) -> Promotion:
    """Move `champion` to `version` if it earned it; record why (or why not) on it. The
    champion itself, confirmed again (`poke-tune confirm`), keeps the alias and gets the
    new confirmation's numbers, whatever they say."""
    name = registered_name(spec)
    champion = current_champion(client, name)
    already = champion is not None and str(champion.version) == version
    tags: dict[str, str] = {}
    if confirmation is not None and confirmation.winner is not None:
        baseline = confirmation.winner.vs_best_baseline
        # The champion confirmed again is not compared with itself.
        versus = None if already else confirmation.vs_current_champion
        tags |= _confirmation_tags(confirmation, versus)
        if not confirmation.beats_baselines:
            promoted = False
            reason = (
                f"does not beat the best baseline {confirmation.best_baseline} beyond the "
                f"interval ({_interval(baseline) if baseline else 'n/a'})"
            )
        elif versus is not None and not versus.a_better:
            # The same bar as against the baselines: a champion is replaced only by a
            # policy that beats it beyond the paired interval (a flywheel round must earn it).
            promoted = False
            current = champion.version if champion else "?"
            reason = (
                f"does not beat the current champion v{current} beyond the interval "
                f"({_interval(versus)})"
            )
        else:
            promoted = True
            reason = "beats the best baseline" + (
                f" and the previous champion ({_interval(versus)})" if versus else ""
            )
            if versus is None and champion is not None and not already:
                reason += f"; the previous champion v{champion.version} was not replayed"
    elif already:
        promoted, reason = True, ""
    else:
        promoted, reason = _better_objective(spec.objective, row, champion)
    if already:  # the alias stays; the numbers recorded are this confirmation's
        promoted = True
        reason = "already the champion" + (f"; this confirmation: {reason}" if reason else "")
    tags["promotion"] = ("promoted: " if promoted else "not promoted: ") + reason
    # An earlier confirmation's numbers do not outlive it.
    for key in client.get_model_version(name, version).tags:
        if key.startswith("confirm.") and key not in tags:
            client.delete_model_version_tag(name, version, key)
    for key, value_text in tags.items():
        client.set_model_version_tag(name, version, key, value_text)
    summary = verdict(confirmation) + "\n\n" if confirmation is not None else ""
    client.update_model_version(name, version, description=summary + tags["promotion"])
    if promoted and not already:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(name, version, promoted, reason)


def move_champion(tracking_uri: str | None, model_uri: str, reason: str) -> None:
    """Point `champion` at `model_uri` (`models:/NAME/VERSION`) when a decision made
    outside the sweep's confirmation (the flywheel's sequential promotion) says so, and
    write why on the version. The next round's confirmation then replays this champion."""
    name, _, version = model_uri.removeprefix("models:/").rpartition("/")
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(name, version, "promotion", reason)
    champion = current_champion(client, name)
    if champion is None or str(champion.version) != version:
        client.set_registered_model_alias(name, CHAMPION, version)


def _confirmation_tags(
    confirmation: Confirmation, versus: PairedDifference | None
) -> dict[str, str]:
    winner = confirmation.winner
    assert winner is not None
    result = winner.result
    tags = {
        "confirm.opponent": confirmation.opponent,
        "confirm.seed": str(confirmation.seed),
        "confirm.battles": str(result.battles),
        "confirm.win_rate": f"{result.win_rate:.4f}",
        "confirm.ci": f"[{result.ci_low:.4f}, {result.ci_high:.4f}]",
    }
    if winner.vs_best_baseline is not None:
        tags[f"confirm.vs_{confirmation.best_baseline}"] = _interval(winner.vs_best_baseline)
    if versus is not None:
        tags["confirm.vs_previous_champion"] = _interval(versus)
    return tags


def _better_objective(
    objective: ObjectiveSpec, row: TrialRow, champion: ModelVersion | None
) -> tuple[bool, str]:
    """Without a confirmation (offline objectives): better recorded objective value than a
    champion judged on the same objective."""
    if champion is None:
        return True, "first registered version"
    recorded = None
    if champion.tags.get("objective") == objective_tag(objective):
        recorded = float(champion.tags["objective_value"])
    if recorded is None or row.score is None:
        return False, "the champion was judged on another objective: not comparable"
    sign = objective.sign
    return sign * row.score > sign * recorded, (
        f"objective {row.score:.4g} vs the champion's {recorded:.4g}"
    )
