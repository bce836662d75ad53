"""Shared fixtures: one simulator pool per test session (node workers are persistent)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import Dex, load_dex
from poke_tune.sim.encoding import ObservationEncoder


@pytest.fixture(scope="session")
def pool() -> Iterator[SimulatorPool]:
    with SimulatorPool(num_workers=2, timeout_s=60) as shared:
        yield shared


@pytest.fixture(scope="session")
def dex() -> Dex:
    return load_dex("gen9randombattle")


@pytest.fixture(scope="session")
def encoder(dex: Dex) -> ObservationEncoder:
    return ObservationEncoder(dex)


@pytest.fixture(scope="session")
def battle_dataset(tmp_path_factory: pytest.TempPathFactory) -> OfflineDataset:
    """A real dataset: 160 battles of mixed random / max-damage behaviour."""
    folder = tmp_path_factory.mktemp("battles")
    path = folder / "mixed.jsonl.gz"
    generate_dataset(path, policies=["random", "max-damage"], battles=160, seed=0)
    return load_dataset(path, cache_root=folder / "cache")


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> OfflineDataset:
    """A small synthetic dataset (48 trajectories of noise, no simulator) for fast tests of
    the training machinery; `battle_dataset` is the real thing."""
    from tests.synthetic import write_synthetic

    folder = tmp_path_factory.mktemp("synthetic")
    path = write_synthetic(folder / "synthetic.jsonl", 48)
    return load_dataset(path, cache_root=folder / "cache")


@pytest.fixture(scope="session")
def synthetic_full_size_dataset(tmp_path_factory: pytest.TempPathFactory) -> OfflineDataset:
    """Like `synthetic_dataset`, with observations of the real encoder's size (noise laid
    out in its blocks), which action-centric networks need."""
    from poke_tune.sim.encoding import observation_blocks
    from tests.synthetic import write_synthetic

    size = sum(size for _, size in observation_blocks(18))  # gen 9 has 18 types
    folder = tmp_path_factory.mktemp("synthetic-full")
    path = write_synthetic(folder / "synthetic.jsonl", 24, observation_size=size)
    return load_dataset(path, cache_root=folder / "cache")


@pytest.fixture(scope="session")
def learned_checkpoint(
    synthetic_full_size_dataset: OfflineDataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A CQL checkpoint of a few steps on noise of the real encoder's size: a learned
    policy that plays real battles (badly), for the paths that load one."""
    from poke_tune.algos import CQLConfig, NetworkConfig, TrainConfig, Trainer

    config = CQLConfig(network=NetworkConfig(hidden_sizes=(16,)))
    training = TrainConfig(steps=4, eval_interval=4, fqe_steps=0)
    trainer = Trainer(config, training, synthetic_full_size_dataset)
    trainer.train(2)
    path = tmp_path_factory.mktemp("learned") / "cql.pt"
    trainer.save(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


class MLflowServer:
    """A real `mlflow server` process on 127.0.0.1 that can be stopped and restarted."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination", str(folder / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.log = (folder / "server.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=self.log, stderr=self.log, start_new_session=True
        )
        wait_http(f"{self.url}/health")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its workers
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MLflowServer]:
    """A started `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    server = MLflowServer(tmp_path)
    server.start()
    yield server
    server.stop()
