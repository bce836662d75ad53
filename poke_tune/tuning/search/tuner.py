"""The Ray Tune `Tuner` of a spec: Optuna's define-by-run space and sampler (through
`OptunaSearch`), the scheduler (ASHA or FIFO), the trainable with its resources, and which
checkpoints each trial keeps.

The dataset reaches the trials through `tune.with_parameters`, i.e. the object store. The
`OfflineDataset` pickles as its manifest, so every trial memory-maps the same read-only
shards (one page-cache copy per node) and gathers its batches from them. Tracking is not
this module's business: it arrives as Tune callbacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from poke_tune.data.compiled import OfflineDataset
from poke_tune.tuning.search.trainable import train_trial
from poke_tune.tuning.spec import (
    OBJECTIVE_KEY,
    SCORE_KEY,
    CategoricalParam,
    CheckpointSpec,
    ObjectiveSpec,
    SearchSpec,
    SpecError,
)

__all__ = ["DefineByRun", "build_tuner", "checkpoint_config"]


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


def _trainable(spec: SearchSpec, dataset: OfflineDataset) -> Any:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    with_data = tune.with_parameters(
        train_trial, spec_json=spec.model_dump_json(), dataset=dataset
    )
    return tune.with_resources(with_data, resources)


def checkpoint_config(
    checkpoint: CheckpointSpec, objective: ObjectiveSpec
) -> tune.CheckpointConfig:
    """Keep each trial's best `checkpoint.keep` checkpoints by the value of the evaluation
    each was saved at (not by the running best, which would keep the newest)."""
    return tune.CheckpointConfig(
        num_to_keep=checkpoint.keep,
        checkpoint_score_attribute=SCORE_KEY,
        checkpoint_score_order=objective.mode,
    )


def build_tuner(
    spec: SearchSpec,
    dataset: OfflineDataset,
    callbacks: Sequence[tune.Callback] = (),
    *,
    restore: Path | None = None,
) -> tune.Tuner:
    """The Tuner for a spec, or (`restore`) the Tuner of the interrupted search at that
    path, back with its searcher, scheduler and callbacks. Call inside an initialised Ray.
    Tune pickles the spec into its experiment state: hand it the spec with the tracking
    URI redacted (`redaction.redacted`)."""
    if restore is not None:
        return tune.Tuner.restore(
            str(restore), trainable=_trainable(spec, dataset), resume_errored=True
        )
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
            checkpoint_config=checkpoint_config(spec.checkpoint, spec.objective),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=list(callbacks),
        ),
    )
