"""`poke-tune ui`: the compare link of a sweep's trials, a busy port refused before any URL,
and SIGTERM stopping the MLflow server with its workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from poke_tune.cli.main import app
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.track.store import EXPERIMENT_TAG, TRIAL_TAG
from poke_tune.tuning.track.ui import (
    check_port_free,
    compare_url,
    mlflow_ui_command,
    ui_target,
)
from tests.conftest import free_port, wait_http

POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other server listens on (127.0.0.1)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_compare_url_is_mlflows_compare_view() -> None:
    url = compare_url("http://127.0.0.1:5000/", "3", ["ab12", "cd34"])
    assert url == (
        "http://127.0.0.1:5000/#/compare-runs?runs=[%22ab12%22,%22cd34%22]&experiments=[%223%22]"
    )


def test_the_server_starts_with_the_workers_asked_for() -> None:
    command = mlflow_ui_command("sqlite:////tmp/x/mlflow.db", host="127.0.0.1", port=5001)
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--port") + 1] == "5001"


def test_a_busy_port_is_refused(listening: int) -> None:
    with pytest.raises(ValueError, match=f"port {listening} on 127.0.0.1 is not free"):
        check_port_free("127.0.0.1", listening)
    check_port_free("127.0.0.1", free_port())


def test_ui_on_a_busy_port_exits_2_before_any_url(listening: int, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["ui", "--tracking-uri", uri, "--port", str(listening)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "http://" not in result.stderr and "not free" in result.stderr


def test_ui_prints_the_runs_table_and_the_compare_view(monkeypatch: pytest.MonkeyPatch) -> None:
    from poke_tune.tuning.track import ui as ui_module

    found = ui_module.UiTarget("http://mlflow.internal:5000", "7", ["r1", "r2", "r3"])
    monkeypatch.setattr(ui_module, "ui_target", lambda target, uri: found)
    result = CliRunner().invoke(app, ["ui", "runs/ray/some-sweep"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "http://mlflow.internal:5000/#/experiments/7/runs",
        "compare the 3 trials: http://mlflow.internal:5000/#/compare-runs?"
        "runs=[%22r1%22,%22r2%22,%22r3%22]&experiments=[%227%22]",
    ]


def _spec_file(tmp_path: Path) -> Path:
    (tmp_path / "data.jsonl").write_text("")
    spec = {
        "name": "uisweep",
        "algorithm": {"algo": "bc"},
        "dataset": {"path": "data.jsonl"},
        "objective": {"metric": "offline/action_match"},
        "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
        "storage_path": str(tmp_path / "ray"),
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_ui_target_finds_the_latest_sweeps_children(tmp_path: Path) -> None:
    path = _spec_file(tmp_path)
    spec = load_spec(path)
    assert spec.mlflow.tracking_uri is not None
    client = MlflowClient(spec.mlflow.tracking_uri)
    experiment = client.create_experiment("uisweep")
    sweep = f"{spec.storage_path}/uisweep"
    children: dict[str, list[str]] = {}
    for attempt in ("old", "new"):
        parent = client.create_run(experiment, tags={EXPERIMENT_TAG: sweep}).info.run_id
        children[attempt] = [
            client.create_run(
                experiment,
                tags={EXPERIMENT_TAG: sweep, TRIAL_TAG: f"t{i}", "mlflow.parentRunId": parent},
            ).info.run_id
            for i in range(3)
        ]
        time.sleep(0.01)  # distinct start times
    client.create_run(experiment, tags={EXPERIMENT_TAG: "elsewhere/other"})
    found = ui_target(str(path), None)
    assert found.experiment_id == experiment
    assert found.child_run_ids == children["new"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_serve_stops_its_whole_process_group(tmp_path: Path, stop: signal.Signals) -> None:
    pids = tmp_path / "pids"
    script = (
        "import sys; from poke_tune.tuning.track.ui import serve; "
        f"sys.exit(serve(['sh', '-c', 'sleep 300 & echo $$ $! > {pids}; wait']))"
    )
    server = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not pids.exists() or len(pids.read_text().split()) < 2:
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.05)
        leader, worker = (int(pid) for pid in pids.read_text().split())
        server.send_signal(stop)
        assert server.wait(timeout=60) == 0
        for pid in (leader, worker):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.slow
def test_sigterm_stops_the_server_and_its_workers(tmp_path: Path) -> None:
    port = free_port()
    ui = subprocess.Popen(
        [POKE_TUNE, "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=240)
        server_group = _group_serving(port)
        ui.send_signal(signal.SIGTERM)  # to poke-tune only, as a service manager would
        assert ui.wait(timeout=60) == 0
        with pytest.raises(ProcessLookupError):
            os.killpg(server_group, 0)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        if ui.poll() is None:
            ui.kill()


def _group_serving(port: int) -> int:
    """The process group of poke-tune's child (the MLflow server: a session of its own)."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    ui_pid = int(children[-1])
    grandchildren = Path(f"/proc/{ui_pid}/task/{ui_pid}/children").read_text().split()
    server = int(grandchildren[0])
    group = os.getpgid(server)
    assert group != os.getpgid(ui_pid)
    return group
