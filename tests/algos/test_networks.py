"""The vectorized Q ensemble is exactly a set of independent MLPs; the action-centric
network is equivariant to the order of move and team slots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from poke_tune.algos.networks import (
    NetworkConfig,
    PolicyNetwork,
    QEnsemble,
    VectorizedLinear,
    masked_logits,
    mlp,
)
from poke_tune.sim.actions import NUM_ACTIONS
from poke_tune.sim.encoding import action_feature_layout, observation_blocks


def _member(ensemble: QEnsemble, index: int, config: NetworkConfig) -> nn.Sequential:
    """`mlp` with the weights of ensemble member `index` (nn.Linear stores [out, in])."""
    first = ensemble.net[0]
    assert isinstance(first, VectorizedLinear)
    net = mlp(first.in_features, ensemble.net[-1].out_features, config)
    with torch.no_grad():
        for theirs, ours in zip(net, ensemble.net, strict=True):
            if isinstance(theirs, nn.Linear):
                theirs.weight.copy_(ours.weight[index].T)
                theirs.bias.copy_(ours.bias[index, 0])
            elif isinstance(theirs, nn.LayerNorm):
                theirs.weight.copy_(ours.weight[index, 0])
                theirs.bias.copy_(ours.bias[index, 0])
    return net


@pytest.mark.parametrize("layer_norm", [False, True])
def test_q_ensemble_members_are_independent_mlps(layer_norm: bool) -> None:
    torch.manual_seed(0)
    config = NetworkConfig(hidden_sizes=(16, 8), layer_norm=layer_norm)
    ensemble = QEnsemble(6, 3, config, num_critics=3)
    with torch.no_grad():  # members differ in every parameter, LayerNorm affine included
        for parameter in ensemble.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    observations = torch.randn(5, 6)
    q_all = ensemble(observations)
    assert q_all.shape == (3, 5, 3)
    for index in range(3):
        expected = _member(ensemble, index, config)(observations)
        torch.testing.assert_close(q_all[index], expected)

    # Gradients stay per member: a loss on member 1 leaves the others untouched.
    q_all[1].sum().backward()
    for parameter in ensemble.parameters():
        assert parameter.grad is not None
        assert not parameter.grad[[0, 2]].any() and parameter.grad[1].any()


def test_vectorized_linear_initialises_like_nn_linear() -> None:
    torch.manual_seed(0)
    layer = VectorizedLinear(400, 50, ensemble_size=4)
    bound = 400**-0.5
    for tensor in (layer.weight, layer.bias):
        assert tensor.abs().max() <= bound
        assert tensor.abs().max() > 0.95 * bound  # uniform over the whole range
    assert not torch.equal(layer.weight[0], layer.weight[1])


FULL_SIZE = sum(size for _, size in observation_blocks(18))
ACTION = NetworkConfig(kind="action", hidden_sizes=(32,), slot_embedding=8, head_sizes=(8, 8))


def _swap(tensor: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """`tensor` with its last-dimension entries at `first` and `second` exchanged."""
    swapped = tensor.clone()
    swapped[..., first], swapped[..., second] = tensor[..., second], tensor[..., first]
    return swapped


@pytest.mark.parametrize("network", ["policy", "q"])
def test_action_network_is_equivariant_to_slot_order(network: str) -> None:
    """Swapping two move slots (or two team slots) in an observation and in its mask swaps
    the actions' scores, and changes nothing else."""
    torch.manual_seed(0)
    layout = action_feature_layout(FULL_SIZE)
    model = (
        PolicyNetwork(FULL_SIZE, NUM_ACTIONS, ACTION)
        if network == "policy"
        else QEnsemble(FULL_SIZE, NUM_ACTIONS, ACTION, num_critics=3)
    )
    observations = torch.randn(5, FULL_SIZE)
    mask = torch.rand(5, NUM_ACTIONS) < 0.6
    scores = masked_logits(model(observations), mask)
    moves = torch.as_tensor(layout.moves)
    switches = torch.as_tensor(layout.switches)
    cases = [  # (observation features, actions) swapped together
        (moves[1], moves[3], torch.tensor([1, 11]), torch.tensor([3, 13])),
        (switches[0], switches[4], torch.tensor([4]), torch.tensor([8])),
    ]
    for features_a, features_b, actions_a, actions_b in cases:
        swapped = model(_swap(observations, features_a, features_b))
        swapped_mask = _swap(mask, actions_a, actions_b)
        expected = _swap(scores, actions_a, actions_b)
        torch.testing.assert_close(masked_logits(swapped, swapped_mask), expected)
        assert not torch.equal(swapped, model(observations))  # the swap did change inputs


def test_action_layout_covers_the_observation_once() -> None:
    layout = action_feature_layout(FULL_SIZE)
    used = np.concatenate([layout.moves.ravel(), layout.switches.ravel(), layout.state])
    assert sorted(used.tolist()) == list(range(FULL_SIZE))
    assert set(layout.tera.tolist()) <= set(layout.state.tolist())
    with pytest.raises(ValueError, match="not an obs-v2 observation"):
        action_feature_layout(FULL_SIZE + 1)
