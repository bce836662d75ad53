"""Stage 1, search: from a validated spec to a Ray Tune sweep (OptunaSearch + ASHA ->
Tuner -> fit()) and one typed row per trial.

The dataset is compiled (or generated from its recipe) once on the driver, before Ray
starts; trials receive it through `tune.with_parameters`, i.e. the object store. The
`OfflineDataset` pickles as its cache folder, so every trial memory-maps the same
read-only arrays instead of copying them. Tracking is not this module's business: it
arrives as Tune callbacks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning import ray_runtime
from poke_tune.tuning.cluster import check_fits, check_storage
from poke_tune.tuning.experiment import Experiment
from poke_tune.tuning.records import TrialRow, trial_status
from poke_tune.tuning.redaction import redacted
from poke_tune.tuning.spec import (
    OBJECTIVE_KEY,
    SCORE_KEY,
    CategoricalParam,
    SearchSpec,
    SpecError,
)
from poke_tune.tuning.trainable import CHECKPOINT_FILE, train_trial

__all__ = [
    "DefineByRun",
    "SearchOutcome",
    "build_tuner",
    "checkpoint_config",
    "init_ray",
    "prepare_dataset",
    "search",
    "trial_rows",
]

_logger = logging.getLogger(__name__)


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
            match param.distribution():
                case CategoricalDistribution(choices=choices):
                    trial.suggest_categorical(name, choices)
                case FloatDistribution(low=low, high=high, log=log):
                    trial.suggest_float(name, low, high, log=log)
                case IntDistribution(low=low, high=high, log=log):
                    trial.suggest_int(name, low, high, log=log)


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


def checkpoint_config(spec: SearchSpec) -> tune.CheckpointConfig:
    """Keep each trial's best `checkpoint.keep` checkpoints by the value of the evaluation
    each was saved at (not by the running best, which would keep the newest)."""
    return tune.CheckpointConfig(
        num_to_keep=spec.checkpoint.keep,
        checkpoint_score_attribute=SCORE_KEY,
        checkpoint_score_order=spec.objective.mode,
    )


def build_tuner(
    spec: SearchSpec, dataset: OfflineDataset, callbacks: Sequence[tune.Callback] = ()
) -> tune.Tuner:
    """The Tuner for a spec (call inside an initialised Ray). Tune pickles the spec into
    its experiment state, so it gets the spec with the tracking URI redacted."""
    spec = redacted(spec)
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
            checkpoint_config=checkpoint_config(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=list(callbacks),
        ),
    )


LOCAL_ONLY_ENV = "POKE_TUNE_RAY_LOCAL_ONLY"
"""Set to 0 to let a local Ray instance listen on all interfaces (Ray's default)."""


def init_ray(address: str | None, *, storage_path: str | None = None) -> None:
    """Connect to `address` / RAY_ADDRESS, else start a local Ray on this machine that
    listens on 127.0.0.1 only (Ray's own default is every interface), writes logs only
    this user can read, and, when `storage_path` is local, does not inherit the driver's
    credentials (its workers are the trials, which need none)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address is not None:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
        return
    if os.environ.get(LOCAL_ONLY_ENV, "1") != "0":
        _loopback_only()
    secrets = [] if storage_path is None else ray_runtime.inherited_secrets(storage_path)
    with ray_runtime.withheld(secrets), ray_runtime.private_files():
        ray.init(include_dashboard=False, log_to_driver=True)


def _loopback_only() -> None:
    # Ray's single-machine mode (its default on macOS and Windows): the node's address is
    # 127.0.0.1, and Ray then binds its GCS, raylet, workers and agents to loopback. The
    # environment variable reaches Ray's processes; the constant was read at import.
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass(frozen=True)
class SearchOutcome:
    """What the search stage hands on: Tune's results and one row per trial."""

    results: tune.ResultGrid
    rows: list[TrialRow]
    interrupted: bool
    """The sweep stopped before every trial ended (Ctrl-C): nothing is promoted."""


def search(
    spec: SearchSpec,
    dataset: OfflineDataset,
    *,
    address: str | None = None,
    callbacks: Sequence[tune.Callback] = (),
) -> SearchOutcome:
    """Run the search: every trial trains and is scored on the selection battles."""
    init_ray(address, storage_path=spec.storage_path)
    check_storage(spec)  # a multi-node cluster needs shared storage
    check_fits(spec)  # a trial the cluster can never place would stay PENDING forever
    return _outcome(_fit(build_tuner(spec, dataset, callbacks), spec), spec)


def resume_search(
    path: Path, spec: SearchSpec, dataset: OfflineDataset, *, address: str | None = None
) -> SearchOutcome:
    """Continue an interrupted search where its experiment state left it (the Tuner comes
    back with its searcher and scheduler state)."""
    init_ray(address, storage_path=spec.storage_path)
    trainable = _trainable(redacted(spec), dataset)
    tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    check_storage(spec)
    check_fits(spec)
    return _outcome(_fit(tuner, spec), spec)


def searched(path: Path, spec: SearchSpec) -> SearchOutcome:
    """The rows of a search that is not running (for `best`, `confirm`, `track`): read from
    Tune's experiment state, with no Ray instance and no dataset."""
    return _outcome(tune.ResultGrid(tune.ExperimentAnalysis(str(path))), spec)


def _outcome(results: tune.ResultGrid, spec: SearchSpec) -> SearchOutcome:
    # Tune's own trial states tell an ended trial from one cut off by Ctrl-C.
    states = {
        trial.trial_id: trial.status
        for trial in tune.ExperimentAnalysis(results.experiment_path).trials
    }
    rows = trial_rows(results, spec, states)
    interrupted = len(rows) < spec.num_samples or any(r.status == "interrupted" for r in rows)
    return SearchOutcome(results, rows, interrupted)


def trial_rows(
    results: tune.ResultGrid, spec: SearchSpec, states: dict[str, str] | None = None
) -> list[TrialRow]:
    """One row per trial: parameters, selection score, status, and the checkpoint saved at
    its best evaluation (Ray's `get_best_checkpoint` by the evaluation's own value)."""
    rows = []
    for index in range(len(results)):
        result = results[index]
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id", Path(result.path).name))
        status = trial_status(
            metrics, failed=result.error is not None, state=(states or {}).get(trial_id)
        )
        best = None
        if result.best_checkpoints:  # a trial that failed at once has none
            best = result.get_best_checkpoint(SCORE_KEY, spec.objective.mode)
        score = metrics.get(OBJECTIVE_KEY)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                params=dict(result.config or {}),
                score=None if score is None else float(score),
                status=status,
                evaluations=int(metrics.get("training_iteration", 0)),
                checkpoint=None if best is None else Path(best.path) / CHECKPOINT_FILE,
            )
        )
    return rows


def _fit(tuner: tune.Tuner, spec: SearchSpec) -> tune.ResultGrid:
    """`tuner.fit()` without the credentials Tune would copy into the trials (and Ray into
    its logs) when the storage needs none; memory running out ends in a one-line
    `MemoryExhaustedError`, not Tune's traceback."""
    try:
        with ray_runtime.withheld(ray_runtime.tune_forwarded_secrets(spec.storage_path)):
            return tuner.fit()
    except Exception as error:
        if not ray_runtime.out_of_memory(error):
            raise
        raise ray_runtime.memory_exhausted(Experiment(spec).location) from error
