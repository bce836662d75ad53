"""On a real local Showdown server: the `server` command, a registered model as a
poke-env player against poke-env's SimpleHeuristicsPlayer (end to end), and the faults
(the server dies mid-match, a battle hangs). Every server binds 127.0.0.1 on a free port
and is gone afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from poke_env.player import RandomPlayer

from poke_tune.play.factory import make_player
from poke_tune.play.match import BattleOutcome, play_match
from poke_tune.play.player import PolicyPlayer, server_configuration
from poke_tune.play.server import LocalServer, free_port

pytestmark = pytest.mark.slow

POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))
POLICY_MODEL = Path(__file__).parents[2] / "poke_tune" / "tuning" / "track" / "policy_model.py"


def _servers(port: int) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-f", f"pokemon-showdown start --skip-build --no-security {port}"],
        capture_output=True,
        text=True,
    )
    return found.stdout.split()


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [POKE_TUNE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_server_command_prints_its_url_and_stops_its_group_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [POKE_TUNE, "server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url == f"ws://127.0.0.1:{port}/showdown/websocket"
        assert _servers(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert _servers(port) == []


def _register_model(tmp_path: Path) -> tuple[str, str]:
    """A small BC checkpoint trained on real battles, registered as champion (as the
    sweep's registry does: a pyfunc model from code with the checkpoint as artifact)."""
    data = tmp_path / "d.jsonl.gz"
    assert _run("data", "generate", str(data), "--battles", "8").returncode == 0
    trained = _run(
        "train", "--algo", "bc", "--data", str(data), "--steps", "20", "--out",
        str(tmp_path / "run"), "--set", "eval_interval=20", "--set", "fqe_steps=10",
        "--set", "network.hidden_sizes=[32]",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = "poke-tune-play-e2e"
    mlflow.set_tracking_uri(uri)
    artifacts = (tmp_path / "artifacts").as_uri()  # not ./mlruns in the working directory
    experiment = MlflowClient(uri).create_experiment("play-e2e", artifact_location=artifacts)
    try:
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(
                name="policy",
                python_model=str(POLICY_MODEL),
                artifacts={"checkpoint": str(tmp_path / "run" / "checkpoint_last.pt")},
                registered_model_name=name,
            )
        MlflowClient(uri).set_registered_model_alias(
            name, "champion", str(info.registered_model_version)
        )
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    return f"models:/{name}@champion", uri


def test_a_registered_model_plays_simple_heuristics_on_a_local_server(tmp_path: Path) -> None:
    model, uri = _register_model(tmp_path)
    before = subprocess.run(["pgrep", "-f", "pokemon-showdown start"], capture_output=True)
    played = _run(
        "play", model, "--opponent", "poke-env:simple-heuristics", "--battles", "4",
        "--tracking-uri", uri, "--json",
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    result = json.loads(played.stdout)
    assert result["policy"] == model and result["opponent"] == "poke-env:simple-heuristics"
    assert result["battles"] == 4 and result["failed"] == 0
    assert result["invalid_choices"] == 0
    assert len(result["outcomes"]) == 4
    assert {o["outcome"] for o in result["outcomes"]} <= {"win", "loss", "tie"}
    after = subprocess.run(["pgrep", "-f", "pokemon-showdown start"], capture_output=True)
    assert after.stdout == before.stdout  # the command's own server is gone


def test_a_server_that_dies_mid_match_fails_the_battles_in_flight() -> None:
    server = LocalServer(port=free_port()).start()
    finished: list[BattleOutcome] = []

    def on_result(outcome: BattleOutcome) -> None:
        finished.append(outcome)
        if len(finished) == 1:  # one battle done, others in flight: the server dies
            os.killpg(server.pid, signal.SIGKILL)

    async def match() -> Any:
        player = make_player("max-damage", server_url=server.url, concurrency=4)
        opponent = make_player("poke-env:random", server_url=server.url, concurrency=4)
        assert isinstance(player, PolicyPlayer)
        return await play_match(
            player, opponent=opponent, battles=20, on_result=on_result, battle_timeout_s=60
        )

    try:
        result = asyncio.run(match())
    finally:
        server.stop()
    assert result.error == "the connection to the server was lost"
    assert result.battles >= 1 and result.failed >= 1
    for outcome in result.outcomes:
        if outcome.outcome == "failed":
            assert outcome.error == "the connection to the server was lost"
    assert result.battles + result.failed == len(result.outcomes) < 20
    assert _servers(server.port) == []


class Stalling(RandomPlayer):
    """Never answers its first request."""

    async def choose_move(self, battle: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(3600)


def test_a_hung_battle_is_forfeited_and_reported() -> None:
    with LocalServer(port=free_port()) as server:

        async def match() -> Any:
            player = make_player("random", server_url=server.url)
            assert isinstance(player, PolicyPlayer)
            stalling = Stalling(server_configuration=server_configuration(server.url))
            return await play_match(player, opponent=stalling, battles=1, battle_timeout_s=3)

        started = time.monotonic()
        result = asyncio.run(match())
    assert time.monotonic() - started < 60
    assert (result.battles, result.failed) == (0, 1)
    assert result.outcomes[0].error == "no message for 3 s: forfeited"
    assert _servers(server.port) == []
