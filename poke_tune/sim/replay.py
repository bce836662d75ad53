"""Re-simulate recorded battles from their input logs, and rebuild both players' decisions.

A Showdown input log (a server's `inputLog`, a replay's `inputlog`, `BattleResult.input_log`)
holds the `>start` seed, both `>player` seeds and every committed choice in canonical form
(`move MOVEID [terastallize]`, `switch POSITION`, `team N`, `pass`; rejected choices are not
logged). Fed line by line through the same `BattleStream` a battle is played on, it replays
the battle exactly, requests included. At each request of each side the observation, mask
and HP balance come from the same code `battles.py` records with (`ObservationEncoder`,
`legal_action_mask`, `hp_balance`), and the action from the logged choice, mapped onto the
request's slots (`choice_to_action`).

Replays run on the pool's workers (`SimulatorPool.run`): the whole log goes in one write
(`#replay`, see `js/worker.js`), so a replay costs no round trips. `spectator_log` and
`first_divergence` check the re-simulated log against the recorded one (`poke_tune.data.
importer` refuses a battle that diverges).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from poke_tune.sim.actions import ACTION_LAYOUT, NUM_SWITCHES, action_index, legal_action_mask
from poke_tune.sim.battle_records import SIDES, Trajectory, hp_balance
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import to_id
from poke_tune.sim.encoding import ObservationEncoder
from poke_tune.sim.state import BattleState

__all__ = [
    "SERVER_ONLY_LINES",
    "ReplayError",
    "ReplayInput",
    "ReplayResult",
    "choice_to_action",
    "first_divergence",
    "normalise_log",
    "parse_input_log",
    "replay_battles",
    "spectator_log",
]

SERVER_ONLY_LINES = frozenset(
    {
        # Who joined, left or was renamed; chat; the server's timestamps and HTML.
        "j", "J", "join", "l", "L", "leave", "n", "N", "name", "c", "c:", "chat",
        "t:", "raw", "html", "uhtml", "uhtmlchange", "bigerror", "title",
        # The battle timer ("|inactive|NAME has 120 seconds left.") and rating updates.
        "inactive", "inactiveoff", "rated", "message", "notify",
        # Player lines carry names and avatars the server rewrites; names never count.
        "player", "badge", "debug", "unlink", "hidelines", "timestamp",
    }
)  # fmt: skip
"""Protocol kinds `normalise_log` drops: lines a server adds to a battle's log. Measured on
the local server's `.log.json` files: `j`, `t:`, `player`, plus the others a public server
adds (chat, timer, rating, HTML)."""

LogView = Literal["omniscient", "public"]

_CHOICE_SIDES = {f">{side} ": side for side in SIDES}
_BATTLE_END_COMMANDS = (">forcewin", ">forcelose", ">forcetie", ">tiebreak")


class ReplayError(ValueError):
    """A logged choice that cannot be an action of `ACTION_LAYOUT`, or a broken input log."""


@dataclass(frozen=True)
class ReplayInput:
    """One battle to re-simulate.

    Args:
        key: the caller's name for the battle, returned in its `ReplayResult`.
        input_log: the input log's lines (`>start ...`, `>player ...`, `>p1 ...`, ...).
        record: which sides' decisions to rebuild (p1, p2).
    """

    key: str
    battle_format: str
    input_log: tuple[str, ...]
    record: tuple[bool, bool] = (True, True)


@dataclass
class ReplayResult:
    """A re-simulated battle: its log, how it ended and both sides' decisions."""

    key: str
    winner: str | None = None  # "p1", "p2"; None for a tie or a battle cut off
    turns: int = 0
    truncated: bool = False  # ended by `>forcetie`: cut off, not a terminal
    forfeited: str | None = None  # the side that left (`>forcelose`/`>forcewin`), if one did
    log: list[str] = field(default_factory=list)  # update lines, `|split|` sections kept
    trajectories: dict[str, Trajectory] = field(default_factory=dict)
    attempts: int = 1
    error: str | None = None  # why it could not be re-simulated (then nothing else counts)
    error_at: int | None = None  # len(log) when the error happened: the log before it is sound


@dataclass(frozen=True)
class _ParsedLog:
    commands: tuple[str, ...]  # what is written to the simulator
    choices: dict[str, tuple[str, ...]]  # each side's committed choices, in order
    names: dict[str, str]  # player name -> side (names stay in memory, see importer)
    end: str | None  # the battle-ending command, if the log has one


def parse_input_log(lines: Sequence[str]) -> _ParsedLog:
    """Split an input log into what to write, each side's choices and the player names.

    Chat lines (`>chat`) are left out: they change nothing in the battle, and chat is never
    kept. Raises `ReplayError` for a log without `>start` or with unknown commands.
    """
    commands: list[str] = []
    choices: dict[str, list[str]] = {side: [] for side in SIDES}
    names: dict[str, str] = {}
    end = None
    for number, line in enumerate(lines, 1):
        if not line.startswith(">") or "\n" in line or "\f" in line:
            raise ReplayError(f"input log line {number}: not a simulator command: {line[:60]!r}")
        if line.startswith((">chat ", ">chat-inputlogonly ", ">version")):
            continue
        if line.startswith(">player "):
            side, _, options = line[len(">player ") :].partition(" ")
            try:
                parsed = orjson.loads(options)
            except orjson.JSONDecodeError as error:
                raise ReplayError(f"input log line {number}: {error}") from None
            if not isinstance(parsed, dict):
                raise ReplayError(f"input log line {number}: `>player` options not an object")
            names.setdefault(str(parsed.get("name", side)), side)
        elif line[:4] in _CHOICE_SIDES:
            choices[_CHOICE_SIDES[line[:4]]].append(line[4:])
        elif line.startswith(_BATTLE_END_COMMANDS):
            end = line
        elif not line.startswith((">start ", ">reseed ")):
            raise ReplayError(f"input log line {number}: unsupported command {line[:60]!r}")
        commands.append(line)
    if not commands or not commands[0].startswith(">start "):
        raise ReplayError("the input log has no `>start` line")
    return _ParsedLog(tuple(commands), {s: tuple(c) for s, c in choices.items()}, names, end)


def choice_to_action(choice: str, request: dict[str, Any]) -> int:
    """The flat action a canonical logged choice took, in the slots of the request it
    answered: `move MOVEID` is the active's move slot holding MOVEID (` terastallize`: the
    tera variant), `switch POSITION` the team slot POSITION - 1."""
    kind, _, rest = choice.partition(" ")
    words = rest.split()
    if "," in choice or not words:
        raise ReplayError(f"choice {choice!r} is not a singles choice of {ACTION_LAYOUT}")
    if kind == "switch":
        position = int(words[0]) if words[0].isascii() and words[0].isdigit() else 0
        action = action_index(1, position - 1) if 1 <= position <= NUM_SWITCHES else -1
    elif kind == "move":
        extras = words[1:]
        if extras not in ([], ["terastallize"]):
            raise ReplayError(f"choice {choice!r}: {' '.join(extras)} is not in {ACTION_LAYOUT}")
        action = action_index(2 if extras else 0, _move_slot(words[0], request, choice))
    else:
        raise ReplayError(f"choice {choice!r} is not an action of {ACTION_LAYOUT}")
    if action < 0 or not legal_action_mask(request)[action]:
        raise ReplayError(f"logged choice {choice!r} is not legal in the request it answered")
    return action


def _move_slot(move_id: str, request: dict[str, Any], choice: str) -> int:
    moves = (request.get("active") or [{}])[0].get("moves", [])
    for match in (
        lambda move: move.get("id") == move_id,
        lambda move: to_id(str(move.get("move", ""))) == move_id,
        # Hidden Power: the request names the type (hiddenpowerfire60), the log may not.
        lambda move: (
            move_id.startswith("hiddenpower") and str(move.get("id", "")).startswith("hiddenpower")
        ),
    ):
        for slot, move in enumerate(moves[:4]):
            if match(move):
                return slot
    raise ReplayError(f"logged choice {choice!r}: no such move in the request it answered")


def spectator_log(lines: Iterable[str], view: LogView) -> list[str]:
    """The log as one viewer reads it: each `|split|` section resolved to its exact-HP copy
    (`omniscient`, what a server's `.log.json` keeps) or its public copy (`public`, what a
    replay's `log` keeps)."""
    out: list[str] = []
    skip = 0
    keep_first = view == "omniscient"
    for line in lines:
        if skip:
            skip -= 1
            # skip 1 left: the exact-HP copy; 0 left: the public copy
            if skip == (1 if keep_first else 0):
                out.append(line)
            continue
        if line.startswith("|split|"):
            skip = 2
            continue
        out.append(line)
    return out


def normalise_log(lines: Iterable[str]) -> list[str]:
    """A log with the server's own lines dropped (`SERVER_ONLY_LINES`, blank lines), so a
    server's log compares with a re-simulation (which runs under the same player names)."""
    out: list[str] = []
    for line in lines:
        if not line.startswith("|") or line == "|":
            continue
        kind = line.split("|", 2)[1]
        if kind not in SERVER_ONLY_LINES:
            out.append(line)
    return out


def first_divergence(recorded: Sequence[str], resimulated: Sequence[str]) -> str | None:
    """Where two normalised logs first differ (None when they are the same), as a reason."""
    for number, (mine, theirs) in enumerate(zip(recorded, resimulated, strict=False), 1):
        if mine != theirs:
            return f"line {number}: recorded {mine[:80]!r}, re-simulated {theirs[:80]!r}"
    if len(recorded) != len(resimulated):
        shorter, longer = sorted((recorded, resimulated), key=len)
        which = "recorded" if longer is recorded else "re-simulated"
        return (
            f"line {len(shorter) + 1}: only the {which} log goes on, {longer[len(shorter)][:80]!r}"
        )
    return None


class _Replay:
    """The Python half of one re-simulation: state tracking and decision rebuilding."""

    finished = False

    def __init__(self, item: ReplayInput, encoder: ObservationEncoder, attempt: int) -> None:
        self._item = item
        self.encoder = encoder
        self.state = BattleState()
        self._result = ReplayResult(key=item.key, attempts=attempt)
        self.parsed: _ParsedLog | None = None
        self.queues: dict[str, deque[str]] = {}
        # side -> (observation, mask) of its last unanswered request: s' if cut off there
        self.pending: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.ended = False
        try:
            self.parsed = parse_input_log(item.input_log)
        except ReplayError as error:
            self._fail(str(error))
            return
        self.queues = {side: deque(self.parsed.choices[side]) for side in SIDES}
        for side, record in zip(SIDES, item.record, strict=True):
            if record:
                self._result.trajectories[side] = Trajectory(side, "logged")

    @property
    def item(self) -> ReplayInput:
        return self._item

    @property
    def result(self) -> ReplayResult:
        return self._result

    def start_commands(self) -> list[str]:
        if self.parsed is None:  # nothing to simulate: ends the stream at once
            return ["#replay "]
        first, *rest = self.parsed.commands
        return [f"#replay {first}", *rest]

    def _fail(self, reason: str) -> None:
        if self._result.error is None:
            self._result.error = reason
            self._result.error_at = len(self._result.log)

    def on_chunk(self, chunk: str) -> list[str]:
        kind, _, body = chunk.partition("\n")
        if kind == "update":
            self.state.apply(body)
            self._result.log.extend(ln for ln in body.split("\n") if not ln.startswith("|t:|"))
        elif kind == "sideupdate":
            side, _, message = body.partition("\n")
            if message.startswith("|request|"):
                self._on_request(side, orjson.loads(message[len("|request|") :]))
            elif message.startswith("|error|"):
                self._fail(f"the simulator refused a logged choice of {side}: {message[7:]}")
        elif kind == "end":
            self._on_end(orjson.loads(body))
        elif kind == "error":
            message = body.strip().splitlines()[0] if body.strip() else "no message"
            self._fail(f"the simulator refused the input log: {message}")
        elif kind == "closed":
            if not self.ended:
                self._fail(f"the input log stops before the battle ends (turn {self.state.turn})")
            self.finished = True
        return []

    def _on_request(self, side: str, request: dict[str, Any]) -> None:
        queue = self.queues[side]
        if request.get("teamPreview"):
            if queue and queue[0].startswith("team"):
                queue.popleft()
            return
        mask = legal_action_mask(request)
        trajectory = self._result.trajectories.get(side)
        if not queue:  # unanswered: s' if the battle is cut off here
            if trajectory is not None:
                self.pending[side] = (self.encoder.encode(side, request, self.state), mask)
            return
        if not mask.any():  # a `wait` request: the other side is choosing
            return
        choice = queue.popleft()
        if choice == "pass":
            return
        try:
            action = choice_to_action(choice, request)
        except ValueError as error:  # a ReplayError, or any choice a stranger wrote
            self._fail(f"{side}, turn {self.state.turn}: {error}")
            return
        if trajectory is not None:
            trajectory.observations.append(self.encoder.encode(side, request, self.state))
            trajectory.masks.append(mask)
            trajectory.actions.append(action)
            trajectory.hp_balance.append(hp_balance(self.state, side))

    def _on_end(self, summary: dict[str, Any]) -> None:
        assert self.parsed is not None
        self.ended = True
        end = self.parsed.end or ""
        result = self._result
        result.winner = _winner_side(summary, end)
        if summary.get("winner") and result.winner is None:
            self._fail("both players have one name and the end does not say which side won")
        result.turns = int(summary.get("turns", self.state.turn))
        result.truncated = end.startswith(">forcetie")
        if end.startswith((">forcelose", ">forcewin")):
            named = end.split(" ", 1)[1].strip() if " " in end else ""
            leaver = named if named in SIDES else self.parsed.names.get(named)
            if end.startswith(">forcewin"):  # the named side won: the other one left
                leaver = next((other for other in SIDES if leaver and other != leaver), None)
            result.forfeited = leaver
        for side, trajectory in result.trajectories.items():
            if result.winner is not None:
                trajectory.outcome = 1.0 if result.winner == side else -1.0
            trajectory.final_hp_balance = hp_balance(self.state, side)
            if result.truncated and side in self.pending:
                trajectory.final_observation, trajectory.final_mask = self.pending[side]


def _winner_side(summary: dict[str, Any], end: str) -> str | None:
    """The side that won, by side, never by name: two players may share a name. The
    simulator's end summary names the winner and both sides; where the names are the same,
    the side with Pokemon left (or the side a `>forcewin`/`>forcelose` names) won."""
    winner = summary.get("winner")
    if not winner:
        return None
    named = [side for side in SIDES if summary.get(side) == winner]
    if len(named) == 1:
        return named[0]
    command, _, target = end.partition(" ")
    if target.strip() in SIDES and command in (">forcewin", ">forcelose"):
        won = (
            target.strip()
            if command == ">forcewin"
            else next(side for side in SIDES if side != target.strip())
        )
        return won
    score = summary.get("score")
    if isinstance(score, list) and len(score) == 2:
        left = [side for side, count in zip(SIDES, score, strict=True) if count]
        if len(left) == 1:
            return left[0]
    return None


def replay_battles(pool: SimulatorPool, inputs: Iterable[ReplayInput]) -> Iterator[ReplayResult]:
    """Re-simulate every input on the pool's workers; yields results in completion order.
    A battle that cannot be re-simulated has its `error` set; the others go on."""

    def open_replay(item: ReplayInput, attempt: int) -> _Replay:
        return _Replay(item, pool.encoder(item.battle_format), attempt)

    return pool.run(inputs, open_replay)
