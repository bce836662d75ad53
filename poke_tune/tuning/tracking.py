"""MLflow tracking of a sweep: a parent run per sweep, a child run per trial, the winner
logged as a checkpoint artifact and a registered model with the alias `champion`.

Everything is written from the Tune driver (a `tune.Callback`), never from trials: trials
need no tracking access, and results arrive in order. Writes go through an `Outbox`: they
are sent in order, many metric values per `log_batch` call, and a write that fails while
the tracking server is unreachable stays queued and is retried later, so an outage loses
nothing. Whatever is still unsent when the sweep ends (after `mlflow.retry_timeout_s`) is
saved to `mlflow_unsent.json` in the experiment folder; `poke-tune track EXPERIMENT`
sends it and finishes the sweep's logging once the server is back.

Runs are found again by tags, not by remembered ids: the parent has
`poke_tune.experiment` = the experiment path, each child also `poke_tune.trial_id`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import mlflow
import numpy as np
import optuna
import ray
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

import poke_tune
from poke_tune.algos import LearnedPolicy, read_checkpoint
from poke_tune.data.dataset import OfflineDataset
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.spec import OBJECTIVE_KEY, CategoricalParam, FloatParam, SearchSpec
from poke_tune.tuning.trainable import trial_status

__all__ = [
    "CHAMPION",
    "UNSENT_FILE",
    "MLflowTracking",
    "Outbox",
    "TrackingUnavailableError",
    "check_reachable",
    "experiment_url",
    "finish_sweep",
    "load_registered_policy",
]

_logger = logging.getLogger(__name__)

CHAMPION = "champion"
UNSENT_FILE = "mlflow_unsent.json"
PARENT = "parent"
"""Outbox key of the sweep's parent run (children are keyed by trial id)."""
EXPERIMENT_TAG = "poke_tune.experiment"
TRIAL_TAG = "poke_tune.trial_id"
STATUS_TAG = "status"
RETRY_INTERVAL_S = 5.0
"""While the server is down, how often the driver tries again (it never blocks on it)."""
FLUSH_INTERVAL_S = 2.0
"""Metric values are gathered this long and then sent together."""


class TrackingUnavailableError(ConnectionError):
    """The tracking server cannot be reached."""


def _quick_http_failures() -> None:
    # MLflow's REST client retries a failed request 7 times with exponential backoff
    # (minutes). The driver must not stall the sweep on a down server: our outbox retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def check_reachable(tracking_uri: str) -> None:
    """Fail fast, before Ray starts, when the tracking store cannot be reached."""
    _quick_http_failures()
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        raise TrackingUnavailableError(
            f"MLflow tracking store {tracking_uri} is unreachable ({_first_line(error)}). "
            "Start the server, or choose another store with --tracking-uri, "
            "mlflow.tracking_uri in the spec, or MLFLOW_TRACKING_URI."
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
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
        name, artifact_location=_artifact_location(spec.mlflow.tracking_uri, name)
    )


def experiment_url(server: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow UI (not the GenAI overview)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"


def ui_target(target: str | None, tracking_uri: str | None) -> tuple[str, str | None]:
    """The tracking URI and experiment id `poke-tune ui` shows: those of an experiment
    folder or a spec file, else `tracking_uri` / MLFLOW_TRACKING_URI / the local default."""
    from poke_tune.tuning.search import spec_of
    from poke_tune.tuning.spec import load_spec, resolve_tracking_uri

    if target is None:
        return resolve_tracking_uri(tracking_uri, str(Path("runs/ray").resolve())), None
    path = Path(target)
    if path.is_dir():
        spec = spec_of(path.resolve())
    elif path.is_file():
        spec = load_spec(path)
    else:
        raise FileNotFoundError(f"{target}: not an experiment folder or a spec file")
    uri = tracking_uri or spec.mlflow.tracking_uri
    assert uri is not None
    found = MlflowClient(uri).get_experiment_by_name(spec.mlflow.experiment or spec.name)
    return uri, None if found is None else str(found.experiment_id)


def mlflow_ui_command(tracking_uri: str, *, host: str, port: int) -> list[str]:
    """`mlflow server` on a local store; artifacts beside a SQLite store, as logged."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    command += ["--host", host, "--port", str(port)]
    location = _artifact_location(tracking_uri, "")
    if location is not None:
        command += ["--default-artifact-root", location]
    return command


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
                    _logger.error("MLflow refused %s: %s", write["op"], _first_line(error))
                    self.pending.pop(0)
                    self.refused.append(write)
                    continue
                if self._next_try == 0.0 or force:
                    _logger.warning(
                        "MLflow unreachable (%s); %d writes queued, retrying",
                        _first_line(error),
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
            filter_string=f"tags.`{EXPERIMENT_TAG}` = '{tags[EXPERIMENT_TAG]}'",
            max_results=10_000,
        )
        for run in runs:
            if run.data.tags.get(TRIAL_TAG) == tags.get(TRIAL_TAG):
                return str(run.info.run_id)
        return None

    def unsent(self) -> list[dict[str, Any]]:
        return self.refused + self.pending


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
    parts = [algo]
    for name, value in config.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}")
    return "-".join(parts) + f"-t{number:02d}"


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, inner in value.items():
            flat |= _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return flat
    return {prefix: json.dumps(value) if isinstance(value, list) else str(value)}


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


def sweep_tags(
    spec: SearchSpec, dataset: OfflineDataset, invocation: dict[str, Any] | None
) -> dict[str, str]:
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
        "overrides": json.dumps((invocation or {}).get("overrides", {})),
        "command": " ".join((invocation or {}).get("argv", [])),
    }


class MLflowTracking(tune.Callback):
    """Logs a sweep live: parent run at start, a child run per trial, batched metrics,
    status tags and final objectives. Its state (run ids, unsent writes) is saved with
    Tune's experiment state, so `poke-tune resume` continues the same runs."""

    def __init__(self, spec: SearchSpec, experiment_path: str, tags: dict[str, str]) -> None:
        self.spec = spec
        self.experiment_path = experiment_path
        self.tags = tags
        self._state: dict[str, Any] = {"run_ids": {}, "pending": []}
        self._outbox: Outbox | None = None
        self._last_flush = 0.0

    def __getstate__(self) -> dict[str, Any]:  # the MLflow client is not picklable
        return {**self.__dict__, "_outbox": None}

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
        _quick_http_failures()
        uri = self.spec.mlflow.tracking_uri
        assert uri is not None
        self._outbox = Outbox(uri, experiment_id(MlflowClient(uri), self.spec))
        self._outbox.run_ids = dict(self._state["run_ids"])
        self._outbox.pending = list(self._state["pending"])
        params = _flatten("", self.spec.model_dump(mode="json", exclude={"search_space"}))
        params["search_space"] = json.dumps(self.spec.model_dump(mode="json")["search_space"])
        self.outbox.put(
            "create_run",
            PARENT,
            name=self.spec.name,
            tags={EXPERIMENT_TAG: self.experiment_path, **self.tags},
        )
        self.outbox.put("log_batch", PARENT, metrics=[], params=params)
        self.outbox.flush(force=True)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key = trial.trial_id
        if key in self.outbox.run_ids or any(w["key"] == key for w in self.outbox.pending):
            return  # a restarted trial goes on logging into its run
        algo = str(self.spec.algorithm.get("algo"))
        self.outbox.put(
            "create_run",
            key,
            parent=PARENT,
            # Tune's experiment tag starts with the trial's number: "7_alpha=2.3100".
            name=child_run_name(algo, trial.config, int(trial.experiment_tag.split("_")[0])),
            tags={EXPERIMENT_TAG: self.experiment_path, TRIAL_TAG: key, STATUS_TAG: "running"},
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
        tags = {STATUS_TAG: trial_status(result, failed=failed)}
        self.outbox.put("log_batch", trial.trial_id, metrics=metrics, tags=tags)
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
        path = Path(self.experiment_path) / UNSENT_FILE
        if not unsent:
            path.unlink(missing_ok=True)
            return
        if "://" in self.experiment_path:
            _logger.error("%d MLflow writes could not be sent: %s", len(unsent), unsent)
            return
        path.write_text(json.dumps({"run_ids": self.outbox.run_ids, "pending": unsent}))
        _logger.error(
            "%d MLflow writes could not be sent; saved to %s. When the server is back: "
            "poke-tune track %s",
            len(unsent),
            path,
            self.experiment_path,
        )


# ----------------------------------------------------------------------------------------
# After the sweep: artifacts, the registered model and its champion alias.


def load_registered_policy(model_uri: str, tracking_uri: str | None = None) -> LearnedPolicy:
    """The policy of a registered model, e.g. `models:/poke-tune-cql_alpha@champion`."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    policy: LearnedPolicy = model.unwrap_python_model().policy
    policy.name = model_uri
    return policy


def _find_runs(client: MlflowClient, spec: SearchSpec, experiment_path: str) -> dict[str, str]:
    """Run ids of a sweep by key (`parent`, trial ids), found by their tags."""
    runs = client.search_runs(
        [experiment_id(client, spec)],
        filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment_path}'",
        max_results=10_000,
    )
    found = {}
    for run in runs:
        found[run.data.tags.get(TRIAL_TAG, PARENT)] = run.info.run_id
    return found


def _write_trials_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = sorted({key for row in rows for key in row}, key=lambda c: (c != "trial_id", c))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _study_of(rows: list[dict[str, Any]], spec: SearchSpec) -> optuna.Study:
    """An in-memory Optuna study of the finished trials, for Optuna's plots."""
    study = optuna.create_study(
        direction="maximize" if spec.objective.mode == "max" else "minimize"
    )
    for row in rows:
        if row["status"] not in ("completed", "early-stopped") or row[OBJECTIVE_KEY] is None:
            continue
        params: dict[str, Any] = {}
        distributions: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, param in spec.search_space.items():
            if f"param/{name}" not in row:
                continue
            params[name] = row[f"param/{name}"]
            if isinstance(param, CategoricalParam):
                distributions[name] = optuna.distributions.CategoricalDistribution(param.choices)
            elif isinstance(param, FloatParam):
                distributions[name] = optuna.distributions.FloatDistribution(
                    param.low, param.high, log=param.log
                )
            else:
                distributions[name] = optuna.distributions.IntDistribution(
                    param.low, param.high, log=param.log
                )
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=row[OBJECTIVE_KEY]
            )
        )
    return study


def _write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Optuna's own plots as PNG; returns the names written (a plot that does not apply,
    e.g. parameter importance of a one-trial study, is skipped with a log line)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    makers: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": plots.plot_optimization_history,
        "objective_vs_params": plots.plot_slice,
        "parallel_coordinates": plots.plot_parallel_coordinate,
        "param_importances": plots.plot_param_importances,
    }
    written = []
    for name, make in makers.items():
        try:
            make(study)
            plt.gcf().savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            written.append(name)
        except Exception as error:  # Optuna raises for plots a study cannot support
            _logger.info("plot %s skipped: %s", name, _first_line(error))
        finally:
            plt.close("all")
    return written


def _current_champion(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _objective_tag(spec: SearchSpec) -> str:
    objective = spec.objective
    if objective.uses_battles:
        return (
            f"{objective.metric} vs {objective.opponent}, {objective.battles} battles, "
            f"seed {objective.seed}, max_turns {objective.max_turns}"
        )
    return f"{objective.metric} ({objective.mode})"


def _champion_score(champion: Any, spec: SearchSpec, tracking_uri: str) -> float | None:
    """The current champion's value on this sweep's objective: its recorded value when it
    was judged on the same objective, else (win rates) replayed on this sweep's battles."""
    if champion.tags.get("objective") == _objective_tag(spec):
        return float(champion.tags["objective_value"])
    if not spec.objective.uses_battles:
        return None  # offline metrics of different datasets are not comparable
    policy = load_registered_policy(f"models:/{champion.name}/{champion.version}", tracking_uri)
    objective = spec.objective
    return evaluate(
        policy,
        make_policy(objective.opponent),
        battles=objective.battles,
        seed=objective.seed,
        max_turns=objective.max_turns,
    ).win_rate


def finish_sweep(
    rows: list[dict[str, Any]], best: dict[str, Any] | None, spec: SearchSpec, experiment_path: str
) -> dict[str, Any]:
    """Log the comparison artifacts and the winner; returns what was done (for printing).

    Parent: trials table (CSV) and Optuna plots (PNG). Best trial: its best checkpoint on
    the parent and its child run, the policy as an MLflow model registered under
    `mlflow.registered_model`, and the alias `champion` moved to it only when it beats the
    current champion on the same objective.
    """
    uri = spec.mlflow.tracking_uri
    assert uri is not None
    client = MlflowClient(uri)
    runs = _find_runs(client, spec, experiment_path)
    if PARENT not in runs:
        raise TrackingUnavailableError(f"no parent run of {experiment_path} in {uri}")
    parent = runs[PARENT]
    done: dict[str, Any] = {"parent_run_id": parent}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_trials_csv(
            [{**r, "checkpoint": str(r["checkpoint"] or "")} for r in rows], folder / "trials.csv"
        )
        client.log_artifact(parent, str(folder / "trials.csv"))
        (folder / "plots").mkdir()
        done["plots"] = _write_plots(_study_of(rows, spec), folder / "plots")
        client.log_artifacts(parent, str(folder / "plots"), "plots")

    if best is None or best["checkpoint"] is None:
        client.set_terminated(parent, "FINISHED")
        return done
    checkpoint = Path(best["checkpoint"])
    child = runs.get(str(best["trial_id"]))
    client.log_metric(parent, OBJECTIVE_KEY, float(best[OBJECTIVE_KEY]))
    client.set_tag(parent, "best_trial", str(best["trial_id"]))
    for run_id in filter(None, (parent, child)):
        client.log_artifacts(run_id, str(checkpoint.parent), "best_checkpoint")
    done |= _register(client, spec, checkpoint, child or parent, float(best[OBJECTIVE_KEY]))
    client.set_terminated(parent, "FINISHED")
    return done


def _register(
    client: MlflowClient, spec: SearchSpec, checkpoint: Path, run_id: str, value: float
) -> dict[str, Any]:
    uri = spec.mlflow.tracking_uri
    assert uri is not None
    name = spec.mlflow.registered_model or f"poke-tune-{spec.name}"
    mlflow.set_tracking_uri(uri)
    state = read_checkpoint(checkpoint)
    example = {
        "observation": np.zeros((1, state["observation_size"]), np.float32),
        "action_mask": np.ones((1, state["num_actions"]), bool),
    }
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="policy",
            # Models from code: MLflow imports this file instead of unpickling an object.
            python_model=str(Path(__file__).with_name("policy_model.py")),
            artifacts={"checkpoint": str(checkpoint)},
            input_example=example,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    objective = _objective_tag(spec)
    client.set_model_version_tag(name, version, "objective", objective)
    client.set_model_version_tag(name, version, "objective_value", str(value))
    champion = _current_champion(client, name)
    previous = None if champion is None else _champion_score(champion, spec, uri)
    sign = 1.0 if spec.objective.mode == "max" else -1.0
    # No champion yet: the first winner is it. A champion judged on an objective that
    # cannot be replayed here (another offline metric) keeps its alias.
    promoted = champion is None or (previous is not None and sign * value > sign * previous)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {
        "model": name,
        "version": version,
        "champion": promoted,
        "previous_champion_value": previous,
        "model_uri": f"models:/{name}@{CHAMPION}",
    }
