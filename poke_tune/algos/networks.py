"""Networks shared by the algorithms: MLP trunks, a masked categorical policy, an ensemble
of Q networks that output Q for every action at once, and a state-value network.

The Q ensemble stores its members' weights stacked, [critics, in, out], and runs all of
them with one batched matmul per layer (as CORL's EDAC `VectorizedLinear`): fewer, larger
kernels and fewer parameter tensors for Adam and the Polyak update than a list of MLPs.

Illegal actions are handled by `masked_fill(~mask, -inf)` on logits and Q values, so they
get zero probability, never win an argmax and never enter a logsumexp.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = [
    "NetworkConfig",
    "PolicyNetwork",
    "QEnsemble",
    "ValueNetwork",
    "VectorizedLinear",
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


class VectorizedLinear(nn.Module):
    """`ensemble_size` independent linear layers: [E, B, in] -> [E, B, out] in one baddbmm.

    Each member is initialised like `nn.Linear` (weight and bias ~ U(-1/sqrt(in), 1/sqrt(in))).
    """

    def __init__(self, in_features: int, out_features: int, ensemble_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, inputs, self.weight)


class VectorizedLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a separate affine transform per member."""

    def __init__(self, features: int, ensemble_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, features))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        normalized = F.layer_norm(inputs, inputs.shape[-1:])
        return torch.addcmul(self.bias, normalized, self.weight)


class QEnsemble(nn.Module):
    """`num_critics` independent Q networks run as one; returns Q for all actions, [E, B, A].

    Member i is exactly `mlp(observation_size, num_actions, config)` with the weights
    `layer.weight[i]`; the first layer reads the same observations for every member.
    """

    def __init__(
        self, observation_size: int, num_actions: int, config: NetworkConfig, num_critics: int
    ) -> None:
        super().__init__()
        self.num_critics = num_critics
        layers: list[nn.Module] = []
        width = observation_size
        for hidden in config.hidden_sizes:
            layers.append(VectorizedLinear(width, hidden, num_critics))
            if config.layer_norm:
                layers.append(VectorizedLayerNorm(hidden, num_critics))
            layers.append(nn.ReLU())
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(VectorizedLinear(width, num_actions, num_critics))
        self.net = nn.Sequential(*layers)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # A stride-0 view: the members share the observations without a copy.
        inputs = observations.expand(self.num_critics, *observations.shape)
        q_values: torch.Tensor = self.net(inputs)
        return q_values


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
