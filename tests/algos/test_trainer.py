"""The trainer on a small synthetic dataset (fast): the contract over algorithms (finite
losses, action shapes, checkpoint round trip, same seed -> same losses), exact resume,
divergence, BC initialisation. Real battles: test_battles_e2e.py; the checkpoint format
(safety, old checkpoints): test_checkpoint.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from poke_tune.algos import (
    Batch,
    BCConfig,
    CQLConfig,
    DivergedError,
    IQLConfig,
    NetworkConfig,
    TrainConfig,
    Trainer,
    run_training,
)
from poke_tune.data.compiled import OfflineDataset
from poke_tune.sim.actions import NUM_ACTIONS

SMALL = NetworkConfig(hidden_sizes=(64, 64), dropout=0.1)
SMALL_ACTION = NetworkConfig(
    kind="action", hidden_sizes=(64,), slot_embedding=16, head_sizes=(16, 8), layer_norm=True
)
CONFIGS = [
    BCConfig(network=SMALL),
    IQLConfig(network=SMALL),
    IQLConfig(network=SMALL, normalize_advantage=False),
    CQLConfig(network=SMALL),
    CQLConfig(network=SMALL, lagrange=True, target_gap=0.5),
    BCConfig(network=SMALL_ACTION),
    IQLConfig(network=SMALL_ACTION),
    CQLConfig(network=SMALL_ACTION),
]


def _config_id(config: BCConfig | IQLConfig | CQLConfig) -> str:
    parts = [config.algo, config.network.kind]
    if getattr(config, "lagrange", False):
        parts.append("lagrange")
    if getattr(config, "normalize_advantage", True) is False:
        parts.append("raw-advantage")
    return "-".join(parts)


def _trainer(config: BCConfig | IQLConfig | CQLConfig, dataset: OfflineDataset) -> Trainer:
    return Trainer(config, TrainConfig(steps=40, eval_interval=20, fqe_steps=10), dataset)


def _states_equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_states_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_contract(
    config: BCConfig | IQLConfig | CQLConfig,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    # Action-centric networks read the encoder's blocks: observations of its real size.
    fixture = (
        "synthetic_full_size_dataset" if config.network.kind == "action" else "synthetic_dataset"
    )
    synthetic_dataset: OfflineDataset = request.getfixturevalue(fixture)
    trainer = _trainer(config, synthetic_dataset)
    history = list(run_training(trainer))
    assert [m["step"] for m in history] == [20.0, 40.0]
    for metrics in history:
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
        assert 0.0 <= metrics["offline/action_match"] <= 1.0
    observations = torch.zeros(3, synthetic_dataset.observation_size)
    assert trainer.algorithm.action_scores(observations).shape == (3, NUM_ACTIONS)

    # Same seed, same numbers.
    again = list(run_training(_trainer(config, synthetic_dataset)))
    assert again == history

    # Checkpoint round trip through a weights_only load.
    path = tmp_path / "checkpoint.pt"
    trainer.save(path)
    restored = Trainer.resume(path, synthetic_dataset)
    assert restored.step == 40
    assert _states_equal(restored.algorithm.state_dict(), trainer.algorithm.state_dict())


def test_resume_continues_bit_for_bit(synthetic_dataset: OfflineDataset, tmp_path: Path) -> None:
    config = IQLConfig(network=SMALL)
    straight = Trainer(config, TrainConfig(steps=60, fqe_steps=5), synthetic_dataset)
    straight.train(30)
    straight.save(tmp_path / "at30.pt")
    straight_metrics = straight.train(60)

    resumed = Trainer.resume(tmp_path / "at30.pt", synthetic_dataset)
    assert resumed.step == 30
    assert resumed.train(60) == straight_metrics
    assert _states_equal(resumed.state_dict(), straight.state_dict())


def poison_rewards(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every training batch's rewards become NaN from now on."""
    sample = trainer.train_data.sample

    def nan_rewards(*args: Any, **kwargs: Any) -> Batch:
        batch = sample(*args, **kwargs)
        return dataclasses.replace(batch, rewards=torch.full_like(batch.rewards, float("nan")))

    monkeypatch.setattr(trainer.train_data, "sample", nan_rewards)


def test_nan_stops_the_run_as_diverged(
    synthetic_dataset: OfflineDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(CQLConfig(network=SMALL), synthetic_dataset)
    poison_rewards(trainer, monkeypatch)
    with pytest.raises(DivergedError, match="nan"):
        trainer.train(10)


def test_bc_initialisation_copies_the_policy(
    synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    bc = _trainer(BCConfig(network=SMALL), synthetic_dataset)
    bc.train(20)
    bc.save(tmp_path / "bc.pt")
    iql = _trainer(IQLConfig(network=SMALL), synthetic_dataset)
    iql.init_policy_from(tmp_path / "bc.pt")
    assert _states_equal(iql.algorithm.policy.state_dict(), bc.algorithm.policy.state_dict())  # type: ignore[attr-defined]
    cql = _trainer(CQLConfig(network=SMALL), synthetic_dataset)
    with pytest.raises(ValueError, match="no policy network"):
        cql.init_policy_from(tmp_path / "bc.pt")


@pytest.mark.parametrize("config", [CQLConfig(network=SMALL), IQLConfig(network=SMALL)])
def test_fine_tune_takes_the_networks_and_keeps_fresh_optimisers(
    config: Any, synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    earlier = _trainer(config, synthetic_dataset)
    earlier.train(30)
    earlier.save(tmp_path / "earlier.pt")
    tuned = _trainer(config, synthetic_dataset)
    fresh = tuned.algorithm.state_dict()
    tuned.fine_tune_from(tmp_path / "earlier.pt")
    now, trained = tuned.algorithm.state_dict(), earlier.algorithm.state_dict()
    networks = [key for key in now if not key.endswith(("optimizer", "scheduler"))]
    assert networks and all(_states_equal(now[k], trained[k]) for k in networks)
    schedules = [key for key in now if key.endswith("scheduler")]
    assert schedules and all(now[k] == fresh[k] for k in schedules)
    assert tuned.step == 0
    tuned.train(10)  # and it trains on from there


def test_fine_tune_refuses_another_algorithm(
    synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    bc = _trainer(BCConfig(network=SMALL), synthetic_dataset)
    bc.save(tmp_path / "bc.pt")
    with pytest.raises(ValueError, match="a fine-tune of cql starts from cql"):
        _trainer(CQLConfig(network=SMALL), synthetic_dataset).fine_tune_from(tmp_path / "bc.pt")
