"""The vectorized Q ensemble is exactly a set of independent MLPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poke_tune.algos.networks import NetworkConfig, QEnsemble, VectorizedLinear, mlp


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
