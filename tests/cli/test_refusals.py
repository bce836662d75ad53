"""Refused inputs exit 2 with one `error: ...` line naming the file, never a traceback or
click's bare `Aborted.` (in process, no battles: fast)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from poke_tune.cli.main import app
from tests.synthetic import write_synthetic


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr


def _assert_refused(code: int, stderr: str, *texts: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    for text in texts:
        assert text in lines[0], stderr


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


BAD_CHECKPOINTS = {
    "empty": b"",
    "truncated": _torch_bytes({"format": 2, "w": torch.zeros(64)})[:200],
    "random": bytes(range(256)) * 8,
    "unsafe": _torch_bytes({"format": 2, "hook": io.BytesIO}),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_eval_of_a_bad_checkpoint(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(BAD_CHECKPOINTS[kind])
    _assert_refused(*invoke("eval", str(path), "--battles", "2"), str(path))


@pytest.mark.parametrize("kind", ["empty", "unsafe"])
def test_train_resume_from_a_bad_checkpoint(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(BAD_CHECKPOINTS[kind])
    data = write_synthetic(tmp_path / "d.jsonl", 8)
    code, stderr = invoke("train", "--algo", "bc", "--data", str(data), "--resume", str(path))
    _assert_refused(code, stderr, str(path))


def test_data_info_of_a_directory(tmp_path: Path) -> None:
    _assert_refused(*invoke("data", "info", str(tmp_path)), str(tmp_path), "is a directory")


@pytest.mark.parametrize("command", [["eval", "random"], ["data", "generate", "out.jsonl"]])
def test_a_format_without_generated_teams(command: list[str]) -> None:
    code, stderr = invoke(*command, "--battles", "2", "--format", "gen1ou")
    _assert_refused(code, stderr, "'gen1ou'", "random-team formats")


@pytest.mark.slow  # imports MLflow and creates a store
def test_eval_of_a_model_the_registry_does_not_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    code, stderr = invoke(
        "eval", "models:/does-not-exist@champion", "--battles", "2", "--tracking-uri", uri
    )
    assert code == 2 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]  # after MLflow's own lines creating the store
    assert last.startswith("error: models:/does-not-exist@champion: no such registered model")
    # MLflow's fluent API exports its URI to child processes; it must not outlive the call.
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    # Nor is the process pinned to some URI: a later MLFLOW_TRACKING_URI still counts.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///later.db")
    assert mlflow.get_tracking_uri() == "sqlite:///later.db"
