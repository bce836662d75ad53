"""The algorithm table: each line's name is its config's tag, and what derives from it
(the union, `build_algorithm`, which algorithms learn a TD critic) follows the table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from poke_tune.algos import ALGORITHMS, build_algorithm, parse_algo_config
from poke_tune.algos.common import TDConfig
from poke_tune.algos.networks import PolicyNetwork
from poke_tune.sim.actions import NUM_ACTIONS


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_line_builds_its_algorithm_from_its_config(name: str) -> None:
    entry = ALGORITHMS[name]
    config = parse_algo_config({"algo": name})
    assert type(config) is entry.config and config.algo == name
    algorithm = build_algorithm(config, observation_size=8, num_actions=NUM_ACTIONS, total_steps=1)
    assert isinstance(algorithm, entry.algorithm)  # type: ignore[arg-type]
    assert entry.learns_critic == isinstance(config, TDConfig)
    assert algorithm.policy is None or isinstance(algorithm.policy, PolicyNetwork)


def test_the_critic_learners() -> None:
    assert [name for name, entry in ALGORITHMS.items() if entry.learns_critic] == ["iql", "cql"]


def test_an_unknown_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="'bc', 'iql', 'cql'"):
        parse_algo_config({"algo": "dqn"})
