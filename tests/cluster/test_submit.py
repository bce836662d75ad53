"""Submission without a cluster: addresses, unreachable dashboards, the job request, the
storage rule, and the messages and exit codes of `poke-tune submit` / `poke-tune jobs`."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poke_tune.cli.main import app
from poke_tune.tuning.experiment import storage_problem
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.submit import (
    EXCLUDES,
    ClusterError,
    auth_headers,
    check_submission,
    connect,
    dashboard_url,
    declared_storage,
    job_request,
)

ROOT = Path(__file__).parents[2]
TINY = Path(__file__).with_name("tiny_cluster.yaml")


@pytest.mark.parametrize(
    "address", ["http://head:8265", "https://10.0.0.5:443/", " http://127.0.0.1:8265 "]
)
def test_dashboard_addresses_are_accepted(address: str) -> None:
    assert dashboard_url(address) == address.strip().rstrip("/")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("head:8265", "expected the Ray dashboard address http(s)://HOST:PORT"),
        ("127.0.0.1:6379", "expected the Ray dashboard address"),
        ("ray://head:10001", "expected the Ray dashboard address"),
        ("http://head", "has no port"),
        ("http://head:port", "Port could not be cast"),
        ("http://head:8265/api/jobs", "has a path"),
        ("http://:8265", "expected the Ray dashboard address"),
    ],
)
def test_bad_addresses_are_refused_with_the_expected_form(address: str, reason: str) -> None:
    with pytest.raises(ClusterError, match="http") as error:
        dashboard_url(address)
    assert reason in str(error.value) and "8265" in str(error.value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_cluster_fails_fast_with_a_hint() -> None:
    start = time.monotonic()
    with pytest.raises(ClusterError, match="cannot reach the Ray dashboard") as error:
        connect(f"http://127.0.0.1:{_closed_port()}")
    assert time.monotonic() - start < 5
    assert "--dashboard-host" in str(error.value)


def test_a_silent_host_times_out_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, timeout: float, **kwargs: object) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    with pytest.raises(ClusterError, match=r"head:8265 \(timed out\)"):
        connect("http://head:8265", timeout_s=0.1)


def test_token_from_the_environment_becomes_a_bearer_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert auth_headers() == {}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret\n")
    assert auth_headers() == {"Authorization": "Bearer secret"}


def test_job_request_uploads_the_project_and_runs_the_spec(tmp_path: Path) -> None:
    request = job_request(
        TINY,
        name="tiny-cluster",
        sets=["storage_path=s3://bucket/sweeps", "objective.battles=20"],
        num_samples=3,
        env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    )
    assert request.entrypoint == (
        "poke-tune run tests/cluster/tiny_cluster.yaml --set storage_path=s3://bucket/sweeps "
        "--set objective.battles=20 --num-samples 3"
    )
    assert request.runtime_env["working_dir"] == str(ROOT)
    assert request.runtime_env["excludes"] == EXCLUDES
    assert {".venv/", ".git/", "/runs/"} <= set(EXCLUDES)
    assert request.runtime_env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert request.metadata == {"poke_tune_sweep": "tiny-cluster"}


def test_job_request_quotes_values_for_the_shell() -> None:
    request = job_request(TINY, name="t", sets=["name=a b; rm -rf /"])
    assert request.entrypoint.endswith("--set 'name=a b; rm -rf /'")


def test_job_request_with_a_pinned_package_uploads_only_the_spec(tmp_path: Path) -> None:
    request = job_request(TINY, name="t", package="poke-tune==0.1.0", staging=tmp_path)
    assert request.runtime_env == {"working_dir": str(tmp_path), "pip": ["poke-tune==0.1.0"]}
    assert request.entrypoint == "poke-tune run tiny_cluster.yaml"
    assert (tmp_path / "tiny_cluster.yaml").read_text() == TINY.read_text()


def test_a_spec_outside_the_uploaded_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="outside the uploaded folder"):
        job_request(TINY, name="t", working_dir=tmp_path)


@pytest.mark.parametrize(
    ("path", "shared", "nodes", "refused"),
    [
        ("/mnt/runs", False, 1, False),  # one node: any folder works
        ("/mnt/runs", False, 3, True),
        ("file:///mnt/runs", False, 2, True),
        ("/mnt/nfs/runs", True, 3, False),  # declared shared
        ("s3://bucket/runs", False, 3, False),
        ("s3://bucket/runs?endpoint_override=minio:9000&scheme=http", False, 3, False),
        ("gs://bucket/runs", False, 3, False),
    ],
)
def test_local_storage_is_refused_on_a_multi_node_cluster(
    path: str, shared: bool, nodes: int, refused: bool
) -> None:
    problem = storage_problem(path, shared=shared, nodes=nodes)
    assert (problem is not None) == refused
    if problem is not None:
        assert f"{nodes} nodes" in problem
        assert "s3://" in problem and "storage_shared: true" in problem


def test_submission_refuses_a_relative_storage_path() -> None:
    spec = load_spec(TINY)
    declared = declared_storage(TINY, {})
    assert declared == "runs/ray"
    with pytest.raises(ClusterError, match="relative"):
        check_submission(spec, declared=declared, nodes=1)
    overrides = {"storage_path": "/mnt/nfs/ray", "storage_shared": True}
    spec = load_spec(TINY, overrides)
    check_submission(spec, declared=declared_storage(TINY, overrides), nodes=4)


runner = CliRunner()


def test_cli_bad_address_exits_2_with_a_message() -> None:
    result = runner.invoke(app, ["jobs", "list", "--address", "localhost:8265"])
    assert result.exit_code == 2
    assert "expected the Ray dashboard address http(s)://HOST:PORT" in result.output


def test_cli_unreachable_cluster_exits_2(tmp_path: Path) -> None:
    address = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(
        app,
        [
            "submit",
            str(TINY),
            "--address",
            address,
            "--set",
            f"storage_path={tmp_path}",
        ],
    )
    assert result.exit_code == 2
    assert f"cannot reach the Ray dashboard at {address}" in result.output


def test_cli_bad_env_pair_exits_2() -> None:
    result = runner.invoke(
        app, ["submit", str(TINY), "--address", "http://h:8265", "--env", "no-equals"]
    )
    assert result.exit_code == 2
    assert "expected NAME=VALUE" in result.output
