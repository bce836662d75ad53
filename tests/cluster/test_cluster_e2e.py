"""`poke-tune submit` against a real two-node Ray cluster on this machine.

A head (`ray start --head`, everything on 127.0.0.1, token authentication on) and a second
node joining it, one CPU each, so the two concurrent trials must run on different nodes.
Both nodes run from a dedicated temp dir and ports, and are stopped by killing their own
process groups: `ray stop` would stop every Ray instance of this user, other tests' too.
Shared storage is a tmp folder both nodes see, declared with `storage_shared: true`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from tests.conftest import MLflowServer

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SPEC = Path(__file__).with_name("tiny_cluster.yaml")
runner = CliRunner()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class LocalCluster:
    address: str
    """Dashboard URL, for `--address`."""
    token: str
    shared: Path
    """A folder every node sees: the sweep's storage."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ray start --block` in its own session, so its whole process group can be killed."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(nodes: list[subprocess.Popen[bytes]]) -> None:
    """TERM, then KILL, every node's process group at once (not one node after another)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        alive = []
        for node in nodes:
            try:
                os.killpg(node.pid, sig)
                alive.append(node)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [node for node in alive if _group_alive(node)]
        if not alive:
            return


def _group_alive(node: subprocess.Popen[bytes]) -> bool:
    node.poll()  # reap the leader: a zombie would keep its group "alive"
    try:
        os.killpg(node.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive_nodes(cluster: LocalCluster) -> int:
    try:
        client = StateApiClient(cluster.address, headers=cluster.headers())
        nodes = client.list(
            StateResource.NODES,
            options=ListApiOptions(filters=[("state", "=", "ALIVE")]),
            raise_on_missing_output=False,
        )
    except Exception:
        return 0
    return len(nodes)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # A short root: Ray's unix sockets live under the temp dir (path limit ~107 bytes).
    root = Path(tempfile.mkdtemp(prefix="ptc-", dir="/tmp"))
    gcs, dashboard, client, agent, metrics, agent2, metrics2 = _free_ports(7)
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job runs `poke-tune`
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }
    nodes = [
        _start(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={agent}",
                f"--metrics-export-port={metrics}",
                f"--temp-dir={root / 'ray'}",
                "--num-cpus=1",
                "--num-gpus=0",
            ],
            env,
            root / "head.log",
        )
    ]
    started = LocalCluster(f"http://127.0.0.1:{dashboard}", token, root / "shared")
    started.shared.mkdir()
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(started) < 1:
            assert time.monotonic() < deadline, (root / "head.log").read_text()[-3000:]
            assert nodes[0].poll() is None, (root / "head.log").read_text()[-3000:]
            time.sleep(1)
        nodes.append(
            _start(
                [
                    f"--address=127.0.0.1:{gcs}",
                    "--node-ip-address=127.0.0.1",
                    f"--dashboard-agent-listen-port={agent2}",
                    f"--metrics-export-port={metrics2}",
                    # Its own temp dir, as on a separate machine: nodes sharing one would
                    # share (and garbage-collect) the job's unpacked working directory.
                    f"--temp-dir={root / 'ray2'}",
                    "--num-cpus=1",
                    "--num-gpus=0",
                ],
                env,
                root / "worker.log",
            )
        )
        while _alive_nodes(started) < 2:
            assert time.monotonic() < deadline, (root / "worker.log").read_text()[-3000:]
            time.sleep(1)
        yield started
    finally:
        _stop(nodes)
        leftovers = subprocess.run(
            ["pgrep", "-f", str(root)], capture_output=True, text=True
        ).stdout.split()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"Ray processes of the test cluster survived: {leftovers}"


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
