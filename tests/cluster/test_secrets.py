"""Credentials never travel in a job's runtime environment (Ray shows job variables in its
dashboard and writes them to world-readable runtime-env logs)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from poke_tune.tuning.submit import job_request, withhold_secrets

TINY = Path(__file__).with_name("tiny_cluster.yaml")


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
        "MLFLOW_TRACKING_PASSWORD",
        "RAY_AUTH_TOKEN",
        "HF_TOKEN",
        "MY_SERVICE_API_KEY",
        "DB_PASSWORD",
        "aws_secret_access_key",
    ],
)
def test_a_secret_variable_is_withheld(name: str) -> None:
    kept, withheld = withhold_secrets({name: "s3cr3t", "AWS_REGION": "eu-west-1"})
    assert kept == {"AWS_REGION": "eu-west-1"}
    assert withheld == (name,)


@pytest.mark.parametrize(
    "name", ["AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS"]
)
def test_ordinary_variables_are_kept(name: str) -> None:
    assert withhold_secrets({name: "1"}) == ({name: "1"}, ())


def test_credentials_are_cut_out_of_urls() -> None:
    kept, withheld = withhold_secrets({"MLFLOW_TRACKING_URI": "http://alice:pw@mlflow:5000"})
    assert kept == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert withheld == ("MLFLOW_TRACKING_URI (the credentials in its URL)",)


def test_the_job_request_carries_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "MLFLOW_TRACKING_URI": "https://bob:hunter2@mlflow.internal",
    }
    with caplog.at_level(logging.WARNING):
        request = job_request(TINY, name="t", env=env)
    assert request.runtime_env["env_vars"] == {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "MLFLOW_TRACKING_URI": "https://mlflow.internal",
    }
    assert "s3cr3t" not in repr(request) and "hunter2" not in repr(request)
    assert "AWS_SECRET_ACCESS_KEY" in caplog.text and "s3cr3t" not in caplog.text
    assert request.withheld[0] == "AWS_SECRET_ACCESS_KEY"


def test_only_secrets_leave_no_env_vars() -> None:
    request = job_request(TINY, name="t", env={"AWS_SECRET_ACCESS_KEY": "x"})
    assert "env_vars" not in request.runtime_env
