"""Conservative Q-Learning, CQL(H), for discrete, masked actions.

Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS 2020 (the discrete variant as in d3rlpy's DiscreteCQL). Per step:

    L(Q) = alpha * E_s[ logsumexp_{a legal} Q(s, a) - Q(s, a_data) ]      (conservative)
         + E[ (r + gamma * (1 - terminal) * Q_target(s', a*) - Q(s, a_data))^2 ]   (TD)
    a*   = argmax_{a legal in s'} Q(s', a)                                  (Double DQN)

The logsumexp is exact over the legal actions (never a sample of random actions), and
illegal actions are -inf both there and in the target argmax. With `lagrange = true`,
alpha is learned to hold the conservative gap at `target_gap`:
    max_{alpha >= 0} alpha * (gap - target_gap).
The agent acts with the masked argmax of Q (or a softmax over Q for stochastic play).
Anchors: alpha 1.0 (d3rlpy default, 10% Atari data), 4.0 (1% data); 5-10 common elsewhere.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import Field

from poke_tune.algos.common import (
    Batch,
    TDConfig,
    bootstrap_weights,
    soft_update,
    td_loss,
    warmup_schedule,
)
from poke_tune.algos.networks import (
    QEnsemble,
    masked_argmax,
    masked_logits,
    q_of_actions,
)

__all__ = ["CQL", "CQLConfig", "conservative_penalty", "double_dqn_targets"]


class CQLConfig(TDConfig):
    """CQL hyperparameters (paper names); `network` shapes the Q networks, which act."""

    algo: Literal["cql"] = "cql"
    alpha: float = Field(default=1.0, ge=0)
    """Weight of the conservative penalty (the initial value when `lagrange`)."""
    lagrange: bool = False
    """Learn alpha by dual gradient ascent to hold the gap at `target_gap`."""
    target_gap: float = Field(default=1.0, ge=0)
    """Conservative gap that Lagrangian CQL holds."""
    alpha_lr: float = Field(default=1e-3, gt=0)
    """Learning rate of log(alpha) when `lagrange`."""
    learning_rate: float = Field(default=3e-4, gt=0)
    """Q learning rate (after a linear warm-up)."""


def conservative_penalty(
    q_all: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """E[logsumexp over legal actions of Q(s, .) - Q(s, a_data)]; q_all is [critics, B, A]."""
    logsumexp = torch.logsumexp(masked_logits(q_all, masks), dim=-1)
    return (logsumexp - q_of_actions(q_all, actions)).mean()


def double_dqn_targets(
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    next_masks: torch.Tensor,
    rewards: torch.Tensor,
    bootstrap: torch.Tensor,
) -> torch.Tensor:
    """r + bootstrap * Q_target(s', argmax_{legal a} Q_online(s', a)).

    Both Q inputs are [B, A]; `bootstrap` is gamma * (1 - terminal), or gamma^n * (1 -
    terminal) for an n-step batch (`bootstrap_weights`). After a terminal s' has no legal
    action; the argmax then picks index 0 of a finite target and the weight 0 zeroes it.
    """
    best = masked_argmax(next_q_online, next_masks)
    next_value = next_q_target.gather(1, best[:, None]).squeeze(1)
    return rewards + bootstrap * next_value


class CQL:
    """Discrete CQL(H) with an ensemble of Q networks and optional Lagrangian alpha."""

    policy: None = None  # it acts with its Q networks

    def __init__(
        self,
        config: CQLConfig,
        *,
        observation_size: int,
        num_actions: int,
        total_steps: int,
        warmup_steps: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.q = QEnsemble(observation_size, num_actions, config.network, config.num_critics)
        self.q = self.q.to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=config.learning_rate, fused=True)
        self.scheduler = warmup_schedule(self.optimizer, warmup_steps=warmup_steps)
        initial = math.log(max(config.alpha, 1e-6))
        self.log_alpha = torch.tensor(initial, device=device, requires_grad=config.lagrange)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)

    def _td_targets(self, batch: Batch) -> torch.Tensor:
        """The Double DQN targets r + gamma * (1 - terminal) * Q_target(s', a*)."""
        with torch.no_grad():
            next_q_online = self.q(batch.next_observations).mean(dim=0)
            next_q_target = self.q_target(batch.next_observations).amin(dim=0)
            return double_dqn_targets(
                next_q_online,
                next_q_target,
                batch.next_masks,
                batch.rewards,
                bootstrap_weights(batch, self.config.gamma),
            )

    def _alpha(self) -> torch.Tensor:
        if self.config.lagrange:
            return self.log_alpha.detach().exp()
        return torch.tensor(self.config.alpha)

    def _update_q(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One step of TD + alpha * conservative gap; also returns the gap."""
        targets = self._td_targets(batch)
        q_all = self.q(batch.observations)
        q_data = q_of_actions(q_all, batch.actions)
        td = td_loss(q_data, targets)
        gap = conservative_penalty(q_all, batch.masks, batch.actions)
        # Subtracting target_gap changes no gradient of Q; it makes the loss the Lagrangian.
        conservative = self._alpha() * (
            gap - self.config.target_gap if self.config.lagrange else gap
        )
        loss = td + conservative
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        metrics = {
            "train/td_loss": td.detach(),
            "train/conservative_loss": conservative.detach(),
            "train/conservative_gap": gap.detach(),
            "train/q_loss": loss.detach(),
            "train/q_mean": q_data.detach().mean(),
        }
        return metrics, gap.detach()

    def _update_alpha(self, gap: torch.Tensor) -> None:
        """Dual ascent: alpha grows while the gap exceeds its target, shrinks otherwise."""
        alpha_loss = -self.log_alpha.exp() * (gap - self.config.target_gap)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        metrics, gap = self._update_q(batch)
        if self.config.lagrange:
            self._update_alpha(gap)
        soft_update(self.q_target, self.q, self.config.tau)
        return metrics | {"train/alpha": self._alpha()}

    def action_scores(self, observations: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.q(observations).mean(dim=0)
        return scores

    @torch.no_grad()
    def td_error(self, batch: Batch) -> torch.Tensor:
        q_data = q_of_actions(self.q(batch.observations), batch.actions)
        return td_loss(q_data, self._td_targets(batch))

    def train(self, mode: bool = True) -> CQL:
        self.q.train(mode)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
