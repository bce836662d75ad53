"""Algorithms on small hand-built problems whose answer is known (slow: each learns to
convergence; the fast contract over algorithms is test_trainer.py)."""

from __future__ import annotations

import pytest
import torch

from poke_tune.algos import BC, CQL, IQL, Batch, BCConfig, CQLConfig, IQLConfig, NetworkConfig
from poke_tune.algos.common import set_seed
from poke_tune.algos.networks import masked_argmax, q_of_actions

CONTEXTS, ACTIONS = 4, 4
SMALL = NetworkConfig(hidden_sizes=(64, 64))
pytestmark = pytest.mark.slow


def _bandit(n: int, behaviour: list[float], rewards: list[float], seed: int = 0) -> Batch:
    """A one-step contextual bandit: one-hot contexts; the last action is always illegal."""
    generator = torch.Generator().manual_seed(seed)
    contexts = torch.randint(CONTEXTS, (n,), generator=generator)
    actions = torch.multinomial(torch.tensor(behaviour), n, replacement=True, generator=generator)
    observations = torch.nn.functional.one_hot(contexts, CONTEXTS).float()
    masks = torch.ones(n, ACTIONS, dtype=torch.bool)
    masks[:, -1] = False
    return Batch(
        observations=observations,
        actions=actions,
        rewards=torch.tensor(rewards)[actions],
        next_observations=torch.zeros_like(observations),
        terminals=torch.ones(n),
        masks=masks,
        next_masks=torch.zeros_like(masks),
    )


def _fit(algorithm: BC | IQL | CQL, data: Batch, steps: int) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        index = torch.randint(len(data.actions), (128,), generator=generator)
        algorithm.update(Batch(**{k: v[index] for k, v in vars(data).items() if v is not None}))


def _greedy(algorithm: BC | IQL | CQL) -> list[int]:
    observations = torch.eye(CONTEXTS)
    masks = torch.ones(CONTEXTS, ACTIONS, dtype=torch.bool)
    masks[:, -1] = False
    with torch.no_grad():
        return masked_argmax(algorithm.action_scores(observations), masks).tolist()


def test_iql_finds_the_rare_best_action_that_bc_ignores() -> None:
    # 90% of the data is action 0 (reward 0), 10% action 1 (reward 1); action 2 never taken.
    data = _bandit(4000, behaviour=[0.9, 0.1, 0.0, 0.0], rewards=[0.0, 1.0, 0.5, 0.0])
    kwargs = {"observation_size": CONTEXTS, "num_actions": ACTIONS, "total_steps": 1500}
    set_seed(0)
    iql = IQL(IQLConfig(expectile=0.9, temperature=10.0, network=SMALL), **kwargs)
    set_seed(0)
    bc = BC(BCConfig(network=SMALL), **kwargs)
    _fit(iql, data, 1500)
    _fit(bc, data, 1500)
    assert _greedy(iql) == [1] * CONTEXTS
    assert _greedy(bc) == [0] * CONTEXTS


def test_cql_penalty_pushes_unseen_actions_below_data_actions() -> None:
    # Only action 0 is in the data: without the penalty, Q of actions 1-2 is whatever the
    # initialisation and generalisation make it; with it, they fall below Q(s, 0).
    data = _bandit(2000, behaviour=[1.0, 0.0, 0.0, 0.0], rewards=[0.5, 0.0, 0.0, 0.0])
    gaps = {}
    for alpha in (0.0, 1.0):
        set_seed(0)
        cql = CQL(
            CQLConfig(alpha=alpha, network=SMALL),
            observation_size=CONTEXTS,
            num_actions=ACTIONS,
            total_steps=800,
        )
        _fit(cql, data, 800)
        with torch.no_grad():
            q = cql.q(torch.eye(CONTEXTS)).mean(dim=0)
        gaps[alpha] = float((q[:, 1:3] - q[:, :1]).mean())
        assert abs(float(q[:, 0].mean()) - 0.5) < 0.1  # the data action is fit either way
    assert gaps[1.0] < gaps[0.0] - 0.5
    assert gaps[1.0] < 0


def test_lagrangian_alpha_holds_the_target_gap() -> None:
    data = _bandit(2000, behaviour=[0.7, 0.3, 0.0, 0.0], rewards=[0.0, 1.0, 0.0, 0.0])
    set_seed(0)
    config = CQLConfig(lagrange=True, target_gap=0.5, alpha=1.0, alpha_lr=1e-2, network=SMALL)
    cql = CQL(config, observation_size=CONTEXTS, num_actions=ACTIONS, total_steps=1500)
    _fit(cql, data, 1500)
    metrics = cql.update(data)
    assert abs(float(metrics["train/conservative_gap"]) - 0.5) < 0.15
    assert float(metrics["train/alpha"]) != 1.0


def test_q_of_actions_picks_each_critics_value() -> None:
    q_all = torch.arange(12.0).reshape(2, 2, 3)
    assert q_of_actions(q_all, torch.tensor([2, 0])).tolist() == [[2.0, 3.0], [8.0, 9.0]]
