"""`poke-tune train` in process on the synthetic dataset: resume applies more steps and
refuses a conflicting algorithm or hyperparameter; torch threads are set on purpose."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from poke_tune.cli import evaluate as evaluate_module
from poke_tune.cli.main import app
from tests.synthetic import write_synthetic

SMALL = ["--set", "network.hidden_sizes=[16]", "--set", "batch_size=32", "--set", "fqe_steps=2"]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, run folder) of a finished 20-step CQL run (tests that train on copy it)."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_synthetic(folder / "d.jsonl", 16)
    out = folder / "run"
    result = invoke(
        "train", "--algo", "cql", "--data", str(data), "--steps", "20", "--out", str(out),
        "--set", "eval_interval=10", *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return data, out


def test_resume_with_more_steps_continues(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained[0], tmp_path / "run"
    shutil.copytree(trained[1], out)
    checkpoint = out / "checkpoint_last.pt"
    result = invoke("train", "--data", str(data), "--resume", str(checkpoint), "--steps", "40",
                    "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "completed: 40 steps" in result.stdout
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        (["--algo", "iql", "--steps", "40"], "--algo iql: checkpoint"),
        (["--set", "alpha=3.0", "--steps", "40"], "--set alpha=3.0 (was 1.0)"),
        ([], "is at step 20 of 20"),
    ],
)
def test_resume_refuses_a_conflict(
    trained: tuple[Path, Path], extra: list[str], text: str
) -> None:
    data, out = trained
    before = (out / "metrics.jsonl").read_text()
    result = invoke("train", "--data", str(data), "--resume", str(out / "checkpoint_last.pt"),
                    "--out", str(out), *extra)  # fmt: skip
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: ") and text in result.stderr
    assert (out / "metrics.jsonl").read_text() == before


def test_train_sets_the_requested_threads(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "d.jsonl", 8)
    torch.set_num_threads(3)
    result = invoke("train", "--algo", "bc", "--data", str(data), "--steps", "2",
                    "--out", str(tmp_path / "run"), "--threads", "1", *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1


def test_eval_plays_with_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def fake_evaluate(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        raise ValueError("stop here")

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    torch.set_num_threads(3)
    result = invoke("eval", "random", "--battles", "2")
    assert result.exit_code == 2 and "stop here" in result.stderr
    assert seen == [1]
