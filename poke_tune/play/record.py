"""Record bot battles on a local server: the recipe that makes a logged dataset from scratch.

A local `LocalServer` writes every finished battle to its logs folder (challenges included,
see `server.py`); here poke-env's own bots challenge each other on it, so a fresh clone can
reproduce a logged dataset: `record_bot_battles(...)`, then `poke-tune data import` on the
returned folder. The bots are poke-env's (`poke-env:simple-heuristics`, ...) or any
poke-tune policy name `make_player` takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from poke_tune.play.factory import make_player
from poke_tune.play.server import LocalServer, default_logs_dir, free_port

__all__ = [
    "DEFAULT_MATCHUPS",
    "RecordSummary",
    "battle_logs",
    "record_bot_battles",
    "wait_for_logs",
]

_logger = logging.getLogger(__name__)

_LOG_WRITE_WAIT_S = 30.0  # the server writes a battle's log asynchronously after its end

DEFAULT_MATCHUPS: tuple[tuple[str, str], ...] = (
    ("poke-env:simple-heuristics", "poke-env:max-base-power"),
    ("poke-env:simple-heuristics", "poke-env:random"),
)
"""The issue's recipe: SimpleHeuristicsPlayer against MaxBasePowerPlayer and RandomPlayer."""


@dataclass(frozen=True)
class RecordSummary:
    """What a recording left: the logs folder and the battles each matchup finished."""

    logs_dir: Path
    finished: dict[str, int]

    @property
    def battles(self) -> int:
        return sum(self.finished.values())


def _split(battles: int, parts: int) -> list[int]:
    """`battles` shared out as evenly as possible, the first parts taking the remainder."""
    return [battles // parts + (i < battles % parts) for i in range(parts)]


async def _play(
    url: str,
    matchups: Sequence[tuple[str, str]],
    counts: Sequence[int],
    battle_format: str,
    concurrency: int,
    timeout_s: float,
) -> dict[str, int]:
    finished: dict[str, int] = {}
    for (first, second), count in zip(matchups, counts, strict=True):
        if count == 0:
            continue
        player, opponent = (
            make_player(name, server_url=url, battle_format=battle_format, concurrency=concurrency)
            for name in (first, second)
        )
        # The bots are poke-env's own, trusted to finish; the timeout only bounds a dead server.
        await asyncio.wait_for(player.battle_against(opponent, n_battles=count), timeout_s)
        finished[f"{first} vs {second}"] = player.n_finished_battles
        _logger.debug("%s vs %s: %d battles", first, second, player.n_finished_battles)
    return finished


def battle_logs(logs_dir: Path) -> list[Path]:
    """The battle logs below a server's logs folder."""
    return sorted(logs_dir.rglob("*.log.json")) if logs_dir.is_dir() else []


def _written(path: Path) -> bool:
    """The server has written the whole log: it creates the file first and fills it after,
    so a log read too early is empty or cut off (and an import would refuse it)."""
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def wait_for_logs(logs_dir: Path, expected: int, timeout_s: float = _LOG_WRITE_WAIT_S) -> int:
    """Wait until `logs_dir` holds `expected` whole battle logs (the server writes each
    asynchronously after its battle ends); return how many it holds, with a warning if
    that is fewer."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = battle_logs(logs_dir)
        # The cheap count first; parse only once enough files are there.
        if len(logs) >= expected and all(_written(log) for log in logs):
            return len(logs)
        if time.monotonic() >= deadline:
            whole = sum(_written(log) for log in logs)
            _logger.warning(
                "%s holds %d whole battle logs, expected %d", logs_dir, whole, expected
            )
            return whole
        time.sleep(0.1)


def record_bot_battles(
    battles: int,
    *,
    matchups: Sequence[tuple[str, str]] = DEFAULT_MATCHUPS,
    logs_dir: Path | None = None,
    battle_format: str = "gen9randombattle",
    concurrency: int = 4,
    timeout_s: float = 3600.0,
) -> RecordSummary:
    """Start a local server logging to `logs_dir`, play `battles` battles shared across
    `matchups` (player challenges opponent), stop the server, return where the logs are."""
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    if not matchups:
        raise ValueError("matchups is empty: name at least one (player, opponent) pair")
    logs = (logs_dir or default_logs_dir()).resolve()
    counts = _split(battles, len(matchups))
    before = len(battle_logs(logs))
    with LocalServer(port=free_port(), logs_dir=logs) as server:
        finished = asyncio.run(
            _play(server.url, matchups, counts, battle_format, concurrency, timeout_s)
        )
        # Stopping the server before its last writes land would lose those battles.
        wait_for_logs(logs, before + sum(finished.values()))
    return RecordSummary(logs, finished)
