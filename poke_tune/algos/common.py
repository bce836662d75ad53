"""Pieces every algorithm shares: the config bases, the batch type, the Algorithm protocol,
the TD loss, target-network Polyak averaging, learning-rate schedules, n-step returns and
seeding."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from poke_tune.algos.networks import NetworkConfig, PolicyNetwork

__all__ = [
    "AlgoConfigBase",
    "Algorithm",
    "Batch",
    "TDConfig",
    "bootstrap_weights",
    "n_step_targets",
    "set_seed",
    "soft_update",
    "td_loss",
    "warmup_cosine_schedule",
    "warmup_schedule",
]


class AlgoConfigBase(BaseModel):
    """What every algorithm's config has: the shape of its networks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: NetworkConfig = NetworkConfig()

    if TYPE_CHECKING:  # each algorithm's config declares it as a `Literal` field

        @property
        def algo(self) -> str:
            """The algorithm's name in `table.ALGORITHMS` (the union's discriminator)."""
            ...


class TDConfig(AlgoConfigBase):
    """What the algorithms that learn critics by temporal differences (IQL, CQL) share."""

    gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount factor."""
    n_step: int = Field(default=1, ge=1, le=1000)
    """Return horizon of the TD target: sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n}), cut
    at the trajectory's end (1 = one-step TD; at least the battle length = Monte Carlo)."""
    tau: float = Field(default=0.005, gt=0, le=1)
    """Polyak rate of the target critics."""
    num_critics: int = Field(default=2, ge=1)
    """Q networks; targets use their minimum."""


@dataclass(frozen=True)
class Batch:
    """A batch of transitions (s, a, r, s', terminal) with both legal-action masks."""

    observations: torch.Tensor  # float32 [B, D]
    actions: torch.Tensor  # int64 [B]
    rewards: torch.Tensor  # float32 [B]
    next_observations: torch.Tensor  # float32 [B, D]
    terminals: torch.Tensor  # float32 [B]; 1 only at a real end (a cut-off still bootstraps)
    masks: torch.Tensor  # bool [B, A]
    next_masks: torch.Tensor  # bool [B, A]; all False after a terminal
    bootstrap: torch.Tensor | None = None
    """float32 [B]: weight of the next state's value in the TD target, gamma^n * (1 -
    terminal) for an n-step batch (`rewards` then hold the discounted n-step sums and
    `next_observations` the state n steps on); None means gamma * (1 - terminals)."""


def bootstrap_weights(batch: Batch, gamma: float) -> torch.Tensor:
    """The factor of V(s') or Q(s', .) in the TD target of each transition of `batch`."""
    if batch.bootstrap is not None:
        return batch.bootstrap
    return gamma * (1.0 - batch.terminals)


def n_step_targets(
    rewards: np.ndarray,
    terminals: np.ndarray,
    trajectory_ids: np.ndarray,
    *,
    n_step: int,
    gamma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Discounted n-step reward sums, steps taken and bootstrap weights per transition.

    For transition t of a trajectory with T steps, m = min(n_step, T - t) and
        R_t = sum_{k < m} gamma^k r_{t+k},   weight_t = gamma^m * (1 - terminal_{t+m-1}),
    so the TD target is R_t + weight_t * V(s_{t+m}): cut at a trajectory's end, and a
    cut-off (truncated) trajectory still bootstraps from its final observation. Arrays
    are in the dataset's transition order (trajectories contiguous).
    """
    if n_step < 1:
        raise ValueError(f"n_step must be >= 1, got {n_step}")
    count = len(rewards)
    ids = np.asarray(trajectory_ids)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    lengths = np.diff(np.r_[starts, count])
    position = np.arange(count) - np.repeat(starts, lengths)
    steps = np.minimum(n_step, np.repeat(lengths, lengths) - position)
    rewards64 = np.asarray(rewards, dtype=np.float64)
    sums = np.zeros(count, dtype=np.float64)
    for k in range(min(n_step, int(lengths.max()))):
        live = k < steps
        sums[live] += gamma**k * rewards64[np.flatnonzero(live) + k]
    last = np.arange(count) + steps - 1
    weights = gamma**steps * (1.0 - np.asarray(terminals, dtype=np.float64)[last])
    return sums.astype(np.float32), steps.astype(np.int64), weights.astype(np.float32)


def td_loss(q_data: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over critics of the squared error to a shared target; q_data is [critics, B]."""
    return (q_data - targets).pow(2).mean(dim=1).mean()


class Algorithm(Protocol):
    """What the trainer, the evaluation and the checkpoints need from an algorithm."""

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step; returns detached scalar metrics (namespaced, e.g. train/q_loss)."""
        ...

    def action_scores(self, observations: torch.Tensor) -> torch.Tensor:
        """Unmasked per-action scores that the policy acts on (logits or Q), [B, A]."""
        ...

    def td_error(self, batch: Batch) -> torch.Tensor | None:
        """Mean squared TD error of the critic on `batch` (None: no critic)."""
        ...

    @property
    def policy(self) -> PolicyNetwork | None:
        """The policy network it acts with (BC's can initialise it), or None when it acts
        with its critics."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def train(self, mode: bool = True) -> Any: ...


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def warmup_schedule(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then the constant learning rate."""

    def factor(step: int) -> float:
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (network initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
