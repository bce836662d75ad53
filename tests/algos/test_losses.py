"""Loss functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from poke_tune.algos.bc import bc_loss
from poke_tune.algos.common import soft_update
from poke_tune.algos.cql import conservative_penalty, double_dqn_targets
from poke_tune.algos.iql import awr_policy_loss, awr_weights, expectile_loss, normalized_advantage
from poke_tune.algos.networks import NetworkConfig, QEnsemble, masked_argmax, masked_logits


def _expectile(samples: np.ndarray, tau: float) -> float:
    """Reference tau-expectile by bisection on its first-order condition."""
    low, high = float(samples.min()), float(samples.max())
    for _ in range(200):
        v = (low + high) / 2
        above = tau * np.clip(samples - v, 0, None).sum()
        below = (1 - tau) * np.clip(v - samples, 0, None).sum()
        low, high = (v, high) if above > below else (low, v)
    return (low + high) / 2


def _fit_expectile(samples: torch.Tensor, tau: float) -> float:
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([v], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = expectile_loss(samples - v, tau)
        loss.backward()
        return loss

    optimizer.step(closure)
    return v.item()


def test_expectile_loss_recovers_the_expectile() -> None:
    samples = torch.tensor(np.random.default_rng(0).exponential(size=2000), dtype=torch.float64)
    for tau in (0.5, 0.7, 0.9):
        assert abs(_fit_expectile(samples, tau) - _expectile(samples.numpy(), tau)) < 1e-4
    assert abs(_expectile(samples.numpy(), 0.5) - float(samples.mean())) < 1e-6


def test_expectile_loss_by_hand() -> None:
    diff = torch.tensor([2.0, -1.0])
    assert math.isclose(float(expectile_loss(diff, 0.7)), (0.7 * 4 + 0.3 * 1) / 2, rel_tol=1e-6)


def test_awr_weights_multiply_the_inverse_temperature_and_clip() -> None:
    advantage = torch.tensor([-1.0, 0.0, 0.5, 10.0], requires_grad=True)
    weights = awr_weights(advantage, temperature=3.0, max_weight=100.0)
    expected = [math.exp(-3.0), 1.0, math.exp(1.5), 100.0]
    assert torch.allclose(weights, torch.tensor(expected))
    assert not weights.requires_grad


def test_masked_actions_get_no_probability_and_never_the_argmax() -> None:
    logits = torch.tensor([[5.0, 1.0, 9.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    probs = torch.softmax(masked_logits(logits, mask), dim=-1)
    assert probs[0, 2] == 0 and probs[1, 0] == 0
    assert masked_argmax(logits, mask).tolist() == [0, 1]
    # The AWR and BC losses only normalise over legal actions.
    actions = torch.tensor([1, 2])
    expected = -torch.log_softmax(torch.tensor([5.0, 1.0]), 0)[1] - math.log(0.5)
    assert torch.isclose(bc_loss(logits, mask, actions), expected / 2)
    ones = torch.ones(2)
    assert torch.isclose(awr_policy_loss(logits, mask, actions, ones), expected / 2)


def test_conservative_penalty_by_hand() -> None:
    q_all = torch.tensor([[[1.0, 2.0, 30.0], [0.0, 0.0, 0.0]]])  # 1 critic, 2 states
    mask = torch.tensor([[True, True, False], [True, True, True]])
    actions = torch.tensor([0, 2])
    first = math.log(math.exp(1.0) + math.exp(2.0)) - 1.0  # the illegal 30 is excluded
    second = math.log(3.0) - 0.0
    assert math.isclose(
        float(conservative_penalty(q_all, mask, actions)), (first + second) / 2, rel_tol=1e-6
    )


def test_double_dqn_target_uses_legal_online_argmax_and_target_values() -> None:
    online = torch.tensor([[1.0, 5.0, 9.0], [3.0, 0.0, 0.0]])
    target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    next_masks = torch.tensor([[True, True, False], [False, False, False]])
    rewards, terminals = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])
    bootstrap = 0.5 * (1.0 - terminals)
    targets = double_dqn_targets(online, target, next_masks, rewards, bootstrap)
    assert targets.tolist() == [1.0 + 0.5 * 20.0, -1.0]


def test_soft_update_moves_targets_by_exactly_tau() -> None:
    torch.manual_seed(0)
    source, target = (QEnsemble(4, 3, NetworkConfig(hidden_sizes=(8,)), 2) for _ in range(2))
    before = [p.clone() for p in target.parameters()]
    soft_update(target, source, tau=0.25)
    for old, new, src in zip(before, target.parameters(), source.parameters(), strict=True):
        assert torch.allclose(new, old + 0.25 * (src - old), atol=1e-7)


def test_bc_loss_is_cross_entropy_when_all_actions_are_legal() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    actions = torch.tensor([0, 1, 2, 3, 0])
    mask = torch.ones(5, 4, dtype=torch.bool)
    assert torch.isclose(bc_loss(logits, mask, actions), F.cross_entropy(logits, actions))


def test_normalized_advantage_divides_by_the_batch_standard_deviation() -> None:
    advantage = torch.tensor([0.1, -0.1, 0.3, -0.3])
    # Sample standard deviation (n - 1): sqrt((0.01 + 0.01 + 0.09 + 0.09) / 3) = sqrt(0.2 / 3).
    expected = advantage / math.sqrt(0.2 / 3)
    torch.testing.assert_close(normalized_advantage(advantage), expected)
    # Not centred: the sign of every advantage is kept, so is the ranking.
    shifted = normalized_advantage(advantage + 1.0)
    assert (shifted > 0).all()
    torch.testing.assert_close(shifted.std(), torch.tensor(1.0))
    # A constant batch (no spread) does not blow up.
    assert torch.isfinite(normalized_advantage(torch.zeros(4))).all()
