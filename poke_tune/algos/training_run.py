"""One training run in a folder: what `poke-tune train` does between parsing and printing.

`prepare_trainer` builds a fresh trainer, or continues a checkpoint with only the changes
that can apply to it: more `steps` (the learning-rate schedule stretches to the new total),
another `eval_interval`, `fqe_steps` or `device`. A different algorithm, changed
hyperparameters or changed data settings (`batch_size`, `seed`, `val_fraction`,
`warmup_steps`) would no longer continue the same run and are refused.

`run_in_folder` trains to the end and writes the folder: `config.json` (both configs, the
dataset path and key), `metrics.jsonl` (appended, one line per evaluation, plus a status
line on divergence), `checkpoint_last.pt` after every evaluation and `checkpoint_best.pt`,
the checkpoint with the best FQE value estimate so far (the step when FQE is off).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from poke_tune.algos.checkpoint import read_checkpoint
from poke_tune.algos.table import ALGORITHMS, parse_algo_config
from poke_tune.algos.trainer import DivergedError, TrainConfig, Trainer, run_training
from poke_tune.data.compiled import OfflineDataset

__all__ = [
    "BEST_CHECKPOINT",
    "BEST_METRIC",
    "CONFIG_FILE",
    "LAST_CHECKPOINT",
    "METRICS_FILE",
    "RESUMABLE_SETTINGS",
    "TrainingRun",
    "prepare_trainer",
    "run_in_folder",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"
BEST_METRIC = "offline/fqe_value"
"""What `checkpoint_best.pt` is chosen by (the step stands in when FQE is off)."""
RESUMABLE_SETTINGS = frozenset({"steps", "eval_interval", "fqe_steps", "device"})
"""Training settings a resumed run may change; the others define the run."""


@dataclass(frozen=True)
class TrainingRun:
    """What a finished (or diverged) run left in its folder."""

    folder: Path
    status: Literal["completed", "diverged"]
    step: int
    """Gradient steps done, those before a resume included."""
    last_checkpoint: Path
    best_checkpoint: Path
    metrics_file: Path
    reason: str | None = None
    """Why the run diverged."""


def prepare_trainer(
    dataset: OfflineDataset,
    *,
    algo: str | None,
    algo_values: Mapping[str, Any],
    train_values: Mapping[str, Any],
    resume: Path | None = None,
    bc_init: Path | None = None,
) -> Trainer:
    """A new trainer (its policy started from the BC checkpoint `bc_init`, if given), or
    the checkpoint `resume` continued with `train_values` applied.

    Raises ValueError for an unknown or missing algorithm, invalid values, or (on resume)
    a change that the checkpoint's run cannot take (see the module docstring).
    """
    if resume is None:
        if algo is None:
            names = ", ".join(ALGORITHMS)
            raise ValueError(f"--algo is required ({names}) unless --resume is given")
        trainer = Trainer(
            parse_algo_config({"algo": algo, **algo_values}),
            TrainConfig(**train_values),
            dataset,
        )
        if bc_init is not None:
            trainer.init_policy_from(bc_init)
        return trainer
    if bc_init is not None:
        raise ValueError(
            "--bc-init starts a new run's policy; a resumed run continues its own (drop one)"
        )
    state = read_checkpoint(resume)
    saved = parse_algo_config(state["algo_config"])
    if algo is not None and algo != saved.algo:
        raise ValueError(
            f"--algo {algo}: checkpoint {resume} was trained with {saved.algo}; a resumed "
            f"run keeps its algorithm (drop --algo, or train {algo} from scratch)"
        )
    wanted = parse_algo_config(_merged(saved.model_dump(mode="json"), algo_values))
    changed = _changes(saved.model_dump(mode="json"), wanted.model_dump(mode="json"))
    if changed:
        raise ValueError(
            f"--set {', '.join(changed)}: checkpoint {resume} was trained with other values "
            "and a resumed run keeps its hyperparameters (start a new run to change them)"
        )
    saved_train = TrainConfig.model_validate(state["train_config"])
    train = TrainConfig.model_validate(saved_train.model_dump() | dict(train_values))
    fixed = [
        f"{key}={getattr(train, key)!r} (was {getattr(saved_train, key)!r})"
        for key in sorted(TrainConfig.model_fields)
        if key not in RESUMABLE_SETTINGS and getattr(train, key) != getattr(saved_train, key)
    ]
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)}: a resumed run keeps its data settings; it may change only "
            f"{', '.join(sorted(RESUMABLE_SETTINGS))}"
        )
    step = int(state["step"])
    if train.steps <= step:
        raise ValueError(
            f"checkpoint {resume} is at step {step} of {saved_train.steps}: ask for more "
            f"(--steps above {step}) to continue it"
        )
    return Trainer.from_state(state, dataset, train_config=train)


def _merged(base: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """`key=new (was old)` for every leaf that differs."""
    found = []
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            found += _changes(old, value, f"{prefix}{key}.")
        elif value != old:
            found.append(f"{prefix}{key}={value!r} (was {old!r})")
    return found


def run_in_folder(
    trainer: Trainer,
    folder: Path,
    *,
    data_path: Path,
    on_progress: Callable[[int], None] | None = None,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
) -> TrainingRun:
    """Train to `trainer.config.steps`, writing the run folder (see the module docstring).

    `on_progress(steps)` follows the gradient steps; `on_metrics(metrics)` gets each
    evaluation's metrics after they are written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    last, best_path = folder / LAST_CHECKPOINT, folder / BEST_CHECKPOINT
    (folder / CONFIG_FILE).write_text(
        json.dumps(
            {
                "algo": trainer.algo_config.model_dump(mode="json"),
                "train": trainer.config.model_dump(mode="json"),
                "data": str(data_path),
                "dataset_key": trainer.dataset.key,
            },
            indent=2,
        )
    )
    best = float("-inf")
    metrics_path = folder / METRICS_FILE
    with metrics_path.open("a") as metrics_file:
        try:
            for metrics in run_training(trainer, on_progress):
                metrics_file.write(json.dumps(metrics) + "\n")
                metrics_file.flush()
                trainer.save(last)
                score = metrics.get(BEST_METRIC, metrics["step"])
                if score > best:
                    best = score
                    shutil.copyfile(last, best_path)
                if on_metrics is not None:
                    on_metrics(metrics)
        except DivergedError as error:
            status = {"step": trainer.step, "status": "diverged", "reason": str(error)}
            metrics_file.write(json.dumps(status) + "\n")
            return TrainingRun(
                folder, "diverged", trainer.step, last, best_path, metrics_path, str(error)
            )
    return TrainingRun(folder, "completed", trainer.step, last, best_path, metrics_path)
