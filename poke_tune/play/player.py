"""Any poke-tune policy as a poke-env `Player` on a Showdown server.

The player sees the battle through poke-env's websocket client, but decides from the
server's raw messages with the project's own pieces, exactly as the in-process evaluator
does (`poke_tune.sim.battles`): every battle-log line goes to a `BattleState`, the last
`|request|` JSON is kept as sent, and at each decision the `ObservationEncoder` and
`legal_action_mask` turn (request, public state) into the observation and mask; the
policy's action index becomes a Showdown choice by request slot (`/choose move 2`,
`/choose move 1 terastallize`, `/choose switch 3`). poke-env's own `Battle` object is
kept up to date by poke-env (its users may read it) but is never read here.

The one difference from the in-process stream: a server sends each player the private
copy of its own `|split|` sections (exact HP) without the `|split|` marker, where the
evaluator's tracker reads the public copy. The encoder takes a player's own HP from the
request, never from the log, so observations are identical (tests/play prove it on a
recorded battle).

Three lines for a poke-env user::

    from poke_tune.play import PolicyPlayer
    player = PolicyPlayer("models:/poke-tune-cql-alpha@champion")
    await player.ladder(10)   # or accept_challenges, battle_against, cross_evaluate
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from poke_env.player import BattleOrder, DefaultBattleOrder, Player, SingleBattleOrder
from poke_env.ps_client import (
    AccountConfiguration,
    ServerConfiguration,
    ShowdownServerConfiguration,
)

from poke_tune.sim.actions import action_to_choice, legal_action_mask
from poke_tune.sim.dex import load_dex
from poke_tune.sim.encoding import ObservationEncoder
from poke_tune.sim.policies import PlayerView, Policy
from poke_tune.sim.state import BattleState
from poke_tune.tuning.policies import resolve_policy

__all__ = ["PolicyPlayer", "ServerBattle", "server_configuration"]

_logger = logging.getLogger(__name__)


def server_configuration(url: str) -> ServerConfiguration:
    """poke-env's configuration for the websocket `url`, logging in through Showdown's
    official authentication endpoint (used only for accounts with a password)."""
    return ServerConfiguration(url, ShowdownServerConfiguration.authentication_url)


@dataclass
class ServerBattle:
    """What the player tracks of one battle, from the server's raw messages."""

    tag: str
    state: BattleState = field(default_factory=BattleState)
    request: dict[str, Any] | None = None
    invalid_choices: int = 0
    retry_default: bool = False  # the last choice was refused: send `default` once
    last_message: float = field(default_factory=time.monotonic)

    def feed(self, split_messages: list[list[str]]) -> None:
        """Apply one websocket message of the battle room (lines split on `|`)."""
        self.last_message = time.monotonic()
        log: list[str] = []
        for parts in split_messages:
            if len(parts) < 2:
                continue
            if parts[1] == "request":
                payload = "|".join(parts[2:])
                if payload:
                    self.request = orjson.loads(payload)
            elif parts[1] == "error" and len(parts) > 2:
                if parts[2].startswith("[Invalid choice]"):
                    _logger.warning("battle %s: %s", self.tag, "|".join(parts[2:]))
                    self.invalid_choices += 1
                    self.retry_default = True
            else:
                log.append("|".join(parts))
        if log:
            self.state.apply("\n".join(log))


class PolicyPlayer(Player):
    """A poke-env player whose decisions come from a poke-tune `Policy`.

    Args:
        policy: a `Policy`, or its name as `poke-tune eval` takes it (a built-in name, a
            checkpoint file, `models:/NAME@alias`, `models:/NAME/VERSION`).
        seed: seed of the policy's random draws (None: fresh entropy).
        tracking_uri: MLflow tracking URI for `models:/` names.
        server_url: websocket URL (default: poke-env's localhost server on port 8000).
        **player_options: anything else poke-env's `Player` takes (`battle_format`,
            `max_concurrent_battles`, `account_configuration`, `start_listening`, ...).
    """

    def __init__(
        self,
        policy: Policy | str,
        *,
        seed: int | None = None,
        tracking_uri: str | None = None,
        server_url: str | None = None,
        **player_options: Any,
    ) -> None:
        self.policy = resolve_policy(policy, tracking_uri) if isinstance(policy, str) else policy
        self._rng = np.random.default_rng(seed)
        self._encoder: ObservationEncoder | None = None
        self.server_battles: dict[str, ServerBattle] = {}
        if server_url is not None:
            player_options.setdefault("server_configuration", server_configuration(url=server_url))
        if "account_configuration" not in player_options:
            player_options["account_configuration"] = _generated_account(self.policy.name)
        super().__init__(**player_options)

    @property
    def encoder(self) -> ObservationEncoder:
        """The observation encoder of this player's format (built on first use)."""
        if self._encoder is None:
            self._encoder = ObservationEncoder(load_dex(self.format))
        return self._encoder

    async def _handle_battle_message(self, split_messages: list[list[str]]) -> None:
        room = split_messages[0][0] if split_messages and split_messages[0] else ""
        if room.startswith(">battle-"):
            tag = room[1:]
            battle = self.server_battles.get(tag)
            if battle is None:
                battle = self.server_battles[tag] = ServerBattle(tag)
            battle.feed(split_messages[1:])
        await super()._handle_battle_message(split_messages)

    def choose_move(self, battle: Any) -> BattleOrder:
        """The policy's action for the current request, as a Showdown choice."""
        tracked = self.server_battles[battle.battle_tag]
        request = tracked.request
        if tracked.retry_default or request is None:
            # A refused choice is answered with Showdown's default, as the evaluator does.
            tracked.retry_default = False
            return DefaultBattleOrder()
        mask = legal_action_mask(request)
        if not mask.any():
            return DefaultBattleOrder()
        side = str(request["side"]["id"])
        view = PlayerView(side, request, tracked.state, mask, self.encoder)
        action = self.policy.act(view, self._rng)
        if not mask[action]:
            raise ValueError(f"policy {self.policy.name!r} chose illegal action {action}")
        return SingleBattleOrder(f"/choose {action_to_choice(action)}")

    def reset_battles(self) -> None:
        """Forget finished battles (poke-env's and this player's trackers)."""
        super().reset_battles()
        self.server_battles = {
            tag: tracked for tag, tracked in self.server_battles.items() if tag in self.battles
        }


def _generated_account(policy_name: str) -> AccountConfiguration:
    """A guest account named after the policy, with a random suffix (Showdown names are
    at most 18 characters and unique on a server)."""
    stem = "".join(c for c in policy_name if c.isalnum())[:9] or "policy"
    return AccountConfiguration(f"pt{stem} {secrets.token_hex(3)}", None)
