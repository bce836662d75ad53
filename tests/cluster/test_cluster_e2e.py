"""`poke-tune submit` against a real two-node Ray cluster on this machine.

The cluster is conftest.py's (one CPU on each of two nodes), so the two concurrent trials
must run on different nodes. Shared storage is a tmp folder both nodes see, declared with
`storage_shared: true`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis
from ray.util.state import StateApiClient
from ray.util.state.common import ListApiOptions, StateResource
from typer.testing import CliRunner

from poke_tune.algos import load_policy
from poke_tune.cli.main import app
from poke_tune.tuning.search.trainable import CHECKPOINT_FILE
from poke_tune.tuning.spec import OBJECTIVE_KEY
from poke_tune.tuning.submit import connect, job_info
from tests.cluster.conftest import BIN, LocalCluster
from tests.conftest import MLflowServer

pytestmark = pytest.mark.slow

SPEC = Path(__file__).with_name("tiny_cluster.yaml")
runner = CliRunner()


@pytest.fixture
def token_env(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)


def _trial_nodes(cluster: LocalCluster, ray_job_id: str) -> set[str]:
    """Nodes of the job's trial actors, from Ray's state API."""
    client = StateApiClient(cluster.address, headers=cluster.headers())
    actors = client.list(
        StateResource.ACTORS,
        options=ListApiOptions(filters=[("job_id", "=", ray_job_id)], detail=True),
        raise_on_missing_output=False,
    )
    # Tune's function trainable is a class made inside `wrap_function`; Ray's state API names
    # it `ImplicitFunc` or by its qualified name `wrap_function.<locals>.ImplicitFunc`,
    # depending on how the class reached the cluster (a Ray detail this test does not pin).
    trials = [a for a in actors if a.class_name.split(".")[-1] == "ImplicitFunc"]
    return {a.node_id for a in trials if a.node_id}


def test_sweep_runs_on_both_nodes_and_leaves_a_readable_best_checkpoint(
    cluster: LocalCluster, token_env: None, mlflow_server: MLflowServer
) -> None:
    start = time.monotonic()
    submitted = subprocess.run(
        [
            str(BIN / "poke-tune"),
            "submit",
            str(SPEC),
            "--address",
            cluster.address,
            "--follow",
            "--set",
            f"storage_path={cluster.shared}",
            "--set",
            "storage_shared=true",
            "--tracking-uri",
            mlflow_server.url,
        ],
        capture_output=True,
        text=True,
        timeout=420,
    )
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-5000:]
    job_id = submitted.stdout.splitlines()[0].strip()
    assert job_id.startswith("raysubmit_"), output[-2000:]
    assert f"job {job_id} SUCCEEDED" in submitted.stderr
    print(f"submit --follow took {time.monotonic() - start:.0f} s")

    client = connect(cluster.address)
    info = job_info(client, job_id)
    assert info.status == "SUCCEEDED" and info.job_id is not None
    logs = client.get_job_logs(job_id)
    problems = "\n".join(line for line in logs.splitlines() if "Error" in line)[-3000:]
    assert len(_trial_nodes(cluster, info.job_id)) == 2, problems

    experiment = cluster.shared / "tiny-cluster"
    analysis = ExperimentAnalysis(
        str(experiment), default_metric=OBJECTIVE_KEY, default_mode="max"
    )
    assert len(analysis.trials) == 4
    reported = {t.last_result.get("node_id") for t in analysis.trials}
    assert len(reported) == 2, f"trials reported nodes {reported}\n{problems}"
    best = analysis.best_checkpoint
    assert best is not None
    policy = load_policy(Path(best.path) / CHECKPOINT_FILE)
    assert policy is not None

    # The shared MLflow server holds the sweep: a parent with one child per trial.
    tracking = MlflowClient(mlflow_server.url)
    runs = tracking.search_runs([tracking.get_experiment_by_name("tiny-cluster").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {r.data.tags["status"] for r in children} == {"completed"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    names = {a.path for a in tracking.list_artifacts(parents[0].info.run_id)}
    assert "best_checkpoint" in names and "trials.csv" in names

    listed = runner.invoke(
        app, ["jobs", "list", "--address", cluster.address], env={"COLUMNS": "200"}
    )
    assert listed.exit_code == 0 and job_id in listed.output and "tiny-cluster" in listed.output
    status = runner.invoke(app, ["jobs", "status", job_id, "--address", cluster.address])
    assert status.exit_code == 0 and "SUCCEEDED" in status.output


def test_failing_job_exits_nonzero_with_its_status_and_last_logs(
    cluster: LocalCluster, token_env: None, tmp_path: Path
) -> None:
    spec = SPEC.with_name("missing_dataset.yaml")
    result = runner.invoke(
        app,
        [
            "submit",
            str(spec),
            "--address",
            cluster.address,
            "--no-validate",  # the dataset is missing on the cluster too
            "--follow",
            "--set",
            f"storage_path={cluster.shared}",
            "--set",
            "storage_shared=true",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "FAILED (exit code 2)" in result.output
    assert "last log lines:" in result.output
    assert "dataset.path: file" in result.output and "does not exist" in result.output


def test_local_storage_on_two_nodes_is_refused_before_upload(
    cluster: LocalCluster, token_env: None, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        ["submit", str(SPEC), "--address", cluster.address, "--set", f"storage_path={tmp_path}"],
    )
    assert result.exit_code == 2
    assert "the Ray cluster has 2 nodes" in result.output
    assert "storage_shared: true" in result.output


def test_missing_token_is_explained(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    result = runner.invoke(app, ["jobs", "list", "--address", cluster.address])
    assert result.exit_code == 2
    assert "RAY_AUTH_TOKEN" in result.output


def test_unknown_job_is_reported(cluster: LocalCluster, token_env: None) -> None:
    result = runner.invoke(
        app, ["jobs", "status", "raysubmit_doesnotexist", "--address", cluster.address]
    )
    assert result.exit_code == 2
    assert "no job 'raysubmit_doesnotexist'" in result.output
