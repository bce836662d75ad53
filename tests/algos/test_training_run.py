"""`prepare_trainer` and `run_in_folder` on the synthetic dataset: the run folder, and a
resume that applies what can apply (more steps) and refuses what would change the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poke_tune.algos.training_run import prepare_trainer, run_in_folder
from poke_tune.data.compiled import OfflineDataset
from tests.algos.test_trainer import poison_rewards

SMALL = {"network": {"hidden_sizes": [16]}}
FAST = {"steps": 20, "eval_interval": 10, "fqe_steps": 2, "batch_size": 32}


def _run(dataset: OfflineDataset, folder: Path, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"algo": "cql", "algo_values": SMALL, "train_values": FAST}
    trainer = prepare_trainer(dataset, **(options | kwargs))
    return run_in_folder(trainer, folder, data_path=dataset.source)


def _steps(metrics_file: Path) -> list[float]:
    return [json.loads(line)["step"] for line in metrics_file.read_text().splitlines()]


@pytest.fixture
def checkpoint(synthetic_dataset: OfflineDataset, tmp_path: Path) -> Path:
    """A finished 20-step CQL run's last checkpoint."""
    return Path(_run(synthetic_dataset, tmp_path / "run").last_checkpoint)


def test_a_run_writes_its_folder(synthetic_dataset: OfflineDataset, tmp_path: Path) -> None:
    run = _run(synthetic_dataset, tmp_path / "run")
    assert (run.status, run.step) == ("completed", 20)
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file()
    assert _steps(run.metrics_file) == [10.0, 20.0]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["algo"]["algo"] == "cql" and config["train"]["steps"] == 20
    assert config["dataset_key"] == synthetic_dataset.key


def test_resume_with_more_steps_continues(
    synthetic_dataset: OfflineDataset, checkpoint: Path
) -> None:
    trainer = prepare_trainer(
        synthetic_dataset,
        algo=None,
        algo_values={},
        train_values={"steps": 40},
        resume=checkpoint,
    )
    assert (trainer.step, trainer.config.steps) == (20, 40)
    run = run_in_folder(trainer, checkpoint.parent, data_path=synthetic_dataset.source)
    assert run.step == 40
    assert _steps(run.metrics_file) == [10.0, 20.0, 30.0, 40.0]


def test_resume_with_the_same_algorithm_and_values_is_accepted(
    synthetic_dataset: OfflineDataset, checkpoint: Path
) -> None:
    trainer = prepare_trainer(
        synthetic_dataset,
        algo="cql",
        algo_values=SMALL,
        train_values={"steps": 30, "batch_size": 32, "fqe_steps": 0},
        resume=checkpoint,
    )
    assert trainer.config.fqe_steps == 0 and trainer.step == 20


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"algo": "iql"}, "--algo iql: checkpoint .* was trained with cql"),
        ({"algo_values": {"alpha": 4.0}}, r"--set alpha=4.0 \(was 1.0\)"),
        (
            {"algo_values": {"network": {"hidden_sizes": [32]}}},
            r"--set network.hidden_sizes=\[32\] \(was \[16\]\)",
        ),
        ({"train_values": {"steps": 40, "batch_size": 64}}, r"batch_size=64 \(was 32\)"),
        ({"train_values": {"steps": 40, "seed": 3}}, r"seed=3 \(was 0\)"),
        ({"train_values": {}}, "is at step 20 of 20: ask for more"),
        ({"train_values": {"steps": 10}}, "is at step 20 of 20"),
        ({"train_values": {"steps": 40}, "bc_init": Path("bc.pt")}, "--bc-init"),
    ],
)
def test_resume_refuses_what_would_change_the_run(
    synthetic_dataset: OfflineDataset, checkpoint: Path, options: dict[str, Any], text: str
) -> None:
    arguments: dict[str, Any] = {"algo": None, "algo_values": {}, "train_values": {"steps": 40}}
    with pytest.raises(ValueError, match=text):
        prepare_trainer(synthetic_dataset, resume=checkpoint, **(arguments | options))


def test_a_new_run_needs_an_algorithm(synthetic_dataset: OfflineDataset) -> None:
    with pytest.raises(ValueError, match="--algo is required"):
        prepare_trainer(synthetic_dataset, algo=None, algo_values={}, train_values={})


def test_a_diverged_run_says_so_in_its_record_and_metrics(
    synthetic_dataset: OfflineDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = prepare_trainer(synthetic_dataset, algo="cql", algo_values=SMALL, train_values=FAST)
    poison_rewards(trainer, monkeypatch)
    run = run_in_folder(trainer, tmp_path / "run", data_path=synthetic_dataset.source)
    assert run.status == "diverged" and run.reason is not None and "nan" in run.reason
    last = json.loads(run.metrics_file.read_text().splitlines()[-1])
    assert last["status"] == "diverged"
