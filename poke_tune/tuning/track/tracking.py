"""MLflow tracking of a sweep (the `Tracker` of `tracker.py`): a parent run per sweep, a
child run per trial, the confirmation's numbers and report, the winner's checkpoint and
its registered model (`registry.py`).

Everything is written from the Tune driver (a `tune.Callback`), never from trials: trials
need no tracking access, and results arrive in order. Writes go through the `Outbox` of
`store.py`: they are sent in order, many metric values per `log_batch` call, and a write
that fails while the tracking server is unreachable stays queued and is retried later, so
an outage loses nothing. Whatever is still unsent when the sweep ends (after
`mlflow.retry_timeout_s`) is saved to `mlflow_unsent.json` in the experiment folder;
`poke-tune track EXPERIMENT` sends it and finishes the sweep's logging once the server is
back.

Credentials in the tracking URI are never logged: params, tags and messages are redacted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import ray
import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

import poke_tune
from poke_tune.data.compiled import OfflineDataset
from poke_tune.sim.policies import Policy
from poke_tune.tuning.confirm.confirm import Confirmation, winner
from poke_tune.tuning.confirm.report import Report
from poke_tune.tuning.experiment import Experiment
from poke_tune.tuning.records import SearchOutcome, SweepRecord, TrialRow, describe, trial_status
from poke_tune.tuning.redaction import is_redacted, redact, redacted
from poke_tune.tuning.spec import OBJECTIVE_KEY, MLflowSpec, SearchSpec
from poke_tune.tuning.track.registry import (
    promote,
    register,
    registered_name,
    replayable_champion,
)
from poke_tune.tuning.track.store import (
    EXPERIMENT_TAG,
    RETRY_INTERVAL_S,
    TRIAL_TAG,
    Outbox,
    TrackingUnavailableError,
    check_reachable,
    experiment_id,
    quick_http_failures,
    sweep_runs_filter,
)
from poke_tune.tuning.track.tracker import Promotion, TrackingSummary

__all__ = ["LiveLogging", "MLflowTracker", "send_unsent"]

_logger = logging.getLogger(__name__)

PARENT = "parent"
"""Outbox key of the sweep's parent run (children are keyed by trial id)."""
STATUS_TAG = "status"
FLUSH_INTERVAL_S = 2.0
"""Metric values are gathered this long and then sent together."""


def _metric_values(result: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a Tune result worth a history (not Tune's bookkeeping)."""
    return {
        key: float(value)
        for key, value in result.items()
        if ("/" in key or key in ("step", "restored_from_step"))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and np.isfinite(value)
    }


def child_run_name(algo: str, config: dict[str, Any], number: int) -> str:
    """A readable run name, e.g. `cql-alpha=2.31-t07`."""
    return describe(algo, config, sep="-") + f"-t{number:02d}"


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, inner in value.items():
            flat |= _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return flat
    return {prefix: redact(json.dumps(value) if isinstance(value, list) else str(value))}


def _code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(poke_tune.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{poke_tune.__version__}+{sha}" if sha else poke_tune.__version__


def sweep_tags(spec: SearchSpec, dataset: OfflineDataset, record: SweepRecord) -> dict[str, str]:
    """What a parent run records beyond the spec: data, code and library versions."""
    return {
        "dataset.hash": dataset.key,
        "dataset.transitions": str(dataset.num_transitions),
        "dataset.trajectories": str(dataset.num_trajectories),
        "dataset.source": str(dataset.source),
        "encoder_version": dataset.header.encoder_version,
        "action_layout": dataset.header.action_layout,
        "code_version": _code_version(),
        "version.ray": ray.__version__,
        "version.optuna": optuna.__version__,
        "version.mlflow": mlflow.__version__,
        "version.torch": torch.__version__,
        "overrides": redact(json.dumps(record.overrides)),
        "command": redact(" ".join(record.argv)),
    }


def _live_uri(settings: MLflowSpec) -> str:
    """The tracking URI to talk to: the spec's, or, when that was stored redacted (it had
    credentials), MLFLOW_TRACKING_URI, which `poke-tune resume` sets to the real one."""
    uri = settings.tracking_uri
    assert uri is not None
    if is_redacted(uri):
        uri = os.environ.get("MLFLOW_TRACKING_URI", uri)
    return uri


class LiveLogging(tune.Callback):
    """Logs a sweep live: parent run at start, a child run per trial, batched metrics,
    status tags and final objectives. Its state (run ids, unsent writes) is saved with
    Tune's experiment state, so `poke-tune resume` continues the same runs. It pickles
    with the spec's tracking URI redacted."""

    def __init__(self, spec: SearchSpec, tags: dict[str, str]) -> None:
        self.spec = redacted(spec)
        self.experiment = Experiment(self.spec)
        self.tags = tags
        self._state: dict[str, Any] = {"run_ids": {}, "pending": []}
        self._outbox: Outbox | None = None
        self._last_flush = 0.0
        self._uri = spec.mlflow.tracking_uri

    def __getstate__(self) -> dict[str, Any]:  # no client, no credentials in Tune's pickles
        return {**self.__dict__, "_outbox": None, "_uri": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "experiment" not in state:  # pickled by an older poke-tune (a folder path)
            state["experiment"] = Experiment(state["spec"])
        self.__dict__.update(state)

    def get_state(self) -> dict[str, Any]:
        if self._outbox is not None:
            self._state = {"run_ids": self._outbox.run_ids, "pending": self._outbox.unsent()}
        return self._state

    def set_state(self, state: dict[str, Any]) -> None:
        self._state = state

    @property
    def outbox(self) -> Outbox:
        assert self._outbox is not None, "setup() first"
        return self._outbox

    def setup(self, **info: Any) -> None:  # type: ignore[override]
        quick_http_failures()
        uri = self._uri or _live_uri(self.spec.mlflow)
        self._outbox = Outbox(uri, experiment_id(MlflowClient(uri), self.spec))
        self._outbox.run_ids = dict(self._state["run_ids"])
        self._outbox.pending = list(self._state["pending"])
        params = _flatten("", self.spec.model_dump(mode="json", exclude={"search_space"}))
        params["search_space"] = json.dumps(self.spec.model_dump(mode="json")["search_space"])
        self.outbox.put(
            "create_run",
            PARENT,
            name=self.spec.name,
            tags={EXPERIMENT_TAG: self.experiment.location, **self.tags},
        )
        self.outbox.put("log_batch", PARENT, metrics=[], params=params)
        self.outbox.flush(force=True)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key = trial.trial_id
        if key in self.outbox.run_ids or any(w["key"] == key for w in self.outbox.pending):
            return  # a restarted trial goes on logging into its run
        algo = self.spec.algorithm.algo
        self.outbox.put(
            "create_run",
            key,
            parent=PARENT,
            # Tune's experiment tag starts with the trial's number: "7_alpha=2.3100".
            name=child_run_name(algo, trial.config, int(trial.experiment_tag.split("_")[0])),
            tags={EXPERIMENT_TAG: self.experiment.location, TRIAL_TAG: key, STATUS_TAG: "running"},
        )
        params = {name: str(value) for name, value in trial.config.items()}
        self.outbox.put("log_batch", key, metrics=[], params=params)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        stamp = int(time.time() * 1000)
        step = int(result.get("step", result.get("training_iteration", 0)))
        metrics = [(key, value, stamp, step) for key, value in _metric_values(result).items()]
        self.outbox.put("log_batch", trial.trial_id, metrics=metrics)

    def _finish_trial(self, trial: Any, *, failed: bool) -> None:
        # objective/best already has its history; add the final value and the status.
        result = trial.last_result or {}
        final = result.get(self.spec.objective.metric)
        metrics = []
        if isinstance(final, int | float) and np.isfinite(final):
            step = int(result.get("step", result.get("training_iteration", 0)))
            metrics.append(("objective/final", float(final), int(time.time() * 1000), step))
        status = trial_status(result, failed=failed, state=None)
        self.outbox.put("log_batch", trial.trial_id, metrics=metrics, tags={STATUS_TAG: status})
        self.outbox.put(
            "set_terminated", trial.trial_id, status="FAILED" if failed else "FINISHED"
        )
        self.outbox.flush(force=True)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        self._finish_trial(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish_trial(trial, failed=True)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self._last_flush = time.monotonic()
            self.outbox.flush()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        deadline = time.monotonic() + self.spec.mlflow.retry_timeout_s
        while not self.outbox.flush(force=True) and time.monotonic() < deadline:
            time.sleep(RETRY_INTERVAL_S)
        self.save_unsent()

    def save_unsent(self) -> None:
        """Keep writes the server never took in the experiment folder (never drop them)."""
        unsent = self.outbox.unsent()
        saved = self.experiment.save_unsent(
            {"run_ids": self.outbox.run_ids, "pending": unsent} if unsent else None
        )
        if not unsent:
            return
        if saved is None:
            _logger.error("%d MLflow writes could not be sent: %s", len(unsent), unsent)
            return
        _logger.error(
            "%d MLflow writes could not be sent; saved to %s. When the server is back: "
            "poke-tune track %s",
            len(unsent),
            saved,
            self.experiment.location,
        )


MLflowTracking = LiveLogging
"""The name under which sweeps started before the rename pickled this callback: their
experiment state still unpickles, so they resume."""


def send_unsent(experiment: Experiment) -> None:
    """Send the writes an outage kept back (`mlflow_unsent.json`), then forget them. Writes
    the server refuses (it is up and says no) stay in the file and are reported; they do
    not hold back the rest of `track`."""
    saved = experiment.read_unsent()
    if saved is None:
        return
    uri = _live_uri(experiment.spec.mlflow)
    outbox = Outbox(uri, experiment_id(MlflowClient(uri), experiment.spec))
    outbox.run_ids, outbox.pending = saved["run_ids"], saved["pending"]
    if not outbox.flush(force=True):
        raise TrackingUnavailableError(
            f"{len(outbox.unsent())} unsent writes of {experiment.location} could not be "
            f"sent to {redact(uri)}: it is still unreachable"
        )
    kept = experiment.save_unsent(
        {"run_ids": outbox.run_ids, "pending": outbox.refused} if outbox.refused else None
    )
    if outbox.refused:
        _logger.error(
            "%d writes were refused by %s; they stay in %s, the rest was sent",
            len(outbox.refused),
            redact(uri),
            kept,
        )


class MLflowTracker:
    """The `Tracker` of a sweep with `mlflow.enabled`; checks the store when built."""

    def __init__(self, experiment: Experiment) -> None:
        self.spec = experiment.spec
        self.experiment = experiment.location
        self.uri = _live_uri(self.spec.mlflow)
        check_reachable(self.uri)
        self.client = MlflowClient(self.uri)

    def callbacks(self, dataset: OfflineDataset, record: SweepRecord) -> list[tune.Callback]:
        return [LiveLogging(self.spec, sweep_tags(self.spec, dataset, record))]

    def champion_policy(self) -> Policy | None:
        return replayable_champion(self.client, registered_name(self.spec), self.uri)

    def _runs(self) -> dict[str, str]:
        """Run ids of the sweep by key (`parent`, trial ids), found by their tags."""
        runs = self.client.search_runs(
            [experiment_id(self.client, self.spec)],
            filter_string=sweep_runs_filter(self.experiment),
            max_results=10_000,
        )
        found = {run.data.tags.get(TRIAL_TAG, PARENT): run.info.run_id for run in runs}
        if PARENT not in found:
            raise TrackingUnavailableError(
                f"no parent run of {self.experiment} in {redact(self.uri)}"
            )
        return found

    def promote(
        self, ranked: Sequence[TrialRow], confirmation: Confirmation | None
    ) -> Promotion | None:
        """Children get their confirmation numbers, the parent the winner's objective and
        checkpoint; the winner is registered, and promoted if it earned it."""
        runs = self._runs()
        parent = runs[PARENT]
        if confirmation is not None:
            self._log_confirmation(confirmation, runs)
        answer = winner(ranked, confirmation)
        if answer is None or answer.checkpoint is None:
            return None
        child = runs.get(answer.trial_id)
        if answer.score is not None:
            self.client.log_metric(parent, OBJECTIVE_KEY, answer.score)
        self.client.set_tag(parent, "best_trial", answer.trial_id)
        for run_id in filter(None, (parent, child)):
            self.client.log_artifacts(run_id, str(answer.checkpoint.parent), "best_checkpoint")
        version = register(self.client, self.spec, self.experiment, answer, child or parent)
        return promote(self.client, self.spec, version, answer, confirmation)

    def finish(
        self, outcome: SearchOutcome, report: Report, promotion: Promotion | None
    ) -> TrackingSummary:
        """The report goes to the parent run; trials cut off by an interruption and the
        parent are closed with their status."""
        runs = self._runs()
        parent = runs[PARENT]
        self.client.log_artifacts(parent, str(report.folder))
        for row in outcome.rows:
            if row.status == "interrupted" and row.trial_id in runs:
                self.client.set_tag(runs[row.trial_id], STATUS_TAG, "interrupted")
                self.client.set_terminated(runs[row.trial_id], "KILLED")
        if outcome.interrupted:
            status, state = "interrupted", "KILLED"
        elif promotion is None:
            status, state = "no result", "FAILED"
        else:
            status, state = "finished", "FINISHED"
        self.client.set_tag(parent, "sweep_status", status)
        self.client.set_terminated(parent, state)
        return TrackingSummary(redact(self.uri), parent, promotion)

    def _log_confirmation(self, confirmation: Confirmation, runs: dict[str, str]) -> None:
        stamp = int(time.time() * 1000)
        for standing in confirmation.standings:
            run_id = runs.get(standing.trial_id or "")
            if run_id is None:
                continue
            result, versus = standing.result, standing.vs_best_baseline
            values = {
                "confirm/win_rate": result.win_rate,
                "confirm/win_rate_ci_low": result.ci_low,
                "confirm/win_rate_ci_high": result.ci_high,
                "confirm/battles": float(result.battles),
            }
            if standing.optimism is not None:
                values["confirm/optimism"] = standing.optimism
            if versus is not None:
                values |= {
                    "confirm/vs_best_baseline": versus.difference,
                    "confirm/vs_best_baseline_ci_low": versus.ci_low,
                    "confirm/vs_best_baseline_ci_high": versus.ci_high,
                }
            self.client.log_batch(
                run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in values.items()]
            )
        winner = confirmation.winner
        parent = runs[PARENT]
        if winner is not None:
            self.client.log_batch(
                parent,
                metrics=[
                    Metric("confirm/champion_win_rate", winner.result.win_rate, stamp, 0),
                    Metric("confirm/champion_ci_low", winner.result.ci_low, stamp, 0),
                    Metric("confirm/champion_ci_high", winner.result.ci_high, stamp, 0),
                    Metric(
                        "confirm/battles_saved",
                        float(confirmation.battles_fixed - confirmation.battles_played),
                        stamp,
                        0,
                    ),
                ],
                tags=[RunTag("confirm.beats_baselines", str(confirmation.beats_baselines))],
            )
