"""`poke-tune play` and `poke-tune server` refusals, the import boundary, and how a
match counts its battles (no server: fast)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from poke_tune.cli.main import app
from poke_tune.cli.play import _report
from poke_tune.play.match import BattleOutcome, MatchResult
from poke_tune.play.server import free_port, websocket_url


def _refused(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_server_on_a_busy_port_exits_2_before_starting() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _refused("server", "--port", str(port))
    assert f"port {port} on 127.0.0.1 is not free" in line


def test_play_against_no_server_exits_2() -> None:
    url = websocket_url("127.0.0.1", free_port())
    line = _refused("play", "random", "--server", url, "--battles", "2")
    assert line == f"error: no Showdown server accepts connections at {url}"


def test_play_refusals() -> None:
    assert "--ladder" in _refused("play", "random", "--ladder", "3")
    assert "unknown poke-env player 'poke-env:nope'" in _refused(
        "play", "random", "--opponent", "poke-env:nope"
    )
    _refused("play", "no-such-policy")
    assert "format" in _refused("play", "random", "--format", "gen9ou")


def test_only_the_play_path_imports_poke_env() -> None:
    code = (
        "import sys, poke_tune.cli.main, poke_tune.tuning.search.trainable, poke_tune.play; "
        "assert 'poke_env' not in sys.modules, 'poke_env loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_failed_battles_are_never_wins_or_losses() -> None:
    outcomes = (
        BattleOutcome("b1", "win", 20, 0),
        BattleOutcome("b2", "loss", 30, 1),
        BattleOutcome("b3", "failed", 7, 0, "the connection to the server was lost"),
        BattleOutcome("b4", "tie", 10, 0),
    )
    result = MatchResult("p", "o", "ws://x", 5, outcomes, seconds=2.0, error="lost")
    assert (result.wins, result.losses, result.ties, result.failed) == (1, 1, 1, 1)
    assert result.battles == 3 and result.win_rate == 1 / 3
    assert result.mean_turns == 20.0 and result.invalid_choices == 1
    assert result.to_dict()["outcomes"][2]["error"] == "the connection to the server was lost"


def test_nothing_played_exits_1_with_the_reason() -> None:
    lost = BattleOutcome("b1", "failed", 3, 0, "the connection to the server was lost")
    result = MatchResult(
        "p", "o", "ws://x", 4, (lost,), 1.0, "the connection to the server was lost"
    )
    with pytest.raises(typer.Exit) as exited:
        _report(result, as_json=False)
    assert exited.value.exit_code == 1
