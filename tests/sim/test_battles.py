"""Real battles on the real simulator: determinism, legality, truncation, crash recovery."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from poke_tune.sim.battle_records import BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import make_policy

RANDOM, MAX_DAMAGE, HEURISTIC = (make_policy(n) for n in ("random", "max-damage", "heuristic"))


def _specs(n: int, seed: int = 0, **kwargs: object) -> list[BattleSpec]:
    return [BattleSpec(index=i, p1=RANDOM, p2=MAX_DAMAGE, seed=seed, **kwargs) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.slow
def test_same_seeds_give_identical_battles(pool: SimulatorPool) -> None:
    specs = _specs(6, seed=7, record=(True, True))
    first = {r.spec.index: r for r in pool.play(specs, keep_logs=True)}
    second = {r.spec.index: r for r in pool.play(specs, keep_logs=True)}
    other = {r.spec.index: r for r in pool.play(_specs(6, seed=8), keep_logs=True)}
    for i in range(6):
        assert first[i].log == second[i].log  # timestamps (|t:|) are stripped
        assert first[i].winner == second[i].winner
        a, b = first[i].trajectories["p1"], second[i].trajectories["p1"]
        assert a.actions == b.actions
        assert all(
            np.array_equal(x, y) for x, y in zip(a.observations, b.observations, strict=True)
        )
    assert any(first[i].log != other[i].log for i in range(6))


@pytest.mark.slow
def test_no_invalid_choice_for_any_builtin_policy(pool: SimulatorPool) -> None:
    policies = [RANDOM, MAX_DAMAGE, HEURISTIC, make_policy("heuristic:eps=0.3")]
    specs = [
        BattleSpec(
            index=i, p1=policies[i % 4], p2=policies[(i // 4) % 4], seed=11, record=(True, True)
        )
        for i in range(240)
    ]
    results = list(pool.play(specs))
    assert len(results) == 240
    assert sum(r.invalid_choices for r in results) == 0
    assert all(r.error is None and r.winner in ("p1", "p2", None) for r in results)
    for result in results:
        for trajectory in result.trajectories.values():
            for mask, action in zip(trajectory.masks, trajectory.actions, strict=True):
                assert mask[action]


def test_turn_limit_cuts_off_with_a_final_observation(pool: SimulatorPool) -> None:
    results = list(pool.play(_specs(4, max_turns=3, record=(True, True))))
    for result in results:
        assert result.truncated and result.winner is None
        for trajectory in result.trajectories.values():
            assert trajectory.final_observation is not None and trajectory.final_mask is not None
            assert trajectory.final_mask.any()
            assert trajectory.outcome == 0.0


@pytest.mark.slow
def test_killed_worker_mid_battle_still_completes_every_battle() -> None:
    with SimulatorPool(num_workers=2, timeout_s=30) as pool:
        results = []
        killed = False
        for result in pool.play(_specs(40, seed=3)):
            results.append(result)
            if len(results) == 5 and not killed:
                os.kill(pool.worker_pids()[0], signal.SIGKILL)
                killed = True
        assert pool.restarts >= 1
    assert sorted(r.spec.index for r in results) == list(range(40))
    assert all(r.error is None for r in results)
    assert any(r.attempts > 1 for r in results)


@pytest.mark.slow
def test_hung_worker_is_restarted_after_the_timeout() -> None:
    with SimulatorPool(num_workers=1, timeout_s=2) as pool:
        os.kill(pool.worker_pids()[0], signal.SIGSTOP)  # frozen: alive but silent
        start = time.monotonic()
        results = list(pool.play(_specs(3, seed=5)))
        assert pool.restarts >= 1
        assert time.monotonic() - start < 60
    assert sorted(r.spec.index for r in results) == [0, 1, 2]
    assert all(r.error is None for r in results)


@pytest.mark.slow
def test_reference_win_rates(pool: SimulatorPool) -> None:
    from poke_tune.eval.winrate import evaluate

    strong = evaluate(MAX_DAMAGE, RANDOM, battles=200, pool=pool)
    assert strong.win_rate > 0.8, strong
    heuristic = evaluate(HEURISTIC, MAX_DAMAGE, battles=300, pool=pool)
    assert heuristic.ci_low > 0.5, heuristic


@pytest.mark.slow
def test_a_play_abandoned_part_way_does_not_disturb_the_next(pool: SimulatorPool) -> None:
    specs = _specs(4, seed=13)
    reference = {r.spec.index: r.log for r in pool.play(specs, keep_logs=True)}
    abandoned = pool.play(_specs(8, seed=14))
    next(abandoned)
    abandoned.close()  # battles still running on the workers
    again = {r.spec.index: r.log for r in pool.play(specs, keep_logs=True)}
    assert again == reference
