"""Behaviour cloning: maximise the log-likelihood of dataset actions under a masked
categorical policy (cross-entropy over legal actions only)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from poke_tune.algos.common import AlgoConfigBase, Batch, warmup_cosine_schedule
from poke_tune.algos.networks import PolicyNetwork, masked_argmax, masked_logits

__all__ = ["BC", "BCConfig", "bc_loss"]


class BCConfig(AlgoConfigBase):
    """Behaviour cloning hyperparameters; `network` shapes the policy."""

    algo: Literal["bc"] = "bc"
    learning_rate: float = Field(default=3e-4, gt=0)
    """Adam learning rate (linear warm-up, then cosine decay)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""


def bc_loss(logits: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the dataset actions under the masked policy."""
    return F.cross_entropy(masked_logits(logits, masks), actions)


class BC:
    """Behaviour cloning of the dataset's (mixed) behaviour policy."""

    def __init__(
        self,
        config: BCConfig,
        *,
        observation_size: int,
        num_actions: int,
        total_steps: int,
        warmup_steps: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.policy = PolicyNetwork(observation_size, num_actions, config.network).to(device)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            fused=True,
        )
        self.scheduler = warmup_cosine_schedule(
            self.optimizer, warmup_steps=warmup_steps, total_steps=total_steps
        )

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.policy(batch.observations)
        loss = bc_loss(logits, batch.masks, batch.actions)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        accuracy = (masked_argmax(logits.detach(), batch.masks) == batch.actions).float().mean()
        return {"train/bc_loss": loss.detach(), "train/action_match": accuracy}

    def action_scores(self, observations: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.policy(observations)
        return scores

    def td_error(self, batch: Batch) -> torch.Tensor | None:
        return None

    def train(self, mode: bool = True) -> BC:
        self.policy.train(mode)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
