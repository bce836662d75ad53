"""A local sweep keeps the driver's credentials out of its trials and Ray's logs (issue 18):
Ray Tune copies AWS credentials into every trial's runtime environment and Ray's
runtime_env_agent.log records them in clear, in a log other users could read."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from poke_tune.tuning.search.cluster import inherited_secrets, tune_forwarded_secrets, withheld

TINY = Path(__file__).with_name("tiny.yaml")
POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))
SECRET = "probe-secret-123"
ENV = {
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_SESSION_TOKEN": SECRET,
    "MLFLOW_TRACKING_TOKEN": SECRET,
    "RAY_AUTH_TOKEN": "ray-token",
    "AWS_REGION": "eu-west-1",
}


def test_a_local_storage_withholds_every_secret_but_rays_own_from_the_local_ray() -> None:
    # RAY_AUTH_TOKEN stays: the driver and the Ray it starts must agree on it.
    assert sorted(inherited_secrets("/tmp/runs", ENV)) == [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_TOKEN",
    ]
    assert inherited_secrets("file:///tmp/runs", ENV) != []


def test_fit_withholds_only_what_tune_copies_into_trials() -> None:
    # The driver's MLflow callbacks still need MLFLOW_TRACKING_TOKEN during fit().
    assert tune_forwarded_secrets("runs/ray", ENV) == [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ]


def test_remote_storage_keeps_the_credentials_it_needs() -> None:
    assert inherited_secrets("s3://bucket/runs", ENV) == []
    assert tune_forwarded_secrets("gs://bucket/runs", ENV) == []


def test_withheld_variables_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with withheld(["AWS_SECRET_ACCESS_KEY", "NOT_SET_ANYWHERE"]):
        assert "AWS_SECRET_ACCESS_KEY" not in os.environ
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert "NOT_SET_ANYWHERE" not in os.environ


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    # Ray's own temp root for the sweep, so that only its session is searched. Short, under
    # /tmp: Ray's socket paths must fit in 107 characters (pytest's tmp_path is too long).
    folder = Path(tempfile.mkdtemp(prefix="pt-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_local_sweep_leaves_no_secret_in_rays_logs_and_no_readable_log(
    tmp_path: Path, ray_tmp: Path
) -> None:
    env = {
        **os.environ,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": SECRET,
        "RAY_TMPDIR": str(ray_tmp),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    sets = [
        "name=probe",
        f"storage_path={tmp_path / 'ray'}",
        "mlflow.enabled=false",
        "confirm.enabled=false",
        "max_concurrent_trials=1",
    ]
    command = [POKE_TUNE, "run", str(TINY), "--num-samples", "1", "--steps", "20"]
    for pair in sets:
        command += ["--set", pair]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sessions = [s for s in (ray_tmp / "ray").glob("session_2*") if s.is_dir()]
    assert len(sessions) == 1, sessions
    logs = list((sessions[0] / "logs").rglob("*"))
    assert any(log.name.startswith("runtime_env_agent") for log in logs)  # Ray did log
    holding = [
        path
        for path in [*ray_tmp.rglob("*"), *tmp_path.rglob("*")]
        if path.is_file() and not path.is_symlink() and SECRET.encode() in path.read_bytes()
    ]
    assert holding == []
    readable = [
        log for log in logs if log.is_file() and log.stat().st_mode & (stat.S_IROTH | stat.S_IRGRP)
    ]
    assert readable == []
