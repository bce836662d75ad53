"""The confirmation stage on real battles: fresh battles shared by every contender, the
champion chosen there (not by the selection score), racing, and the winner's curse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poke_tune.eval.winrate import evaluate
from poke_tune.sim.battle_records import battle_seeds
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.tuning.confirm.confirm import Confirmation, confirm
from poke_tune.tuning.confirm.contenders import Contender
from poke_tune.tuning.confirm.report import confirmation_rows, verdict
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).parents[1] / "tiny.yaml"
pytestmark = pytest.mark.slow


def _spec(**confirm: Any) -> SearchSpec:
    return load_spec(TINY, {"confirm": {"battles": 40, "rounds": 2, **confirm}})


def _candidate(name: str, policy: Policy, trial_id: str, score: float) -> Contender:
    return Contender(
        name=name, policy=policy, role="candidate", trial_id=trial_id, selection_score=score
    )


class Reseeded:
    """A copy of a stochastic policy with its own random stream: K copies are K equally
    good policies whose battle outcomes differ (a sweep of equally good trials)."""

    def __init__(self, policy: Policy, salt: int) -> None:
        self.policy, self.salt, self.name = policy, salt, f"{policy.name}#{salt}"

    def act(self, view: Any, rng: np.random.Generator) -> int:
        own = np.random.default_rng([self.salt, int(rng.integers(2**31))])
        return self.policy.act(view, own)


def test_confirmation_battles_are_fresh_and_the_same_for_every_contender() -> None:
    spec = _spec(race=False)
    selection = {str(battle_seeds(spec.objective.seed, i)) for i in range(2000)}
    confirmation = {str(battle_seeds(spec.confirm.seed, i)) for i in range(2000)}
    assert not selection & confirmation
    # Two copies of one deterministic policy meet the same battles: identical outcomes.
    contenders = [
        _candidate("max-damage A", make_policy("max-damage"), "a", 0.9),
        _candidate("max-damage B", make_policy("max-damage"), "b", 0.8),
        Contender(name="random", policy=make_policy("random"), role="baseline"),
    ]
    result = confirm(spec.confirm, spec.objective, contenders)
    a, b, baseline = (s.result for s in result.standings)
    assert a.won == b.won and len(a.won) == 40
    assert {r.seed for r in (a, b, baseline)} == {spec.confirm.seed}
    assert a.won != baseline.won  # a different policy: the battles tell them apart


def test_champion_is_chosen_on_confirmation_and_racing_stops_the_clearly_worse() -> None:
    spec = _spec(battles=60, rounds=3)
    contenders = [
        # The selection scores say random is best: confirmation must overrule them.
        _candidate("lucky random", make_policy("random"), "t1", 0.95),
        _candidate("max-damage", make_policy("max-damage"), "t2", 0.60),
        Contender(name="random", policy=make_policy("random"), role="baseline"),
    ]
    result = confirm(spec.confirm, spec.objective, contenders)
    assert result.champion == "max-damage"
    lucky = result.standing("lucky random")
    assert lucky is not None and lucky.stopped_early and lucky.result.battles < 60
    assert lucky.optimism is not None and lucky.optimism > 0.3
    assert result.battles_played < result.battles_fixed == 120
    winner = result.winner
    assert winner is not None and winner.result.battles == 60
    assert result.beats_baselines and "BEATS the best baseline random" in verdict(result)
    assert Confirmation.from_json(result.to_json()) == result
    assert [row.name for row in confirmation_rows(result)] == [
        "lucky random",
        "max-damage",
        "random",
    ]


def test_selection_optimism_is_positive_and_confirmation_spread_is_noise() -> None:
    # Six equally good policies (copies of random against random: 0.5 on any battle
    # set): selection on 24 battles picks the luckiest; on fresh battles the shortlist
    # falls back, and their win rates agree within the intervals.
    spec = _spec(battles=48, race=False, top_k=3)
    copies = [Reseeded(make_policy("random"), salt) for salt in range(6)]
    scores = [
        evaluate(c, make_policy("random"), battles=24, seed=spec.objective.seed).win_rate
        for c in copies
    ]
    order = np.argsort(scores)[::-1][:3]
    contenders = [_candidate(copies[i].name, copies[i], str(i), scores[i]) for i in order]
    contenders.append(Contender(name="random", policy=make_policy("random"), role="baseline"))
    result = confirm(spec.confirm, spec.objective, contenders)
    optimism = [s.optimism for s in result.standings if s.optimism is not None]
    assert np.mean(optimism) > 0
    rates = [s.result for s in result.standings if s.role == "candidate"]
    for one in rates:
        for other in rates:
            assert one.ci_low <= other.win_rate <= one.ci_high


def test_baselines_are_the_data_behaviour_and_bc_on_the_same_budget() -> None:
    from poke_tune.tuning.confirm.contenders import bc_baseline, behaviour_policies
    from poke_tune.tuning.datasets import prepare_dataset

    spec = load_spec(TINY)
    assert behaviour_policies(spec, None) == ["random"]  # tiny.yaml names its baselines
    recipe = load_spec(TINY, {"confirm": {"baselines": None}})
    dataset = prepare_dataset(recipe.dataset)
    assert behaviour_policies(recipe, dataset) == ["random", "max-damage"]
    bc = bc_baseline(recipe, dataset)
    result = evaluate(bc, make_policy("random"), battles=4, seed=recipe.confirm.seed)
    assert result.battles == 4 and result.invalid_choices == 0
