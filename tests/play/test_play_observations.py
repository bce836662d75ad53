"""The server player decides from exactly what the in-process evaluator computes.

One recorded in-process battle (the worker's raw chunks) is turned into what a Showdown
server sends each player (its own `|split|` copy, no marker, `|request|` with an rqid) and
fed through `PolicyPlayer`'s message handling: at every decision the observation, the
legal mask and the choice are those of the evaluator's path (`sim/battles.py`).
No server, no network: fast.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from poke_env.concurrency import POKE_LOOP
from poke_env.ps_client import AccountConfiguration

from poke_tune.play.player import PolicyPlayer, ServerBattle
from poke_tune.sim import battles as battles_module
from poke_tune.sim.actions import action_to_choice
from poke_tune.sim.battle_records import BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import PlayerView, Policy, make_policy

ROOM = ">battle-gen9randombattle-1"


@dataclass
class Recording:
    """A policy that records what it was shown and what it chose."""

    base: Policy
    decisions: list[tuple[str, np.ndarray, np.ndarray, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.base.name

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        action = self.base.act(view, rng)
        self.decisions.append((view.side, view.observation.copy(), view.mask.copy(), action))
        return action


@dataclass
class Replay:
    """Plays back recorded actions and records what it was shown."""

    actions: list[int]
    decisions: list[tuple[str, np.ndarray, np.ndarray, int]] = field(default_factory=list)
    name: str = "replay"

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        action = self.actions[len(self.decisions)]
        self.decisions.append((view.side, view.observation.copy(), view.mask.copy(), action))
        return action


def _record_battle(
    pool: SimulatorPool, monkeypatch: pytest.MonkeyPatch, spec: BattleSpec
) -> list[str]:
    chunks: list[str] = []
    original = battles_module._Battle.on_chunk

    def on_chunk(self: Any, chunk: str) -> list[str]:
        chunks.append(chunk)
        return original(self, chunk)

    monkeypatch.setattr(battles_module._Battle, "on_chunk", on_chunk)
    (result,) = pool.play([spec])
    monkeypatch.undo()
    assert result.error is None and result.winner is not None
    return chunks


def _for_player(body: str, side: str) -> list[str]:
    """A battle-log update as the server sends it to `side`: its own copy of each
    `|split|` section (exact HP), everyone else's public copy, no `|split|` line."""
    lines = body.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("|split|"):
            owner = lines[i].split("|")[2]
            out.append(lines[i + 1] if owner == side else lines[i + 2])
            i += 3
        else:
            out.append(lines[i])
            i += 1
    return out


def server_messages(chunks: list[str], side: str) -> list[str]:
    """The websocket messages a Showdown server sends `side` for the recorded battle."""
    messages = [f"{ROOM}\n|init|battle\n|title|p1 vs. p2\n|j|☆{side}"]
    rqid = 0
    for chunk in chunks:
        kind, _, body = chunk.partition("\n")
        if kind == "update":
            messages.append("\n".join([ROOM, *_for_player(body, side)]))
        elif kind == "sideupdate":
            owner, _, message = body.partition("\n")
            if owner == side and message.startswith("|request|"):
                rqid += 1
                request = orjson.loads(message[len("|request|") :])
                request["rqid"] = rqid  # the server numbers its requests
                messages.append(f"{ROOM}\n|request|{orjson.dumps(request).decode()}")
    return messages


def _play_through_player(messages: list[str], side: str, policy: Policy) -> list[str]:
    player = PolicyPlayer(
        policy,
        seed=0,
        account_configuration=AccountConfiguration(side, None),
        start_listening=False,
    )
    sent: list[str] = []

    async def send_message(message: str, room: str = "", message_2: str | None = None) -> None:
        sent.append(message)

    player.ps_client.send_message = send_message  # type: ignore[method-assign]

    async def feed() -> None:
        for message in messages:
            await player._handle_battle_message([m.split("|") for m in message.split("\n")])

    asyncio.run_coroutine_threadsafe(feed(), POKE_LOOP).result(timeout=60)
    (battle,) = player.battles.values()
    assert battle.finished
    return [m for m in sent if m.startswith("/choose")]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_player_sees_what_the_evaluator_sees(
    pool: SimulatorPool, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    # heuristic switches and terastallizes; max-damage attacks: both kinds of choices.
    in_process = {
        "p1": Recording(make_policy("heuristic")),
        "p2": Recording(make_policy("max-damage")),
    }
    spec = BattleSpec(index=index, p1=in_process["p1"], p2=in_process["p2"], seed=17)
    chunks = _record_battle(pool, monkeypatch, spec)
    seen: set[str] = set()
    for side, recorded in in_process.items():
        through_server = Replay([d[3] for d in recorded.decisions])
        choices = _play_through_player(server_messages(chunks, side), side, through_server)
        expected = recorded.decisions
        assert len(through_server.decisions) == len(expected) > 0
        for step, (got, want) in enumerate(zip(through_server.decisions, expected, strict=True)):
            assert got[0] == want[0] == side
            assert np.array_equal(got[1], want[1]), f"{side} decision {step}: observation differs"
            assert np.array_equal(got[2], want[2]), f"{side} decision {step}: mask differs"
        # The same actions go out in Showdown's protocol, by request slot.
        assert choices == [f"/choose {action_to_choice(d[3])}" for d in expected]
        kinds = {c.split()[1] for c in choices} | {"tera" for c in choices if "terastallize" in c}
        seen.update(kinds)
    assert {"move", "switch"} <= seen


def test_a_refused_choice_is_answered_with_default() -> None:
    player = PolicyPlayer("random", start_listening=False)
    messages = [
        f"{ROOM}\n|init|battle",
        f"{ROOM}\n|error|[Invalid choice] Can't move: Pikachu's Thunderbolt is disabled",
    ]
    tracked = ServerBattle(ROOM[1:])
    for message in messages:
        tracked.feed([m.split("|") for m in message.split("\n")][1:])
    assert tracked.invalid_choices == 1 and tracked.retry_default
    player.server_battles[tracked.tag] = tracked
    assert player.choose_move(_Tagged(tracked.tag)).message == "/choose default"
    assert not tracked.retry_default


@dataclass
class _Tagged:
    battle_tag: str
