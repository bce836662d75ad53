"""Battles on a Showdown server through poke-env, with faults reported, never miscounted.

`play_match` runs one of poke-env's own ways of finding battles (`battle_against` an
opponent player, `accept_challenges`, `ladder`) with players from `factory.py`, and
watches it:

- a battle that receives nothing for `battle_timeout_s` is forfeited and reported as
  failed (never as a loss);
- a dropped websocket (the server died, the network went) stops the match: battles in
  flight are reported as failed, the finished ones keep their outcome;
- battles never started are simply not in the result.

Outcomes come from the server's `|win|`/`|tie|` lines as poke-env records them; the win
rate counts finished battles only, with a Wilson 95% interval as `poke-tune eval` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from poke_env.concurrency import handle_threaded_coroutines
from poke_env.player import Player

from poke_tune.eval.winrate import wilson_interval
from poke_tune.play.factory import player_name
from poke_tune.play.player import PolicyPlayer

__all__ = ["BattleOutcome", "MatchResult", "play_match"]

_logger = logging.getLogger(__name__)

Outcome = Literal["win", "loss", "tie", "failed"]


@dataclass(frozen=True)
class BattleOutcome:
    """How one battle on the server ended, seen from the evaluated player."""

    tag: str
    outcome: Outcome
    turns: int
    invalid_choices: int
    error: str | None = None


@dataclass(frozen=True)
class MatchResult:
    """Battles played on a server; failed battles are kept apart from the win rate."""

    policy: str
    opponent: str
    server: str
    requested: int
    outcomes: tuple[BattleOutcome, ...]
    seconds: float
    error: str | None = None
    """Why the match stopped early (a dropped connection), if it did."""

    def _count(self, outcome: Outcome) -> int:
        return sum(o.outcome == outcome for o in self.outcomes)

    @property
    def wins(self) -> int:
        return self._count("win")

    @property
    def losses(self) -> int:
        return self._count("loss")

    @property
    def ties(self) -> int:
        return self._count("tie")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def battles(self) -> int:
        """Finished battles (the win rate's denominator)."""
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float:
        return self.wins / self.battles if self.battles else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins, self.battles)

    @property
    def invalid_choices(self) -> int:
        return sum(o.invalid_choices for o in self.outcomes)

    @property
    def mean_turns(self) -> float:
        finished = [o.turns for o in self.outcomes if o.outcome != "failed"]
        return sum(finished) / len(finished) if finished else 0.0

    @property
    def battles_per_second(self) -> float:
        return self.battles / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "policy": self.policy,
            "opponent": self.opponent,
            "server": self.server,
            "requested": self.requested,
            "battles": self.battles,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "failed": self.failed,
            "win_rate": self.win_rate,
            "ci_low": low,
            "ci_high": high,
            "mean_turns": self.mean_turns,
            "invalid_choices": self.invalid_choices,
            "seconds": self.seconds,
            "battles_per_second": self.battles_per_second,
            "error": self.error,
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def _connection_lost(player: Player) -> bool:
    """Whether the player's websocket listener has ended (closed or never connected)."""
    listener = getattr(player.ps_client, "_listening_coroutine", None)
    return listener is not None and listener.done()


class _Watch:
    """Follows a running match: finished battles, hung battles, the connection."""

    def __init__(
        self,
        player: PolicyPlayer,
        opponent: Player | None,
        battle_timeout_s: float,
        on_result: Callable[[BattleOutcome], None] | None,
    ) -> None:
        self.player = player
        self.opponent = opponent
        self.battle_timeout_s = battle_timeout_s
        self.on_result = on_result
        self.outcomes: dict[str, BattleOutcome] = {}
        self.forfeited: set[str] = set()
        self.error: str | None = None

    def _invalid(self, tag: str) -> int:
        count = 0
        for player in (self.player, self.opponent):
            if isinstance(player, PolicyPlayer) and tag in player.server_battles:
                count += player.server_battles[tag].invalid_choices
        return count

    def _record(self, tag: str, outcome: Outcome, error: str | None = None) -> None:
        tracked = self.player.server_battles.get(tag)
        turns = tracked.state.turn if tracked is not None else 0
        record = BattleOutcome(tag, outcome, turns, self._invalid(tag), error)
        self.outcomes[tag] = record
        if self.on_result is not None:
            self.on_result(record)

    async def step(self) -> bool:
        """Record what finished; forfeit hung battles. False once the connection is lost."""
        now = time.monotonic()
        for tag, battle in list(self.player.battles.items()):
            if tag in self.outcomes:
                continue
            if battle.finished:
                if tag in self.forfeited:
                    self._record(
                        tag,
                        "failed",
                        f"no message for {self.battle_timeout_s:.0f} s: forfeited",
                    )
                else:
                    self._record(tag, "win" if battle.won else "loss" if battle.lost else "tie")
                continue
            tracked = self.player.server_battles.get(tag)
            idle = now - tracked.last_message if tracked is not None else 0.0
            if tag not in self.forfeited and idle > self.battle_timeout_s:
                _logger.warning("battle %s: nothing for %.0f s; forfeiting it", tag, idle)
                self.forfeited.add(tag)
                try:
                    forfeit = self.player.ps_client.send_message("/forfeit", tag)
                    await handle_threaded_coroutines(forfeit, self.player.ps_client.loop)
                except Exception as error:  # a dead socket: the connection check reports it
                    _logger.warning("battle %s: could not forfeit (%s)", tag, error)
        players = [p for p in (self.player, self.opponent) if p is not None]
        if any(_connection_lost(p) for p in players):
            self.error = "the connection to the server was lost"
            return False
        return True

    def finish(self) -> None:
        """Report every battle still unfinished as failed."""
        for tag in list(self.player.battles):
            if tag not in self.outcomes:
                reason = self.error or "the match stopped before the battle ended"
                if tag in self.forfeited:
                    reason = f"no message for {self.battle_timeout_s:.0f} s: forfeited"
                self._record(tag, "failed", reason)


async def play_match(
    player: PolicyPlayer,
    *,
    opponent: Player | None = None,
    battles: int,
    mode: Literal["against", "accept", "ladder"] = "against",
    challenger: str | None = None,
    battle_timeout_s: float = 120.0,
    start_timeout_s: float | None = 60.0,
    on_result: Callable[[BattleOutcome], None] | None = None,
    server: str = "",
) -> MatchResult:
    """Play `battles` battles with poke-env and report every one of them.

    Args:
        mode: `against` (`opponent` required), `accept` (challenges from `challenger`, or
            anyone) or `ladder`.
        battle_timeout_s: a battle with no message for this long is forfeited (failed).
        start_timeout_s: give up when no battle has started this long after the call
            (None: wait for challengers forever).
    """
    if battles < 1:
        raise ValueError(f"battles must be >= 1, got {battles}")
    if mode == "against":
        if opponent is None:
            raise ValueError("mode 'against' needs an opponent player")
        work = player.battle_against(opponent, n_battles=battles)
    elif mode == "accept":
        work = player.accept_challenges(challenger, battles)
    else:
        work = player.ladder(battles)
    watch = _Watch(player, opponent, battle_timeout_s, on_result)
    start = time.perf_counter()
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not await watch.step() or len(watch.outcomes) >= battles:
                break
            waited = time.perf_counter() - start
            if start_timeout_s is not None and not player.battles and waited > start_timeout_s:
                watch.error = f"no battle started within {start_timeout_s:.0f} s"
                break
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        watch.error = watch.error or f"poke-env stopped: {task.exception()}"
    await watch.step()
    watch.finish()
    seconds = time.perf_counter() - start
    opponent_name = (
        player_name(opponent) if opponent is not None else challenger or f"{mode} opponents"
    )
    return MatchResult(
        policy=player.policy.name,
        opponent=opponent_name,
        server=server,
        requested=battles,
        outcomes=tuple(watch.outcomes.values()),
        seconds=seconds,
        error=watch.error,
    )
