"""Networks shared by the algorithms: MLP trunks, a masked categorical policy, an ensemble
of Q networks that output Q for every action at once, and a state-value network.

Two kinds of action scorer (`NetworkConfig.kind`) serve the policy and the Q networks:
- `flat`: one MLP from the observation to a score per action slot;
- `action` (`ActionScorer`): each action is scored by a head shared across the slots of its
  kind, from a state embedding and that action's own features (move i from its move and
  damage features, switch j from team member j and its matchup features, move i +
  terastallize as move i's score plus a tera head). The state embedding pools the move and
  team slots (mean and max) with the other blocks, so the network is exactly equivariant:
  swapping two move (or team) slots swaps their scores. Anchors: DRRN (He et al. 2016),
  DouZero (Zha et al. 2021), the pointer heads of Pokemon agents (shared/notes/POLICY.md).

The Q ensemble stores its members' weights stacked, [critics, in, out], and runs all of
them with one batched matmul per layer (as CORL's EDAC `VectorizedLinear`): fewer, larger
kernels and fewer parameter tensors for Adam and the Polyak update than a list of MLPs.

Illegal actions are handled by `masked_fill(~mask, -inf)` on logits and Q values, so they
get zero probability, never win an argmax and never enter a logsumexp.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from poke_tune.sim.actions import NUM_ACTIONS
from poke_tune.sim.encoding import action_feature_layout

__all__ = [
    "ActionScorer",
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

    kind: Literal["flat", "action"] = "flat"
    """`flat`: an MLP from the observation to a score per action slot; `action`: a head per
    action kind shared across its slots, on a pooled state embedding (`ActionScorer`)."""
    hidden_sizes: tuple[int, ...] = Field(default=(256, 256), min_length=1)
    """Width of each hidden layer (of the state trunk, for `action`)."""
    layer_norm: bool = False
    """LayerNorm after each hidden linear layer (stabilises Q learning on small data)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout after each hidden activation."""
    slot_embedding: int = Field(default=64, gt=0)
    """`action` only: width of the shared move-slot and team-slot encoders that are pooled
    into the state embedding."""
    head_sizes: tuple[int, ...] = Field(default=(64,), min_length=1)
    """`action` only: hidden widths of the per-action heads."""


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
        self.net: nn.Module = (
            mlp(observation_size, num_actions, config)
            if config.kind == "flat"
            else ActionScorer(observation_size, num_actions, config, ensemble_size=1)
        )
        self.kind = config.kind

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(observations)
        return logits if self.kind == "flat" else logits[0]


class VectorizedLinear(nn.Module):
    """`ensemble_size` independent linear layers: [E, B, in] -> [E, B, out] in one baddbmm.

    Each member is initialised like `nn.Linear` (weight and bias ~ U(-1/sqrt(in), 1/sqrt(in))).
    """

    def __init__(
        self, in_features: int, out_features: int, ensemble_size: int, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features)) if bias else None
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:  # one member (a policy): plain matmuls are faster on CPU
            # squeeze, not [0]: indexing's backward would zero-fill a whole gradient per step.
            outputs = inputs.squeeze(0) @ self.weight.squeeze(0)
            if self.bias is not None:
                outputs = outputs + self.bias.squeeze(0)
            return outputs.unsqueeze(0)
        if self.bias is None:
            return torch.bmm(inputs, self.weight)
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


def _after_linear(width: int, config: NetworkConfig, ensemble_size: int) -> list[nn.Module]:
    """What follows each hidden linear layer of an ensemble: [LayerNorm] -> ReLU -> [Dropout]."""
    layers: list[nn.Module] = []
    if config.layer_norm:
        layers.append(VectorizedLayerNorm(width, ensemble_size))
    layers.append(nn.ReLU())
    if config.dropout > 0:
        layers.append(nn.Dropout(config.dropout))
    return layers


def _vectorized_hidden(
    in_features: int, sizes: tuple[int, ...], config: NetworkConfig, ensemble_size: int
) -> tuple[list[nn.Module], int]:
    """Hidden layers of widths `sizes`, as in `mlp`, for an ensemble, and their output width."""
    layers: list[nn.Module] = []
    width = in_features
    for hidden in sizes:
        layers.append(VectorizedLinear(width, hidden, ensemble_size))
        layers += _after_linear(hidden, config, ensemble_size)
        width = hidden
    return layers, width


class QEnsemble(nn.Module):
    """`num_critics` independent Q networks run as one; returns Q for all actions, [E, B, A].

    Flat: member i is exactly `mlp(observation_size, num_actions, config)` with the weights
    `layer.weight[i]`; the first layer reads the same observations for every member.
    Action: an `ActionScorer` with `num_critics` members.
    """

    def __init__(
        self, observation_size: int, num_actions: int, config: NetworkConfig, num_critics: int
    ) -> None:
        super().__init__()
        self.num_critics = num_critics
        self.kind = config.kind
        if config.kind == "action":
            self.net: nn.Module = ActionScorer(
                observation_size, num_actions, config, ensemble_size=num_critics
            )
            return
        layers, width = _vectorized_hidden(
            observation_size, config.hidden_sizes, config, num_critics
        )
        layers.append(VectorizedLinear(width, num_actions, num_critics))
        self.net = nn.Sequential(*layers)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if self.kind == "action":
            scores: torch.Tensor = self.net(observations)
            return scores
        # A stride-0 view: the members share the observations without a copy.
        inputs = observations.expand(self.num_critics, *observations.shape)
        q_values: torch.Tensor = self.net(inputs)
        return q_values


class _SlotHead(nn.Module):
    """score_i = MLP(context ++ slot_i) for every slot i, with one set of weights.

    The first layer is split into its context and slot parts, so the context's part is
    computed once per state and broadcast over the slots.
    """

    def __init__(
        self, context_features: int, slot_features: int, sizes: tuple[int, ...], members: int
    ) -> None:
        super().__init__()
        self.context_layer = VectorizedLinear(context_features, sizes[0], members)
        self.slot_layer = VectorizedLinear(slot_features, sizes[0], members, bias=False)
        layers: list[nn.Module] = [nn.ReLU()]
        for width, following in itertools.pairwise(sizes):
            layers += [VectorizedLinear(width, following, members), nn.ReLU()]
        layers.append(VectorizedLinear(sizes[-1], 1, members))
        self.rest = nn.Sequential(*layers)

    def forward(self, context: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """context [E, B, C], slots [E, B, n, F] -> scores [E, B, n]."""
        members, batch, count, _ = slots.shape
        slot_part = self.slot_layer(slots.reshape(members, batch * count, -1))
        hidden = self.context_layer(context)[:, :, None] + slot_part.view(
            members, batch, count, -1
        )
        scores: torch.Tensor = self.rest(hidden.view(members, batch * count, -1))
        return scores.view(members, batch, count)


class ActionScorer(nn.Module):
    """Scores every action from a pooled state embedding and the action's own features.

    Returns [members, B, NUM_ACTIONS] in the action layout's order (moves, switches, moves +
    terastallize). Which features belong to which slot comes from the encoder
    (`action_feature_layout`); members are independent networks run as one, as in
    `QEnsemble` (1 member for a policy).
    """

    moves_index: torch.Tensor  # [NUM_MOVES, move features], buffers derived from the layout
    switches_index: torch.Tensor
    tera_index: torch.Tensor
    state_index: torch.Tensor

    def __init__(
        self, observation_size: int, num_actions: int, config: NetworkConfig, ensemble_size: int
    ) -> None:
        super().__init__()
        if num_actions != NUM_ACTIONS:
            raise ValueError(f"action networks score {NUM_ACTIONS} actions, not {num_actions}")
        layout = action_feature_layout(observation_size)
        for name in ("moves", "switches", "tera", "state"):
            index = torch.as_tensor(getattr(layout, name), dtype=torch.long)
            self.register_buffer(f"{name}_index", index, persistent=False)
        self.members = ensemble_size
        move_features, switch_features = layout.moves.shape[1], layout.switches.shape[1]
        embedding = config.slot_embedding
        self.move_encoder = VectorizedLinear(move_features, embedding, ensemble_size)
        self.switch_encoder = VectorizedLinear(switch_features, embedding, ensemble_size)
        # The trunk's first linear layer, split into the part on the state features and the
        # part on the pooled slots: the same function as one layer on their concatenation,
        # but backpropagation computes no gradient for the (constant) state features.
        first, *rest = config.hidden_sizes
        self.state_layer = VectorizedLinear(len(layout.state), first, ensemble_size)
        self.pooled_layer = VectorizedLinear(4 * embedding, first, ensemble_size, bias=False)
        hidden, width = _vectorized_hidden(first, tuple(rest), config, ensemble_size)
        self.trunk = nn.Sequential(*_after_linear(first, config, ensemble_size), *hidden)
        heads = config.head_sizes
        self.move_head = _SlotHead(width, move_features, heads, ensemble_size)
        self.switch_head = _SlotHead(width, switch_features, heads, ensemble_size)
        self.tera_head = _SlotHead(len(layout.tera), move_features, heads, ensemble_size)

    def _pooled(self, encoder: nn.Module, slots: torch.Tensor) -> torch.Tensor:
        """Mean and max over the slots of their shared encoding, [E, B, 2 * embedding]."""
        members, batch, count, _ = slots.shape
        codes = F.relu(encoder(slots.reshape(members, batch * count, -1)))
        codes = codes.view(members, batch, count, -1)
        return torch.cat([codes.mean(dim=2), codes.amax(dim=2)], dim=-1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        members, batch = self.members, observations.shape[0]

        def features(index: torch.Tensor) -> torch.Tensor:
            # A stride-0 view over the members: every member reads the same features.
            picked = observations.index_select(1, index.flatten()).view(batch, *index.shape)
            return picked.expand(members, *picked.shape)

        moves, switches = features(self.moves_index), features(self.switches_index)
        pooled = torch.cat(
            [self._pooled(self.move_encoder, moves), self._pooled(self.switch_encoder, switches)],
            dim=-1,
        )
        first = self.state_layer(features(self.state_index)) + self.pooled_layer(pooled)
        state = self.trunk(first)
        tera_context = features(self.tera_index)
        move_scores = self.move_head(state, moves)
        switch_scores = self.switch_head(state, switches)
        tera_scores = move_scores + self.tera_head(tera_context, moves)
        return torch.cat([move_scores, switch_scores, tera_scores], dim=-1)


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
