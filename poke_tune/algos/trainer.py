"""The training loop shared by `poke-tune train` and the Ray Tune trainable.

The compiled dataset is moved to the device once as tensors; batches are sampled with a
seeded torch.Generator and gathered by index (no per-transition Python; `batches.py`). Every
`eval_interval` steps the caller asks for offline metrics on the held-out trajectories:
TD error, action match with the data, and an FQE estimate of the policy's initial-state
value. Checkpoints hold everything needed to continue bit for bit: weights, optimizer
and schedule states, the step, the RNG states, the configs and the encoder version (the
format, its writer and its reader: `checkpoint.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from poke_tune.algos.batches import TransitionTensors
from poke_tune.algos.checkpoint import (
    check_compatible,
    check_dataset,
    checkpoint_state,
    read_checkpoint,
    write_checkpoint,
)
from poke_tune.algos.common import TDConfig, set_seed
from poke_tune.algos.fqe import FQE
from poke_tune.algos.networks import masked_argmax
from poke_tune.algos.policy import LearnedPolicy
from poke_tune.algos.table import AlgoConfig, build_algorithm, parse_algo_config
from poke_tune.data.compiled import OfflineDataset

__all__ = ["DivergedError", "TrainConfig", "Trainer", "run_training"]

_logger = logging.getLogger(__name__)

DIVERGENCE_LIMIT = 1e6  # |mean Q| beyond this with rewards in [-1, 1] is divergence


class DivergedError(RuntimeError):
    """Training produced NaN/inf or exploding values; the run's status is 'diverged'."""


class TrainConfig(BaseModel):
    """Settings of one training run that are not algorithm hyperparameters."""

    # strict: `steps: true` or `--set steps="100"` is an error, not 1 or 100.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    steps: int = Field(default=20_000, gt=0)
    """Gradient steps."""
    batch_size: int = Field(default=256, gt=0)
    """Transitions per gradient step."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear learning-rate warm-up."""
    eval_interval: int = Field(default=2_000, gt=0)
    """Steps between offline evaluations (and checkpoints)."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of trajectories held out for offline metrics."""
    fqe_steps: int = Field(default=250, ge=0)
    """FQE updates per evaluation (warm-started), 0 to skip FQE."""
    seed: int = 0
    """Seed of initialisation, batch sampling, the split and dropout."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'."""


def _is_optimiser_state(key: str) -> bool:
    """An algorithm state key that belongs to training's progress, not to the networks."""
    return key.endswith(("optimizer", "scheduler"))


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """One offline training run: algorithm, data, sampler, FQE and the step counter."""

    def __init__(
        self,
        algo_config: AlgoConfig,
        train_config: TrainConfig,
        dataset: OfflineDataset,
    ) -> None:
        check_dataset(dataset)
        self.algo_config = algo_config
        self.config = train_config
        self.dataset = dataset
        self.device = resolve_device(train_config.device)
        set_seed(train_config.seed)
        train_trajectories, val_trajectories = dataset.split(
            train_config.val_fraction, train_config.seed
        )
        # BC learns no values: FQE still needs a discount to evaluate its policy.
        td = algo_config if isinstance(algo_config, TDConfig) else TDConfig()
        n_step, gamma = td.n_step, td.gamma
        self.train_data = TransitionTensors(
            dataset, train_trajectories, self.device, n_step=n_step, gamma=gamma
        )
        self.val_data = (
            TransitionTensors(dataset, val_trajectories, self.device, n_step=n_step, gamma=gamma)
            if len(val_trajectories)
            else None
        )
        self.algorithm = build_algorithm(
            algo_config,
            observation_size=dataset.observation_size,
            num_actions=dataset.num_actions,
            total_steps=train_config.steps,
            warmup_steps=train_config.warmup_steps,
            device=self.device,
        )
        # FQE gets its own RNG streams, so offline evaluation never changes training.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_config.seed + 1)
            self.fqe = FQE(
                observation_size=dataset.observation_size,
                num_actions=dataset.num_actions,
                gamma=gamma,
                device=self.device,
            )
        self.generator = torch.Generator(self.device).manual_seed(train_config.seed)
        self.fqe_generator = torch.Generator(self.device).manual_seed(train_config.seed + 1)
        self.step = 0

    # -- training -------------------------------------------------------------------------

    def train(
        self, until_step: int, on_progress: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        """Gradient steps up to `until_step`; returns the metrics averaged over them.

        `on_progress(steps_done)` is called every 50 steps (progress bars).
        """
        self.algorithm.train(True)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        while self.step < min(until_step, self.config.steps):
            batch = self.train_data.sample(self.config.batch_size, self.generator)
            for key, value in self.algorithm.update(batch).items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            self.step += 1
            count += 1
            if on_progress is not None and count % 50 == 0:
                on_progress(50)
        if on_progress is not None and count % 50:
            on_progress(count % 50)
        if not count:
            return {}
        metrics = {key: float(value) / count for key, value in sums.items()}
        self._check_divergence(metrics)
        return metrics

    def _check_divergence(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if not np.isfinite(value):
                raise DivergedError(f"{key} became {value} by step {self.step}")
        q_mean = abs(metrics.get("train/q_mean", 0.0))
        if q_mean > DIVERGENCE_LIMIT:
            raise DivergedError(f"train/q_mean reached {q_mean:.3g} by step {self.step}")

    # -- offline evaluation ---------------------------------------------------------------

    @torch.no_grad()
    def _policy_scores(self, observations: torch.Tensor) -> torch.Tensor:
        return self.algorithm.action_scores(observations)

    def evaluate(self, max_transitions: int = 8192) -> dict[str, float]:
        """Held-out TD error and action match, and the FQE initial-state value."""
        self.algorithm.train(False)
        metrics: dict[str, float] = {}
        data = self.val_data or self.train_data
        index = torch.arange(min(len(data), max_transitions), device=self.device)
        batch = data.batch(index)
        with torch.no_grad():
            chosen = masked_argmax(self._policy_scores(batch.observations), batch.masks)
            metrics["offline/action_match"] = float((chosen == batch.actions).float().mean())
            td_error = self.algorithm.td_error(batch)
            if td_error is not None:
                metrics["offline/td_error"] = float(td_error)
        if self.config.fqe_steps:
            for _ in range(self.config.fqe_steps):
                fqe_batch = self.train_data.sample(
                    self.config.batch_size, self.fqe_generator, one_step=True
                )
                self.fqe.update(fqe_batch, self._policy_scores)
            observations, masks = data.initial_states()
            metrics["offline/fqe_value"] = self.fqe.value(observations, masks, self._policy_scores)
        self._check_divergence(metrics)
        return metrics

    def policy(self, name: str, *, temperature: float | None = None) -> LearnedPolicy:
        """The algorithm as a playable `Policy` (on this run's device, in eval mode until
        training goes on)."""
        return LearnedPolicy.of(self.algorithm, name, temperature=temperature, device=self.device)

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue this run bit for bit (loadable with weights_only=True)."""
        return checkpoint_state(
            dataset=self.dataset,
            algo_config=self.algo_config,
            train_config=self.config,
            step=self.step,
            algorithm=self.algorithm.state_dict(),
            fqe=self.fqe.state_dict(),
            rng={
                "sampler": self.generator.get_state(),
                "fqe_sampler": self.fqe_generator.get_state(),
                "torch": torch.get_rng_state(),
            },
        )

    def save(self, path: Path) -> None:
        """Write a checkpoint atomically (a crash never leaves a half-written file)."""
        write_checkpoint(self.state_dict(), path)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same configs and dataset."""
        check_compatible(state, self.dataset)
        if state["dataset_key"] != self.dataset.key:
            raise ValueError(
                f"checkpoint was trained on dataset {state['dataset_key']}, not "
                f"{self.dataset.key} ({self.dataset.source})"
            )
        self.algorithm.load_state_dict(state["algorithm"])
        self.fqe.load_state_dict(state["fqe"])
        self.generator.set_state(state["rng"]["sampler"])
        self.fqe_generator.set_state(state["rng"]["fqe_sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step = int(state["step"])

    @classmethod
    def resume(
        cls,
        path: Path,
        dataset: OfflineDataset,
        device: str | None = None,
        *,
        train_config: TrainConfig | None = None,
    ) -> Trainer:
        """A trainer restored from a checkpoint file, ready to continue.

        `train_config` replaces the saved training settings (e.g. more steps; which changes
        keep it the same run: `training_run.prepare_trainer`).
        """
        return cls.from_state(read_checkpoint(path), dataset, device, train_config=train_config)

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        dataset: OfflineDataset,
        device: str | None = None,
        *,
        train_config: TrainConfig | None = None,
    ) -> Trainer:
        """`resume` from a checkpoint already read with `read_checkpoint`."""
        if train_config is None:
            train_config = TrainConfig.model_validate(state["train_config"])
        if device is not None:
            train_config = train_config.model_copy(update={"device": device})
        trainer = cls(parse_algo_config(state["algo_config"]), train_config, dataset)
        trainer.load_state_dict(state)
        return trainer

    def fine_tune_from(self, path: Path) -> None:
        """Start from another run's networks (the same algorithm, any data): a fine-tune.

        The checkpoint's networks (and learned temperatures such as CQL's alpha) replace
        the fresh ones; the optimisers and learning-rate schedules stay fresh, so this run
        takes its own `steps` from the start of its schedule, on its own data.
        """
        state = read_checkpoint(path)
        check_compatible(state, self.dataset)
        if state["algo_config"]["algo"] != self.algo_config.algo:
            raise ValueError(
                f"{path} is a {state['algo_config']['algo']} checkpoint: a fine-tune of "
                f"{self.algo_config.algo} starts from {self.algo_config.algo}"
            )
        fresh = self.algorithm.state_dict()
        fine_tuned = {
            key: fresh[key] if _is_optimiser_state(key) else value
            for key, value in state["algorithm"].items()
        }
        self.algorithm.load_state_dict(fine_tuned)

    def init_policy_from(self, path: Path) -> None:
        """Start the policy from a BC checkpoint's policy (IQL and BC only)."""
        state = read_checkpoint(path)
        check_compatible(state, self.dataset)
        if state["algo_config"]["algo"] != "bc":
            raise ValueError(f"{path} is a {state['algo_config']['algo']} checkpoint, not BC")
        policy = self.algorithm.policy
        if policy is None:
            raise ValueError(f"{self.algo_config.algo} has no policy network to initialise")
        policy.load_state_dict(state["algorithm"]["policy"])


def run_training(
    trainer: Trainer, on_progress: Callable[[int], None] | None = None
) -> Iterator[dict[str, float]]:
    """Train to the end, yielding `step`, the window's train metrics and the offline
    metrics after every `eval_interval` steps (and at the last step)."""
    config = trainer.config
    while trainer.step < config.steps:
        boundary = min(
            config.steps, (trainer.step // config.eval_interval + 1) * config.eval_interval
        )
        metrics = trainer.train(boundary, on_progress)
        metrics |= trainer.evaluate()
        yield {"step": float(trainer.step), **metrics}
