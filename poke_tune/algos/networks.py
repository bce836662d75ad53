"""Networks shared by the algorithms: MLP trunks, a masked categorical policy, an ensemble
of Q heads that output Q for every action at once, and a state-value network.

Illegal actions are handled by `masked_fill(~mask, -inf)` on logits and Q values, so they
get zero probability, never win an argmax and never enter a logsumexp.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = [
    "NetworkConfig",
    "PolicyNetwork",
    "QEnsemble",
    "ValueNetwork",
    "masked_argmax",
    "masked_logits",
    "mlp",
    "q_of_actions",
]


class NetworkConfig(BaseModel):
    """Shape of every MLP an algorithm builds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden_sizes: tuple[int, ...] = Field(default=(256, 256), min_length=1)
    """Width of each hidden layer."""
    layer_norm: bool = False
    """LayerNorm after each hidden linear layer (stabilises Q learning on small data)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout after each hidden activation."""


def mlp(in_features: int, out_features: int, config: NetworkConfig) -> nn.Sequential:
    """Linear -> [LayerNorm] -> ReLU -> [Dropout] per hidden layer, then a linear head."""
    layers: list[nn.Module] = []
    width = in_features
    for hidden in config.hidden_sizes:
        layers.append(nn.Linear(width, hidden))
        if config.layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(nn.ReLU())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (or Q values) with illegal actions set to -inf."""
    return logits.masked_fill(~mask, float("-inf"))


def masked_argmax(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Index of the best legal action per row (rows without a legal action give 0)."""
    return masked_logits(values, mask).argmax(dim=-1)


class PolicyNetwork(nn.Module):
    """Categorical policy: observation -> one logit per action."""

    def __init__(self, observation_size: int, num_actions: int, config: NetworkConfig) -> None:
        super().__init__()
        self.net = mlp(observation_size, num_actions, config)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(observations)
        return logits


class QEnsemble(nn.Module):
    """`num_critics` independent Q networks; returns Q for all actions, [critics, B, A]."""

    def __init__(
        self, observation_size: int, num_actions: int, config: NetworkConfig, num_critics: int
    ) -> None:
        super().__init__()
        self.critics = nn.ModuleList(
            mlp(observation_size, num_actions, config) for _ in range(num_critics)
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.stack([critic(observations) for critic in self.critics])


class ValueNetwork(nn.Module):
    """State value V(s)."""

    def __init__(self, observation_size: int, config: NetworkConfig) -> None:
        super().__init__()
        self.net = mlp(observation_size, 1, config)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        values: torch.Tensor = self.net(observations).squeeze(-1)
        return values


def q_of_actions(q_all: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Q of the given actions from every critic: [critics, B, A] x [B] -> [critics, B]."""
    index = actions[None, :, None].expand(q_all.shape[0], -1, 1)
    return q_all.gather(2, index).squeeze(2)
