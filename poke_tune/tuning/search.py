"""From a validated spec to a Ray Tune sweep: OptunaSearch + ASHA -> Tuner -> fit().

The dataset is compiled (or generated from its recipe) once on the driver, before Ray
starts; trials receive it through `tune.with_parameters`, i.e. the object store. The
`OfflineDataset` pickles as its cache folder, so every trial memory-maps the same
read-only arrays instead of copying them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from poke_tune.data.dataset import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.cluster import check_storage
from poke_tune.tuning.spec import (
    OBJECTIVE_KEY,
    CategoricalParam,
    FloatParam,
    SearchSpec,
    SpecError,
)
from poke_tune.tuning.tracking import (
    UNSENT_FILE,
    MLflowTracking,
    Outbox,
    TrackingUnavailableError,
    check_reachable,
    experiment_id,
    finish_sweep,
    sweep_tags,
)
from poke_tune.tuning.trainable import CHECKPOINT_FILE, train_trial, trial_status

__all__ = [
    "SPEC_FILE",
    "DefineByRun",
    "SweepOutcome",
    "best_row",
    "build_tuner",
    "experiment_path",
    "prepare_dataset",
    "restore_tuner",
    "run_sweep",
    "spec_of",
    "track_experiment",
    "trial_rows",
]

_logger = logging.getLogger(__name__)

SPEC_FILE = "poke_tune_spec.json"
"""Written into the experiment folder so `resume` and `best` need only that folder."""
RUN_FILE = "poke_tune_run.json"
"""How the sweep was started: spec file, command-line overrides, command line."""


@dataclass(frozen=True)
class DefineByRun:
    """The Optuna define-by-run space: only `trial.suggest_*` and conditions, no work.

    A class rather than a closure: Tune pickles the searcher into its experiment state.
    """

    spec: SearchSpec

    def __call__(self, trial: optuna.Trial) -> None:
        for name, param in self.spec.search_space.items():
            if param.when is not None and trial.params.get(param.when.param) not in (
                param.when.values
            ):
                continue
            if isinstance(param, CategoricalParam):
                trial.suggest_categorical(name, param.choices)
            elif isinstance(param, FloatParam):
                trial.suggest_float(name, param.low, param.high, log=param.log)
            else:
                trial.suggest_int(name, param.low, param.high, log=param.log)


def _sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    seed = spec.searcher.seed
    match spec.searcher.algorithm:
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
        case "grid":
            grid: dict[str, Any] = {}
            for name, param in spec.search_space.items():
                if not isinstance(param, CategoricalParam):
                    raise SpecError(f"searcher grid: search_space.{name} must be categorical")
                grid[name] = param.choices
            return optuna.samplers.GridSampler(grid, seed=seed)
    raise AssertionError(spec.searcher.algorithm)


def _scheduler(spec: SearchSpec) -> TrialScheduler:
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    evaluations = -(-spec.training.steps // spec.training.eval_interval)
    return ASHAScheduler(
        metric=OBJECTIVE_KEY,
        mode=spec.objective.mode,
        time_attr="training_iteration",  # one iteration = one evaluation
        max_t=evaluations,
        grace_period=min(spec.scheduler.grace_period, evaluations),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def prepare_dataset(spec: SearchSpec) -> OfflineDataset:
    """Compile the spec's dataset, generating it first (once, cached) from a recipe."""
    if spec.dataset.path is not None:
        return load_dataset(spec.dataset.path)
    recipe = spec.dataset.generate
    assert recipe is not None
    path = cache_dir() / "generated" / f"{recipe.key()}.jsonl.gz"
    if not path.is_file():
        _logger.info("generating the spec's dataset (%d battles) into %s", recipe.battles, path)
        generate_dataset(
            path,
            policies=recipe.policies,
            battles=recipe.battles,
            seed=recipe.seed,
            battle_format=recipe.battle_format,
            max_turns=recipe.max_turns,
            hp_shaping=recipe.hp_shaping,
        )
    return load_dataset(path)


def _trainable(spec: SearchSpec, dataset: OfflineDataset) -> Any:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    with_data = tune.with_parameters(
        train_trial, spec_json=spec.model_dump_json(), dataset=dataset
    )
    return tune.with_resources(with_data, resources)


def build_tuner(
    spec: SearchSpec, dataset: OfflineDataset, callbacks: list[tune.Callback] | None = None
) -> tune.Tuner:
    """The Tuner for a spec (call inside an initialised Ray)."""
    storage = None
    if spec.searcher.storage is not None:
        storage = optuna.storages.RDBStorage(spec.searcher.storage)
    searcher = OptunaSearch(
        space=DefineByRun(spec),
        metric=OBJECTIVE_KEY,
        mode=spec.objective.mode,
        points_to_evaluate=spec.searcher.warm_start or None,
        sampler=_sampler(spec),
        study_name=spec.name,
        storage=storage,
    )
    return tune.Tuner(
        _trainable(spec, dataset),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(spec),
            num_samples=spec.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            # A new trial reuses a finished trial's worker process: starting a fresh one
            # per trial cost ~2.5 s, more than a short trial's training on a laptop.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(spec.storage_path),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.checkpoint.keep,
                checkpoint_score_attribute=OBJECTIVE_KEY,
                checkpoint_score_order=spec.objective.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=callbacks,
        ),
    )


def experiment_path(spec: SearchSpec) -> Path:
    return Path(spec.storage_path) / spec.name


def _init_ray(address: str | None) -> None:
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=True)


@dataclass
class SweepOutcome:
    """A finished (or interrupted) sweep: Tune's results, one row per trial, the best row,
    and what was logged to MLflow at the end (None when tracking is off)."""

    results: tune.ResultGrid
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    tracking: dict[str, Any] | None


def _experiment_key(spec: SearchSpec) -> str:
    """The experiment's location as a string (also for s3:// storage)."""
    return f"{spec.storage_path.rstrip('/')}/{spec.name}"


def run_sweep(
    spec: SearchSpec,
    *,
    address: str | None = None,
    invocation: dict[str, Any] | None = None,
    callbacks: Sequence[tune.Callback] = (),
) -> SweepOutcome:
    """Run a whole sweep (local Ray unless `address` / RAY_ADDRESS names a cluster).

    `invocation` (spec file, command-line overrides) is saved beside the spec as run and
    recorded on the MLflow parent run; `callbacks` are further Tune callbacks. An
    unreachable tracking store fails here, before any data generation or Ray start.
    """
    if spec.mlflow.enabled:
        assert spec.mlflow.tracking_uri is not None
        check_reachable(spec.mlflow.tracking_uri)
    dataset = prepare_dataset(spec)
    _init_ray(address)
    check_storage(spec)  # a multi-node cluster needs shared storage
    all_callbacks = list(callbacks)
    if spec.mlflow.enabled:
        tags = sweep_tags(spec, dataset, invocation)
        all_callbacks.append(MLflowTracking(spec, _experiment_key(spec), tags))
    tuner = build_tuner(spec, dataset, all_callbacks)
    folder = experiment_path(spec)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(spec.model_dump_json(indent=2))
    if invocation is not None:
        (folder / RUN_FILE).write_text(json.dumps(invocation, indent=2, default=str))
    return _outcome(tuner.fit(), spec)


def _outcome(results: tune.ResultGrid, spec: SearchSpec) -> SweepOutcome:
    rows = trial_rows(results, spec)
    best = best_row(rows, spec)
    tracking = None
    if spec.mlflow.enabled:
        try:
            tracking = finish_sweep(rows, best, spec, _experiment_key(spec))
        except (TrackingUnavailableError, OSError, MlflowException) as error:
            _logger.error("MLflow: the sweep's final logging failed: %s", error)
            tracking = {"error": str(error)}
    return SweepOutcome(results, rows, best, tracking)


def resume_sweep(path: Path, *, address: str | None = None) -> SweepOutcome:
    """Continue an interrupted sweep; MLflow logging continues in the same runs."""
    spec = spec_of(path)
    if spec.mlflow.enabled:
        assert spec.mlflow.tracking_uri is not None
        check_reachable(spec.mlflow.tracking_uri)
    tuner = restore_tuner(path, address=address)
    check_storage(spec)
    return _outcome(tuner.fit(), spec)


def track_experiment(path: Path) -> SweepOutcome:
    """Send a finished sweep's unsent MLflow writes (saved during an outage) and log its
    end-of-sweep artifacts and model: `poke-tune track EXPERIMENT`."""
    spec = spec_of(path)
    uri = spec.mlflow.tracking_uri
    assert uri is not None
    check_reachable(uri)
    unsent = path / UNSENT_FILE
    if unsent.is_file():
        saved = json.loads(unsent.read_text())
        outbox = Outbox(uri, experiment_id(MlflowClient(uri), spec))
        outbox.run_ids, outbox.pending = saved["run_ids"], saved["pending"]
        if not outbox.flush(force=True) or outbox.refused:
            raise TrackingUnavailableError(
                f"{len(outbox.unsent())} writes of {unsent} were not accepted by {uri}"
            )
        unsent.unlink()
    return _outcome(restore_tuner(path).get_results(), spec)


def spec_of(path: Path) -> SearchSpec:
    """The spec an experiment folder was started with."""
    spec_file = Path(path) / SPEC_FILE
    if not spec_file.is_file() or not tune.Tuner.can_restore(str(path)):
        raise FileNotFoundError(f"{path} is not a poke-tune experiment folder")
    return SearchSpec.model_validate(json.loads(spec_file.read_text()))


def restore_tuner(path: Path, *, address: str | None = None) -> tune.Tuner:
    """The Tuner of an existing experiment folder (searcher and scheduler state included)."""
    spec = spec_of(path)
    dataset = prepare_dataset(spec)
    _init_ray(address)
    return tune.Tuner.restore(str(path), trainable=_trainable(spec, dataset), resume_errored=True)


def trial_rows(results: tune.ResultGrid, spec: SearchSpec) -> list[dict[str, Any]]:
    """One row per trial: its parameters, objective, status, evaluations and best checkpoint.

    Status: completed, early-stopped (by ASHA), diverged, or failed (an error after retries).
    """
    sign = 1.0 if spec.objective.mode == "max" else -1.0
    rows = []
    for index in range(len(results)):
        result = results[index]
        metrics = result.metrics or {}
        done = int(metrics.get("training_iteration", 0))
        status = trial_status(metrics, failed=result.error is not None)
        checkpoint = None
        if result.best_checkpoints:
            best, _ = max(
                result.best_checkpoints,
                key=lambda pair: sign * pair[1].get(OBJECTIVE_KEY, -sign * float("inf")),
            )
            checkpoint = Path(best.path) / CHECKPOINT_FILE
        rows.append(
            {
                "trial_id": metrics.get("trial_id", Path(result.path).name),
                **{f"param/{k}": v for k, v in (result.config or {}).items()},
                OBJECTIVE_KEY: metrics.get(OBJECTIVE_KEY),
                "status": status,
                "evaluations": done,
                "checkpoint": checkpoint,
            }
        )
    return rows


def best_row(rows: list[dict[str, Any]], spec: SearchSpec) -> dict[str, Any] | None:
    """The row with the best objective (ignoring failed and diverged trials)."""
    sign = 1.0 if spec.objective.mode == "max" else -1.0
    scored = [
        r
        for r in rows
        if r["status"] in ("completed", "early-stopped") and r[OBJECTIVE_KEY] is not None
    ]
    return max(scored, key=lambda r: sign * r[OBJECTIVE_KEY], default=None)
