"""poke-env players by name: any poke-tune policy as a `PolicyPlayer`, or one of
poke-env's baseline players (`poke-env:random|max-base-power|simple-heuristics`), with the
Showdown account from the environment for a remote server."""

from __future__ import annotations

import logging
import os
from typing import Any

from poke_env.player import MaxBasePowerPlayer, Player, RandomPlayer, SimpleHeuristicsPlayer
from poke_env.ps_client import AccountConfiguration

from poke_tune.play.player import PolicyPlayer, server_configuration
from poke_tune.sim.policies import Policy

__all__ = [
    "ACCOUNT_ENV",
    "PASSWORD_ENV",
    "POKE_ENV_OPPONENTS",
    "account_from_env",
    "check_player_name",
    "make_player",
    "player_name",
]

POKE_ENV_PREFIX = "poke-env:"
POKE_ENV_OPPONENTS: dict[str, type[Player]] = {
    "random": RandomPlayer,
    "max-base-power": MaxBasePowerPlayer,
    "simple-heuristics": SimpleHeuristicsPlayer,
}
"""poke-env's baseline players, by the name `poke-env:NAME` selects."""
ACCOUNT_ENV = "POKE_TUNE_SHOWDOWN_USER"
PASSWORD_ENV = "POKE_TUNE_SHOWDOWN_PASSWORD"  # read from the environment only, never logged


def account_from_env() -> AccountConfiguration | None:
    """The Showdown account named by POKE_TUNE_SHOWDOWN_USER (password from
    POKE_TUNE_SHOWDOWN_PASSWORD), or None for a generated guest name."""
    user = os.environ.get(ACCOUNT_ENV)
    if not user:
        return None
    return AccountConfiguration(user, os.environ.get(PASSWORD_ENV) or None)


def check_player_name(name: str) -> None:
    """Raise ValueError for a `poke-env:` name that names none of poke-env's players."""
    if name.startswith(POKE_ENV_PREFIX) and name[len(POKE_ENV_PREFIX) :] not in POKE_ENV_OPPONENTS:
        known = ", ".join(POKE_ENV_PREFIX + k for k in POKE_ENV_OPPONENTS)
        raise ValueError(f"unknown poke-env player {name!r}; known: {known}")


def make_player(
    name: Policy | str,
    *,
    server_url: str,
    battle_format: str = "gen9randombattle",
    concurrency: int = 4,
    tracking_uri: str | None = None,
    seed: int | None = None,
    account: AccountConfiguration | None = None,
) -> Player:
    """A poke-env player for `name`: `poke-env:random|max-base-power|simple-heuristics`,
    or a `PolicyPlayer` for a poke-tune policy (or its name)."""
    options: dict[str, Any] = {
        "battle_format": battle_format,
        "server_configuration": server_configuration(server_url),
        "max_concurrent_battles": concurrency,
        # The match reports connection faults itself; poke-env would log tracebacks.
        "log_level": logging.CRITICAL,
    }
    if account is not None:
        options["account_configuration"] = account
    if isinstance(name, str) and name.startswith(POKE_ENV_PREFIX):
        check_player_name(name)
        return POKE_ENV_OPPONENTS[name.removeprefix(POKE_ENV_PREFIX)](**options)
    return PolicyPlayer(name, seed=seed, tracking_uri=tracking_uri, **options)


def player_name(player: Player) -> str:
    """How a result names `player`: its policy's name, or `poke-env:NAME` for a bot."""
    if isinstance(player, PolicyPlayer):
        return player.policy.name
    kinds = {cls: POKE_ENV_PREFIX + kind for kind, cls in POKE_ENV_OPPONENTS.items()}
    return kinds.get(type(player), type(player).__name__)
