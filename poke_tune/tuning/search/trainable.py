"""The Ray Tune function trainable: one IQL/CQL/BC training run per trial.

Validate (the spec travels as JSON and is re-validated here), build, loop, report. After
every `training.eval_interval` steps the trial reports the offline metrics and, when the
objective is a win rate, the win rate over the spec's fixed seeded battle set (the same
battles for every trial and evaluation: common random numbers). The reported
`objective/best` is the best-so-far value, so a trial ASHA stops early still tells Optuna
its best evaluation; `objective/value` is this evaluation's value, by which Tune ranks the
checkpoints (so the checkpoint of the peak is the one kept). Checkpoints go through
`tune.report(..., checkpoint=...)`; a restarted trial continues from
`tune.get_checkpoint()` bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray
from ray import tune

from poke_tune.algos import DivergedError, Trainer, read_checkpoint, run_training
from poke_tune.data.compiled import OfflineDataset
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.tuning.spec import OBJECTIVE_KEY, SCORE_KEY, SearchSpec

__all__ = ["CHECKPOINT_FILE", "DIVERGED_OBJECTIVE", "train_trial"]

_logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "trainer.pt"
PROGRESS_FILE = "progress.json"
DIVERGED_OBJECTIVE = 1e6
"""|objective| reported by a diverged trial (with the sign that makes it the worst)."""


def _save(trainer: Trainer, folder: Path, progress: dict[str, Any]) -> Any:
    trainer.save(folder / CHECKPOINT_FILE)
    (folder / PROGRESS_FILE).write_text(json.dumps(progress))
    return tune.Checkpoint.from_directory(str(folder))


def train_trial(config: dict[str, Any], *, spec_json: str, dataset: OfflineDataset) -> None:
    """Train one sampled configuration and report every evaluation to Tune."""
    spec = SearchSpec.model_validate_json(spec_json)
    algo_config = spec.algorithm_config(config)
    trainer = Trainer(algo_config, spec.training, dataset)
    progress: dict[str, Any] = {"best": None, "evaluations": 0}

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(read_checkpoint(Path(folder) / CHECKPOINT_FILE))
            progress = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        _logger.info("resumed at step %d", trainer.step)
    progress["restored_from_step"] = trainer.step if checkpoint is not None else 0

    opponent = make_policy(spec.objective.opponent)
    with ExitStack() as stack:
        pool = None
        if spec.objective.uses_battles:
            pool = stack.enter_context(SimulatorPool(num_workers=1))
        _train_loop(spec, trainer, progress, pool, opponent)


def _train_loop(
    spec: SearchSpec,
    trainer: Trainer,
    progress: dict[str, Any],
    pool: SimulatorPool | None,
    opponent: Policy,
) -> None:
    objective = spec.objective
    sign = objective.sign
    try:
        for metrics in run_training(trainer):
            report: dict[str, Any] = dict(metrics)
            if pool is not None:
                policy = trainer.policy("trial")
                result = evaluate(
                    policy,
                    opponent,
                    battles=objective.battles,
                    seed=objective.seed,
                    max_turns=objective.max_turns,
                    pool=pool,
                )
                report |= {
                    "eval/win_rate": result.win_rate,
                    "eval/win_rate_ci_low": result.ci_low,
                    "eval/win_rate_ci_high": result.ci_high,
                }
            if objective.metric not in report:
                raise KeyError(
                    f"objective.metric {objective.metric!r} is not reported; "
                    f"available: {sorted(report)}"
                )
            value = float(report[objective.metric])
            best = progress["best"]
            progress["best"] = value if best is None else sign * max(sign * best, sign * value)
            progress["evaluations"] += 1
            report |= {
                OBJECTIVE_KEY: progress["best"],
                SCORE_KEY: value,
                "status": "completed" if trainer.step >= spec.training.steps else "running",
                "device": str(trainer.device),
                "node_id": ray.get_runtime_context().get_node_id(),
                "worker_pid": os.getpid(),
                "restored_from_step": progress["restored_from_step"],
            }
            last = report["status"] == "completed"
            if progress["evaluations"] % spec.checkpoint.every == 0 or last:
                with tempfile.TemporaryDirectory() as folder:
                    tune.report(report, checkpoint=_save(trainer, Path(folder), progress))
            else:
                tune.report(report)
    except DivergedError as error:
        _logger.warning("trial diverged: %s", error)
        tune.report(
            {
                OBJECTIVE_KEY: -sign * DIVERGED_OBJECTIVE,
                SCORE_KEY: -sign * DIVERGED_OBJECTIVE,
                "status": "diverged",
                "diverged_reason": str(error),
                "step": float(trainer.step),
            }
        )
