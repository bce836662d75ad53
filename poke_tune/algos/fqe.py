"""Fitted Q Evaluation (Le, Voloshin & Yue, ICML 2019) of a greedy masked policy.

Fits Q^pi by TD on the dataset, with the next action chosen by the evaluated policy:
    Q(s, a) <- r + gamma * (1 - terminal) * Q_target(s', pi(s'))
and reports the estimated value of the policy at the dataset's initial states,
E_{s0}[Q(s0, pi(s0))]. Used for offline policy selection; warm-started between
evaluations so each call only adds `steps` updates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from poke_tune.algos.common import Batch, bootstrap_weights, soft_update, td_loss
from poke_tune.algos.networks import NetworkConfig, QEnsemble, masked_argmax, q_of_actions

__all__ = ["FQE"]


class FQE:
    """An off-policy value estimator for one (changing) policy."""

    def __init__(
        self,
        *,
        observation_size: int,
        num_actions: int,
        gamma: float,
        device: torch.device | str = "cpu",
        learning_rate: float = 3e-4,
        tau: float = 0.01,
        network: NetworkConfig | None = None,
    ) -> None:
        self.gamma = gamma
        self.tau = tau
        self.q = QEnsemble(observation_size, num_actions, network or NetworkConfig(), 1)
        self.q = self.q.to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=learning_rate, fused=True)

    def update(self, batch: Batch, policy: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """One TD step towards Q^pi; `policy` maps observations to action scores."""
        with torch.no_grad():
            next_actions = masked_argmax(policy(batch.next_observations), batch.next_masks)
            next_q = q_of_actions(self.q_target(batch.next_observations), next_actions)[0]
            targets = batch.rewards + bootstrap_weights(batch, self.gamma) * next_q
        loss = td_loss(q_of_actions(self.q(batch.observations), batch.actions), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        soft_update(self.q_target, self.q, self.tau)
        return loss.item()

    @torch.no_grad()
    def value(
        self,
        observations: torch.Tensor,
        masks: torch.Tensor,
        policy: Callable[[torch.Tensor], torch.Tensor],
    ) -> float:
        """E[Q(s, pi(s))] over the given (initial) states."""
        actions = masked_argmax(policy(observations), masks)
        return float(q_of_actions(self.q(observations), actions).mean())

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
