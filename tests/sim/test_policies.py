"""The scored policies' softmax variants on real battles: legal, the base policy's choice
when cold, and exploring switches and terastallization when warm."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from poke_tune.sim.actions import action_parts
from poke_tune.sim.battle_records import BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import (
    Exploration,
    PlayerView,
    Policy,
    make_policy,
    split_policy_name,
)


@dataclass
class _Compare:
    """Plays `base`; records what `other` would have chosen in the same state."""

    base: Policy
    other: Policy
    name: str = "compare"
    pairs: list[tuple[int, int]] = field(default_factory=list)

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        chosen = self.base.act(view, rng)
        self.pairs.append((chosen, self.other.act(view, rng)))
        return chosen


def _play(pool: SimulatorPool, policy: Policy, battles: int = 12) -> list[int]:
    specs = [
        BattleSpec(index=i, p1=policy, p2=make_policy("max-damage"), seed=5, record=(True, False))
        for i in range(battles)
    ]
    results = list(pool.play(specs))
    assert sum(r.invalid_choices for r in results) == 0
    return [a for r in results for a in r.trajectories["p1"].actions]


def test_a_cold_softmax_chooses_what_its_base_policy_does(pool: SimulatorPool) -> None:
    compare = _Compare(make_policy("heuristic"), make_policy("heuristic:softmax=0.001"))
    _play(pool, compare)
    # The heuristic's move choice is its scores' argmax; its random fallbacks are not.
    moves = [(a, b) for a, b in compare.pairs if action_parts(a)[0] != 1]
    assert len(moves) > 50
    assert np.mean([a == b for a, b in moves]) > 0.9


def test_a_warm_heuristic_softmax_switches_and_terastallizes(pool: SimulatorPool) -> None:
    kinds = [action_parts(a)[0] for a in _play(pool, make_policy("heuristic:softmax=0.3"))]
    assert kinds.count(1) > 0 and kinds.count(2) > 0  # switches and tera moves both occur
    assert kinds.count(0) > len(kinds) / 2  # still mostly plain moves


def test_softmax_needs_a_scored_policy_and_a_positive_temperature() -> None:
    with pytest.raises(ValueError, match="softmax"):
        make_policy("random:softmax=0.3")
    with pytest.raises(ValueError, match="softmax"):
        make_policy("heuristic:softmax=0")
    assert make_policy("heuristic:softmax=0.3").name == "heuristic:softmax=0.3"


@pytest.mark.parametrize(
    ("name", "base", "suffix"),
    [
        ("heuristic", "heuristic", None),
        ("max-damage:eps=0.3", "max-damage", Exploration("eps", 0.3)),
        ("models:/x/3", "models:/x/3", None),
        ("models:/x@champion", "models:/x@champion", None),
        ("models:/x/3:softmax=0.05", "models:/x/3", Exploration("softmax", 0.05)),
        ("models:/x@champion:eps=1", "models:/x@champion", Exploration("eps", 1.0)),
        ("/runs/a:b/best.pt:softmax=2", "/runs/a:b/best.pt", Exploration("softmax", 2.0)),
        (r"C:\runs\best.pt", r"C:\runs\best.pt", None),
        (r"C:\runs\best.pt:eps=0.1", r"C:\runs\best.pt", Exploration("eps", 0.1)),
    ],
)
def test_a_suffix_is_split_off_at_the_last_colon(
    name: str, base: str, suffix: Exploration | None
) -> None:
    assert split_policy_name(name) == (base, suffix)


@pytest.mark.parametrize(
    "name",
    ["heuristic:eps=2", "heuristic:eps", "models:/x/3:softmax=0", "x.pt:temp=1", "a:softmax=inf"],
)
def test_a_bad_suffix_names_the_policy(name: str) -> None:
    with pytest.raises(ValueError, match="bad policy suffix"):
        split_policy_name(name)
