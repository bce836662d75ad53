"""End to end: IQL and CQL trained on a real battle dataset beat the random policy in
real battles."""

from __future__ import annotations

from pathlib import Path

import pytest

from poke_tune.algos import CQLConfig, IQLConfig, TrainConfig, Trainer, load_policy, run_training
from poke_tune.data.compiled import OfflineDataset
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import make_policy


@pytest.mark.slow
@pytest.mark.parametrize("config", [IQLConfig(), CQLConfig()], ids=["iql", "cql"])
def test_trained_policy_beats_random(
    config: IQLConfig | CQLConfig,
    battle_dataset: OfflineDataset,
    pool: SimulatorPool,
    tmp_path: Path,
) -> None:
    trainer = Trainer(
        config, TrainConfig(steps=1200, eval_interval=600, fqe_steps=50), battle_dataset
    )
    history = list(run_training(trainer))  # raises DivergedError on NaN / explosion
    assert len(history) == 2
    trainer.save(tmp_path / "policy.pt")
    result = evaluate(
        load_policy(tmp_path / "policy.pt"), make_policy("random"), battles=80, seed=123, pool=pool
    )
    assert result.invalid_choices == 0
    assert result.ci_low > 0.5, result
