"""The MLflow tracking store: reaching it (fast, and safe when two processes set up one
SQLite store at once), the sweep's experiment, and the `Outbox`, the queue of writes that
an outage delays but never loses.

Runs are found again by tags, not by remembered ids: a sweep's parent run has
`poke_tune.experiment` = the experiment path, each child also `poke_tune.trial_id`.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from poke_tune.tuning.redaction import redact
from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "EXPERIMENT_TAG",
    "TRIAL_TAG",
    "Outbox",
    "TrackingUnavailableError",
    "artifact_location",
    "check_reachable",
    "experiment_id",
    "quick_http_failures",
    "sweep_runs_filter",
]

_logger = logging.getLogger(__name__)

EXPERIMENT_TAG = "poke_tune.experiment"
TRIAL_TAG = "poke_tune.trial_id"
RETRY_INTERVAL_S = 5.0
"""While the server is down, how often the driver tries again (it never blocks on it)."""


def sweep_runs_filter(location: str) -> str:
    """The MLflow filter string for the runs of the sweep at `location` (their experiment
    tag). MLflow's filter strings have no escapes inside a quoted value, so the value is
    quoted with a quote it does not contain (a folder may be named o'brien)."""
    quote = "'" if "'" not in location else '"'
    if quote in location:
        raise ValueError(
            f"MLflow cannot search for an experiment location with both kinds of quote in "
            f"it: {location}; rename the storage folder"
        )
    return f"tags.`{EXPERIMENT_TAG}` = {quote}{location}{quote}"


class TrackingUnavailableError(ConnectionError):
    """The tracking server cannot be reached."""


def quick_http_failures() -> None:
    # MLflow's REST client retries a failed request 7 times with exponential backoff
    # (minutes). The driver must not stall the sweep on a down server: our outbox retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _store_setup_lock(tracking_uri: str) -> FileLock | None:
    """Serialises the first use of a SQLite store: MLflow creates its schema on first
    contact, and two processes doing it at once fail ("duplicate column name")."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(database.with_name(database.name + ".lock"))


def check_reachable(tracking_uri: str) -> None:
    """Fail fast, before Ray starts, when the tracking store cannot be reached."""
    quick_http_failures()
    try:
        with _store_setup_lock(tracking_uri) or nullcontext():
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        raise TrackingUnavailableError(
            f"MLflow tracking store {redact(tracking_uri)} is unreachable "
            f"({redact(_first_line(error))}). "
            "Start the server, or choose another store with --tracking-uri, "
            "mlflow.tracking_uri in the spec, or MLFLOW_TRACKING_URI."
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a local SQLite store live beside it (MLflow's default is ./mlruns)."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        return (folder / experiment).as_uri()
    return None  # a tracking server chooses (and proxies) its artifact store


def experiment_id(client: MlflowClient, spec: SearchSpec) -> str:
    """The id of the spec's MLflow experiment, created on first use."""
    assert spec.mlflow.tracking_uri is not None
    name = spec.mlflow.experiment or spec.name
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return client.create_experiment(
        name, artifact_location=artifact_location(spec.mlflow.tracking_uri, name)
    )


class Outbox:
    """Tracking writes, sent in order; an unreachable server leaves them queued.

    A write is a JSON-able dict, so the queue can travel in Tune's experiment state and
    be saved to a file. Runs are referred to by key (`parent` or a trial id) because a
    child run may be queued before its parent exists on the server.
    """

    def __init__(self, tracking_uri: str, experiment_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.run_ids: dict[str, str] = {}
        self.pending: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        """Writes the reachable server rejected: reported and saved, never dropped."""
        self._next_try = 0.0

    def put(self, op: str, key: str, **args: Any) -> None:
        self.pending.append({"op": op, "key": key, **args})

    def flush(self, *, force: bool = False) -> bool:
        """Send what is queued; True when nothing is left. While the server is down, tries
        at most every RETRY_INTERVAL_S unless `force`."""
        if not self.pending or (not force and time.monotonic() < self._next_try):
            return not self.pending
        while self.pending:
            write = self.pending[0]
            try:
                self._send(write)
            except Exception as error:
                if self._reachable():
                    # The server is up and refuses this write: keep the sweep going but
                    # say so; the write is kept in the unsent file, not dropped silently.
                    _logger.error("MLflow refused %s: %s", write["op"], redact(_first_line(error)))
                    self.pending.pop(0)
                    self.refused.append(write)
                    continue
                if self._next_try == 0.0 or force:
                    _logger.warning(
                        "MLflow unreachable (%s); %d writes queued, retrying",
                        redact(_first_line(error)),
                        len(self.pending),
                    )
                self._next_try = time.monotonic() + RETRY_INTERVAL_S
                return False
            self.pending.pop(0)
        if self._next_try:
            _logger.warning("MLflow reachable again; queued writes sent")
        self._next_try = 0.0
        return True

    def _reachable(self) -> bool:
        try:
            self.client.search_experiments(max_results=1)
        except Exception:
            return False
        return True

    def _send(self, write: dict[str, Any]) -> None:
        key = write["key"]
        match write["op"]:
            case "create_run":
                if key in self.run_ids:
                    return
                # A resumed sweep may restore a state saved before this run was created:
                # reuse the run its tags name rather than starting a duplicate.
                existing = self._existing_run(write["tags"])
                if existing is not None:
                    self.run_ids[key] = existing
                    return
                tags = dict(write["tags"])
                if write.get("parent") is not None:
                    tags["mlflow.parentRunId"] = self.run_ids[write["parent"]]
                run = self.client.create_run(self.experiment_id, run_name=write["name"], tags=tags)
                self.run_ids[key] = run.info.run_id
            case "log_batch":
                self.client.log_batch(
                    self.run_ids[key],
                    metrics=[Metric(k, v, ts, step) for k, v, ts, step in write["metrics"]],
                    params=[Param(k, v) for k, v in write.get("params", {}).items()],
                    tags=[RunTag(k, v) for k, v in write.get("tags", {}).items()],
                )
            case "set_terminated":
                self.client.set_terminated(self.run_ids[key], write["status"])
            case op:
                raise ValueError(f"unknown tracking write {op!r}")

    def _existing_run(self, tags: dict[str, str]) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=sweep_runs_filter(tags[EXPERIMENT_TAG]),
            max_results=10_000,
        )
        for run in runs:
            if run.data.tags.get(TRIAL_TAG) == tags.get(TRIAL_TAG):
                return str(run.info.run_id)
        return None

    def unsent(self) -> list[dict[str, Any]]:
        return self.refused + self.pending
