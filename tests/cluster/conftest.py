"""A real two-node Ray cluster on this machine, for the cluster tests (and the cluster
battles benchmark): `local_cluster()`, and the module-scoped `cluster` fixture.

A head (`ray start --head`, everything on 127.0.0.1, token authentication on) and a second
node joining it, one CPU each. Both nodes run from a dedicated temp dir and ports, and are
stopped by killing their own process groups: `ray stop` would stop every Ray instance of
this user, other tests' too. Shared storage is a tmp folder both nodes see.
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray.util.state import StateApiClient
from ray.util.state.common import ListApiOptions, StateResource

BIN = Path(sys.executable).parent


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
    gcs: str
    """HOST:PORT of the head's GCS, for a driver's `ray.init(address=...)`."""

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


@contextmanager
def local_cluster(nodes_wanted: int = 2) -> Iterator[LocalCluster]:
    """A head and (with `nodes_wanted` 2) a second node on 127.0.0.1, one CPU each."""
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
    started = LocalCluster(
        f"http://127.0.0.1:{dashboard}", token, root / "shared", f"127.0.0.1:{gcs}"
    )
    started.shared.mkdir()
    try:
        deadline = time.monotonic() + 120
        while _alive_nodes(started) < 1:
            assert time.monotonic() < deadline, (root / "head.log").read_text()[-3000:]
            assert nodes[0].poll() is None, (root / "head.log").read_text()[-3000:]
            time.sleep(1)
        if nodes_wanted < 2:
            yield started
            return
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as started:
        yield started


@contextmanager
def driver_of(cluster: LocalCluster) -> Iterator[None]:
    """This process as a Ray driver of `cluster` (`ray.init(address=...)`), token auth on.
    Ray reads its auth mode once per process: the reset makes it read RAY_AUTH_MODE again
    (and again on the way out, so that later tests see the mode they set). Ray also maps a
    127.0.0.1 address to the machine's outward IP, where the local cluster does not
    listen, unless its single-machine mode is on (as `init_ray` does for a local Ray)."""
    import ray
    from ray._private import ray_constants
    from ray._private.authentication_test_utils import reset_auth_token_state

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_AUTH_MODE", "token")
            patch.setenv("RAY_AUTH_TOKEN", cluster.token)
            patch.delenv("RAY_ADDRESS", raising=False)
            patch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
            patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
            reset_auth_token_state()
            ray.init(address=cluster.gcs, include_dashboard=False, log_to_driver=False)
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        reset_auth_token_state()
