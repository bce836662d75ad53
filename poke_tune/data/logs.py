"""Logged battles parsed from their JSON: a server's `logBattle` output or a replay.

A server log (`*.log.json`) holds `inputLog` (a list of lines), `log` (the exact-HP
spectator log), `roomid`, `format`, `p1rating`/`p2rating`; a replay (the replay site's
JSON) holds `inputlog` and `log` as strings, `id`, `formatid`, `rating`. Every field is
checked for its type before it is used, so any JSON at all becomes a `LoggedBattle` or a
`Refusal` naming the field and what was expected; nothing a stranger writes raises.

A battle's identity (`LoggedBattle.identity`) is what was played: the parsed `>start`
options, both players' seeds and the choices (spaces normalised), not the text's spacing
or the players' names, so the same battle re-spaced or renamed is still one battle.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from poke_tune.data.sources import CORRUPT, RawBattle, Refusal
from poke_tune.sim.battle_records import SIDES, check_battle_format
from poke_tune.sim.replay import LogView, ReplayError, parse_input_log

__all__ = [
    "MALFORMED",
    "NO_GENERATED_TEAMS",
    "NO_INPUT_LOG",
    "LoggedBattle",
    "parse_battle",
]

MALFORMED = "malformed"
NO_INPUT_LOG = "no input log"
NO_GENERATED_TEAMS = "format without generated teams"

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,119}$")
_FORMAT_ID = re.compile(r"^[a-z0-9]{1,60}$")


@dataclass(frozen=True)
class LoggedBattle:
    """One battle as read from a source, before re-simulation (names in memory only)."""

    source: str  # display path (`names.display_path`), `:LINE` in a JSONL file
    battle_id: str
    battle_format: str
    input_log: tuple[str, ...]
    log: tuple[str, ...]  # the recorded spectator log
    view: LogView  # which copy of `|split|` sections `log` holds
    rating: float | None
    names: dict[str, str]  # side -> player name, as logged (never written)
    identity: bytes  # what was played (see the module docstring)


class _Malformed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _malformed(field: str, expected: str, value: object) -> _Malformed:
    got = "nothing" if value is None else type(value).__name__
    return _Malformed(MALFORMED, f"field {field!r}: expected {expected}, got {got}")


def _strings(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        raise _malformed(field, "a list of strings", value)
    return tuple(value)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _malformed(field, "a string", value)
    return value


def _rating(value: object, field: str) -> float | None:
    """A server log's rating object (`{"elo": ...}`) or a replay's number."""
    if isinstance(value, dict):
        value = value.get("elo")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(field, "a number", value)
    rating = float(value)
    if not math.isfinite(rating) or abs(rating) > 1e6:
        raise _Malformed(MALFORMED, f"field {field!r}: rating {rating:.6g} out of range")
    return rating


def _battle_id(value: object, field: str, where: str) -> str:
    if value is None or value == "":
        return where
    text = _text(value, field).removeprefix("battle-")
    if not _ID.match(text):
        raise _Malformed(MALFORMED, f"field {field!r}: not a room or replay id")
    return text


def _options(text: str, command: str, number: int) -> dict[str, Any]:
    """The JSON object of an input log's `>start` or `>player` line."""
    try:
        options = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise _Malformed(MALFORMED, f"input log line {number}: {command}: {error}") from None
    if not isinstance(options, dict):
        raise _malformed(f"input log line {number} ({command} options)", "a JSON object", options)
    return options


def _played(input_log: tuple[str, ...]) -> tuple[str, dict[str, str], bytes]:
    """(format, side -> name, identity) of an input log; raises `_Malformed`."""
    try:
        parsed = parse_input_log(input_log)
    except ReplayError as error:
        raise _Malformed(MALFORMED, f"field 'inputLog': {error}") from None
    start = _options(parsed.commands[0][len(">start ") :], ">start", 1)
    battle_format = start.get("formatid")
    if not isinstance(battle_format, str) or not _FORMAT_ID.match(battle_format):
        raise _malformed("input log line 1 (>start formatid)", "a format id", battle_format)
    names: dict[str, str] = {}
    seeds: dict[str, Any] = {}
    for number, line in enumerate(input_log, 1):
        if not line.startswith(">player "):
            continue
        side, _, text = line[len(">player ") :].partition(" ")
        options = _options(text, ">player", number)
        if side not in SIDES or side in names:
            raise _Malformed(MALFORMED, f"input log line {number}: >player {side[:10]!r}")
        name = options.get("name", side)
        if not isinstance(name, str):
            raise _malformed(f"input log line {number} (>player name)", "a string", name)
        names[side] = name
        seeds[side] = options.get("seed")
    if set(names) != set(SIDES):
        raise _Malformed(MALFORMED, "field 'inputLog': a `>player` line for p1 and p2 expected")
    played = {
        "start": start,
        "seeds": seeds,
        "choices": {side: [" ".join(c.split()) for c in parsed.choices[side]] for side in SIDES},
        "end": " ".join((parsed.end or "").split()),
    }
    try:
        canonical = orjson.dumps(played, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as error:
        raise _Malformed(MALFORMED, f"field 'inputLog': {error}") from None
    return battle_format, names, hashlib.blake2b(canonical, digest_size=16).digest()


def _from_record(record: object, where: str) -> LoggedBattle | Refusal:
    if not isinstance(record, dict):
        raise _malformed("(the battle)", "a JSON object", record)
    view: LogView
    if "inputLog" in record or "roomid" in record:
        if record.get("inputLog") in (None, [], ""):
            return Refusal(where, NO_INPUT_LOG, f"{where}: field 'inputLog' is empty or missing")
        input_log = _strings(record.get("inputLog"), "inputLog")
        log = _strings(record.get("log"), "log")
        battle_id = _battle_id(record.get("roomid"), "roomid", where)
        ratings = [_rating(record.get(f"{s}rating"), f"{s}rating") for s in SIDES]
        rating = max((r for r in ratings if r is not None), default=None)
        view = "omniscient"
    elif "inputlog" in record or "log" in record:
        if record.get("inputlog") in (None, ""):
            return Refusal(
                where,
                NO_INPUT_LOG,
                f"{where}: field 'inputlog' is empty or missing (the replay site keeps it "
                "only for random-battle formats)",
            )
        input_log = tuple(_text(record.get("inputlog"), "inputlog").splitlines())
        log = tuple(_text(record.get("log"), "log").split("\n"))
        battle_id = _battle_id(record.get("id"), "id", where)
        rating = _rating(record.get("rating"), "rating")
        view = "public"
    else:
        raise _Malformed(
            MALFORMED,
            "neither a server log (fields 'inputLog', 'log', 'roomid') nor a replay "
            "(fields 'inputlog', 'log', 'id')",
        )
    battle_format, names, identity = _played(input_log)
    try:
        check_battle_format(battle_format)
    except ValueError as error:
        return Refusal(where, NO_GENERATED_TEAMS, f"{where}: {battle_id}: {error}")
    return LoggedBattle(
        source=where,
        battle_id=battle_id,
        battle_format=battle_format,
        input_log=input_log,
        log=log,
        view=view,
        rating=rating,
        names=names,
        identity=identity,
    )


def parse_battle(raw: RawBattle) -> LoggedBattle | Refusal:
    """The battle in `raw`'s JSON, or a `Refusal` saying what is wrong with it. Never
    raises: whatever else goes wrong is refused as malformed, with the error's kind."""
    where = raw.source
    try:
        record = orjson.loads(raw.data)
    except orjson.JSONDecodeError as error:
        return Refusal(where, CORRUPT, f"{where}: {error}")
    try:
        return _from_record(record, where)
    except _Malformed as problem:
        return Refusal(where, problem.reason, f"{where}: {problem.detail}")
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as error:
        return Refusal(where, MALFORMED, f"{where}: {type(error).__name__} while reading it")
