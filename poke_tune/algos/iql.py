"""Implicit Q-Learning for discrete, masked actions.

Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022. Per step, in the order of the official code:

1. V:      min_V  E[ L2_tau( min_i Q_target_i(s, a) - V(s) ) ],
           L2_tau(u) = |tau - 1(u < 0)| u^2   (expectile regression, tau = `expectile`)
2. policy: max_pi E[ w * log pi(a | s) ],  w = min(exp(beta * A / sigma), 100),
           A = Q_target(s, a) - V(s)
           (advantage-weighted regression; beta = `temperature`, an INVERSE temperature,
           multiplied as in the official code; log pi over legal actions only; sigma = 1 as
           in the paper, or with `normalize_advantage` the batch's standard deviation of A)
3. Q:      min_Q  E[ (r + gamma * (1 - terminal) * V(s') - Q_i(s, a))^2 ]  for each critic
4. Q_target <- Polyak average of Q with rate `tau`.

V never sees an action outside the data, and the agent acts with the masked policy's
argmax, never with argmax Q (Q is not trained on unseen actions).
Anchors: expectile 0.7 / beta 3.0 (official defaults), 0.9 / 10.0 for sparse, stitching data.

Why the normalisation: beta multiplies an advantage whose scale is the data's. On the
quick-start data A has a standard deviation of about 0.05 (rewards +-1 at the end), so at
beta = 3 every weight is within a few percent of 1 and IQL is plain BC; dividing A by its
batch standard deviation (as PopArt-style value normalisation does) makes beta mean the
same on any data: weights of exp(beta) one standard deviation above V.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from poke_tune.algos.common import (
    Batch,
    TDConfig,
    bootstrap_weights,
    soft_update,
    td_loss,
    warmup_cosine_schedule,
)
from poke_tune.algos.networks import (
    PolicyNetwork,
    QEnsemble,
    ValueNetwork,
    masked_logits,
    q_of_actions,
)

__all__ = [
    "IQL",
    "IQLConfig",
    "awr_policy_loss",
    "awr_weights",
    "expectile_loss",
    "normalized_advantage",
]


class IQLConfig(TDConfig):
    """IQL hyperparameters (paper names); `network` shapes the policy and the critics (V is
    always a flat state network)."""

    algo: Literal["iql"] = "iql"
    expectile: float = Field(default=0.7, gt=0.5, lt=1.0)
    """tau of the expectile regression for V; 0.5 would be the mean (SARSA), ->1 the max."""
    temperature: float = Field(default=3.0, gt=0)
    """Inverse temperature beta of the AWR weights exp(beta * advantage)."""
    max_weight: float = Field(default=100.0, gt=0)
    """Clip of the AWR weights."""
    normalize_advantage: bool = True
    """Divide the advantage by its batch standard deviation before the weights, so
    `temperature` means the same whatever the scale of the returns (measured, quick-start
    data, action-centric networks, 1,000 battles vs max-damage: raw beta 3 is weighted BC,
    normalised beta 3 wins 0.649, raw beta 30 0.633; checkpoints from before it was a
    setting load with it off)."""
    actor_lr: float = Field(default=3e-4, gt=0)
    """Policy learning rate (warm-up, then cosine decay)."""
    critic_lr: float = Field(default=3e-4, gt=0)
    """Q and V learning rate."""


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2: mean of |expectile - 1(diff < 0)| * diff^2, diff = target - prediction."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def normalized_advantage(advantage: torch.Tensor) -> torch.Tensor:
    """The advantage divided by its standard deviation over the batch (not centred, so a
    positive advantage stays one the policy moves towards)."""
    return advantage / advantage.std().clamp(min=1e-6)


def awr_weights(advantage: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """min(exp(temperature * advantage), max_weight), with no gradient."""
    return torch.exp(temperature * advantage.detach()).clamp(max=max_weight)


def awr_policy_loss(
    logits: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """-E[w * log pi(a | s)], log-probabilities over legal actions only."""
    log_probs = F.log_softmax(masked_logits(logits, masks), dim=-1)
    return -(weights * log_probs.gather(1, actions[:, None]).squeeze(1)).mean()


class IQL:
    """Discrete IQL with an ensemble of Q networks, a V network and a masked policy."""

    def __init__(
        self,
        config: IQLConfig,
        *,
        observation_size: int,
        num_actions: int,
        total_steps: int,
        warmup_steps: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        net = config.network
        self.q = QEnsemble(observation_size, num_actions, net, config.num_critics).to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNetwork(observation_size, net.model_copy(update={"kind": "flat"})).to(device)
        self.policy = PolicyNetwork(observation_size, num_actions, net).to(device)
        # fused: one kernel over all of a network's parameters (Adam's per-tensor loop was
        # a quarter of the CPU step).
        self.q_optimizer = torch.optim.Adam(self.q.parameters(), lr=config.critic_lr, fused=True)
        self.v_optimizer = torch.optim.Adam(self.v.parameters(), lr=config.critic_lr, fused=True)
        self.policy_optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=config.actor_lr, fused=True
        )
        self.policy_scheduler = warmup_cosine_schedule(
            self.policy_optimizer, warmup_steps=warmup_steps, total_steps=total_steps
        )

    def _min_target_q(self, batch: Batch) -> torch.Tensor:
        """min_i Q_target_i(s, a_data): what V regresses on and the advantage starts from."""
        with torch.no_grad():
            q_all = self.q_target(batch.observations).amin(dim=0)  # amin: no argmin indices
            min_target_q: torch.Tensor = q_all.gather(1, batch.actions[:, None]).squeeze(1)
            return min_target_q

    def _update_v(self, batch: Batch, min_target_q: torch.Tensor) -> dict[str, torch.Tensor]:
        v = self.v(batch.observations)
        loss = expectile_loss(min_target_q - v, self.config.expectile)
        self.v_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.v_optimizer.step()
        return {"train/v_loss": loss.detach(), "train/v_mean": v.detach().mean()}

    def _update_policy(self, batch: Batch, min_target_q: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            advantage = min_target_q - self.v(batch.observations)  # with the V just updated
            scaled = (
                normalized_advantage(advantage) if self.config.normalize_advantage else advantage
            )
        weights = awr_weights(scaled, self.config.temperature, self.config.max_weight)
        logits = self.policy(batch.observations)
        loss = awr_policy_loss(logits, batch.masks, batch.actions, weights)
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_optimizer.step()
        self.policy_scheduler.step()
        return {
            "train/policy_loss": loss.detach(),
            "train/advantage_mean": advantage.mean(),
            "train/advantage_std": advantage.std(),
            "train/weight_mean": weights.mean(),
            "train/weight_clipped": (weights >= self.config.max_weight).float().mean(),
        }

    def _td_targets(self, batch: Batch) -> torch.Tensor:
        """r + gamma * (1 - terminal) * V(s'): what every Q critic regresses on."""
        with torch.no_grad():
            next_v: torch.Tensor = self.v(batch.next_observations)
            return batch.rewards + bootstrap_weights(batch, self.config.gamma) * next_v

    def _update_q(self, batch: Batch) -> dict[str, torch.Tensor]:
        targets = self._td_targets(batch)
        q_data = q_of_actions(self.q(batch.observations), batch.actions)
        loss = td_loss(q_data, targets)
        self.q_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.q_optimizer.step()
        return {"train/q_loss": loss.detach(), "train/q_mean": q_data.detach().mean()}

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        min_target_q = self._min_target_q(batch)
        metrics = self._update_v(batch, min_target_q)
        metrics |= self._update_policy(batch, min_target_q)
        metrics |= self._update_q(batch)
        soft_update(self.q_target, self.q, self.config.tau)
        return metrics

    def action_scores(self, observations: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = self.policy(observations)
        return scores

    @torch.no_grad()
    def td_error(self, batch: Batch) -> torch.Tensor:
        q_data = q_of_actions(self.q(batch.observations), batch.actions)
        return td_loss(q_data, self._td_targets(batch))

    def train(self, mode: bool = True) -> IQL:
        for module in (self.q, self.v, self.policy):
            module.train(mode)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "v": self.v.state_dict(),
            "policy": self.policy.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "v_optimizer": self.v_optimizer.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "policy_scheduler": self.policy_scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.v.load_state_dict(state["v"])
        self.policy.load_state_dict(state["policy"])
        self.q_optimizer.load_state_dict(state["q_optimizer"])
        self.v_optimizer.load_state_dict(state["v_optimizer"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.policy_scheduler.load_state_dict(state["policy_scheduler"])
