"""What `poke-tune ui` shows and how it serves it: the MLflow UI on a sweep's store.

`ui_target` finds the tracking store, the MLflow experiment and the sweep's child runs
(by the tag `poke_tune.experiment`) of an experiment folder or a spec; `experiment_url` and
`compare_url` are the runs table and MLflow's compare view of the children (parameters
against the objective, with a parallel-coordinates plot). `serve` runs `mlflow server` in
its own process group and stops the whole group (the server and its workers) when it is
interrupted or sent SIGTERM / SIGHUP.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import quote

from poke_tune.sim.runtime import stop_process_group, usable_cpus

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "UiTarget",
    "check_port_free",
    "compare_url",
    "default_workers",
    "experiment_url",
    "mlflow_ui_command",
    "serve",
    "ui_target",
]

_logger = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class UiTarget:
    """A tracking store, and when a sweep was named, its experiment and child runs."""

    tracking_uri: str
    experiment_id: str | None = None
    child_run_ids: list[str] = field(default_factory=list)
    """The trials of the sweep's latest parent run, in start order."""


def experiment_url(server: str, experiment_id: str) -> str:
    """The runs table of an experiment in the MLflow UI (not the GenAI overview)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"


def compare_url(server: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare view of `run_ids`: `#/compare-runs?runs=[%22ID%22,...]`, the JSON
    lists of run and experiment ids the UI's own links carry, quotes percent-encoded."""

    def ids(values: list[str]) -> str:
        return quote(json.dumps(values, separators=(",", ":")), safe="[],")

    query = f"runs={ids(run_ids)}&experiments={ids([experiment_id])}"
    return f"{server.rstrip('/')}/#/compare-runs?{query}"


def ui_target(target: str | None, tracking_uri: str | None) -> UiTarget:
    """The store `poke-tune ui` shows: that of an experiment folder or a spec file (with
    its experiment and child runs), else `tracking_uri` / MLFLOW_TRACKING_URI / the local
    default."""
    from mlflow.tracking import MlflowClient  # MLflow (and below, Ray) only when needed

    from poke_tune.tuning.experiment import Experiment
    from poke_tune.tuning.locations import resolve_tracking_uri
    from poke_tune.tuning.spec_file import load_spec

    if target is None:
        return UiTarget(resolve_tracking_uri(tracking_uri, str(Path("runs/ray").resolve())))
    path = Path(target)
    if path.is_dir():
        spec = Experiment.open(path.resolve()).spec
    elif path.is_file():
        spec = load_spec(path)
    else:
        raise FileNotFoundError(f"{target}: not an experiment folder or a spec file")
    uri = tracking_uri or spec.mlflow.tracking_uri
    assert uri is not None
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(spec.mlflow.experiment or spec.name)
    if found is None:
        return UiTarget(uri)
    experiment_id = str(found.experiment_id)
    return UiTarget(
        uri, experiment_id, _child_runs(client, experiment_id, Experiment(spec).location)
    )


def _child_runs(client: MlflowClient, experiment_id: str, sweep: str) -> list[str]:
    from poke_tune.tuning.track.store import TRIAL_TAG, sweep_runs_filter

    runs = client.search_runs(
        [experiment_id],
        filter_string=sweep_runs_filter(sweep),
        max_results=5000,
        order_by=["attributes.start_time ASC"],
    )
    parents = [run for run in runs if TRIAL_TAG not in run.data.tags]
    if not parents:
        return []
    latest = parents[-1].info.run_id
    return [
        run.info.run_id
        for run in runs
        if TRIAL_TAG in run.data.tags and run.data.tags.get("mlflow.parentRunId") == latest
    ]


def default_workers() -> int:
    """MLflow server workers: 1 on machines with up to 4 usable CPUs (MLflow's default 4
    takes a minute and a half to come up on a loaded 2-core machine), else 2."""
    return 1 if usable_cpus() <= 4 else 2


def mlflow_ui_command(tracking_uri: str, *, host: str, port: int, workers: int = 1) -> list[str]:
    """`mlflow server` on a local store; artifacts beside a SQLite store, as logged."""
    from poke_tune.tuning.track.store import artifact_location

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    location = artifact_location(tracking_uri, "")
    if location is not None:
        command += ["--default-artifact-root", location]
    return command


def check_port_free(host: str, port: int) -> None:
    """Raise ValueError when `host:port` cannot be bound (another server listens there)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[
            0
        ]
    except socket.gaierror as error:
        raise ValueError(f"--host {host}: {error.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind(address)
        except OSError as error:
            raise ValueError(
                f"port {port} on {host} is not free ({error.strerror}): another server "
                "listens there; choose another with --port"
            ) from None


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(command: list[str]) -> int:
    """Run `command` in a new process group until it exits (its status) or until Ctrl-C,
    SIGTERM or SIGHUP (0); then stop the whole group, TERM first, KILL after 10 s."""
    process = subprocess.Popen(command, start_new_session=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *_STOP_SIGNALS)}
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    try:
        return process.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        try:
            stop_process_group(process, name="MLflow server", timeout_s=_STOP_TIMEOUT_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
