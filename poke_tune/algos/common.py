"""Pieces every algorithm shares: the batch type, the Algorithm protocol, target-network
Polyak averaging, learning-rate schedules and seeding."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "Algorithm",
    "Batch",
    "set_seed",
    "soft_update",
    "warmup_cosine_schedule",
]


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

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def train(self, mode: bool = True) -> Any: ...


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, cosine: bool
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then (if `cosine`) cosine decay to 0 at the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (network initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
