"""`poke-tune data import`: logged battles (server logs, replays) in as trajectory files.

Sources: a server's battle log (`*.log.json`, the server's `logBattle` output: `inputLog`,
`log` with exact HP, `roomid`, `p1rating`/`p2rating`), a folder of them (searched
recursively), a replay JSON file as the replay site serves it (`id`, `formatid`, `log` with
public HP, `inputlog`, `rating`), or a JSONL / `.jsonl.gz` file of either, one per line.

Each battle is re-simulated from its input log on the simulator workers
(`sim.replay.replay_battles`): both players' requests come back, so both sides'
trajectories are rebuilt with the tracker and encoder `generate` records with, the actions
from the logged choices. A battle is imported only if the re-simulated log matches the
recorded one line for line (`normalise_log` drops what only a server adds); every other
battle is refused with a reason (`Refusal`), and one bad battle never stops the rest.

Privacy: player names are never written. Each appears only as a keyed hash
(`name_hash`: HMAC-SHA256 of Showdown's user id, key from POKE_TUNE_NAME_KEY or a secret
generated once in the cache), so one player's battles can still be grouped; chat is never
read into the output (the spectator log is only compared, never stored).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poke_tune.data.generate import trajectory_record
from poke_tune.data.jsonl import TrajectoryWriter
from poke_tune.data.records import DatasetHeader, Provenance
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS
from poke_tune.sim.battles import SimulatorPool, check_battle_format
from poke_tune.sim.dex import to_id
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.replay import (
    LogView,
    ReplayInput,
    ReplayResult,
    first_divergence,
    normalise_log,
    parse_input_log,
    replay_battles,
    spectator_log,
)
from poke_tune.sim.runtime import cache_dir, find_runtime

__all__ = [
    "NAME_KEY_ENV",
    "ImportSummary",
    "LoggedBattle",
    "NothingImportedError",
    "Refusal",
    "Sides",
    "import_battles",
    "name_hash",
    "read_logged_battles",
    "source_files",
    "sources_digest",
]

NAME_KEY_ENV = "POKE_TUNE_NAME_KEY"
"""Environment variable holding the key player names are hashed with (else a cache secret)."""

Sides = Literal["both", "winner", "p1", "p2"]

# Refusal reasons: the summary counts battles per reason.
CORRUPT = "truncated or corrupt JSON"
NO_INPUT_LOG = "no input log"
NO_GENERATED_TEAMS = "format without generated teams"
OTHER_FORMAT = "another format than the dataset's"
LOW_RATING = "rating below --min-rating"
REPEATED = "repeated battle"
DIVERGED = "diverges from its re-simulation"
NOT_REPLAYABLE = "cannot be re-simulated"


@dataclass(frozen=True)
class LoggedBattle:
    """One battle as read from a source, before re-simulation (names in memory only)."""

    source: str  # FILE, or FILE:LINE in a JSONL file
    battle_id: str
    battle_format: str
    input_log: tuple[str, ...]
    log: tuple[str, ...]  # the recorded spectator log
    view: LogView  # which copy of `|split|` sections `log` holds
    rating: float | None


@dataclass(frozen=True)
class Refusal:
    """A battle (or a whole file) not imported, and why."""

    source: str
    reason: str  # one of the reason constants: the summary counts by it
    detail: str


@dataclass(frozen=True)
class ImportSummary:
    """What an import read, wrote and refused."""

    path: Path
    read: int
    imported: int
    trajectories: int
    transitions: int
    refusals: tuple[Refusal, ...] = ()
    simulator_version: str = ""

    @property
    def refused(self) -> int:
        return len(self.refusals)

    def refused_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for refusal in self.refusals:
            counts[refusal.reason] = counts.get(refusal.reason, 0) + 1
        return counts


class NothingImportedError(ValueError):
    """No battle could be imported; `summary` says why (no file was written)."""

    def __init__(self, summary: ImportSummary) -> None:
        self.summary = summary
        reasons = ", ".join(f"{n} {why}" for why, n in summary.refused_by_reason().items())
        first = f"; first: {summary.refusals[0].detail}" if summary.refusals else ""
        super().__init__(
            f"no battle imported from {summary.read} read ({reasons or 'no battles found'}){first}"
        )


# -- privacy ---------------------------------------------------------------------------------


def _name_key() -> bytes:
    """The name-hashing key: POKE_TUNE_NAME_KEY, else a secret made once in the cache (so
    hashes agree across imports on one machine and mean nothing anywhere else)."""
    if os.environ.get(NAME_KEY_ENV):
        return os.environ[NAME_KEY_ENV].encode()
    path = cache_dir() / "import-name-key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def name_hash(name: str, key: bytes) -> str:
    """Keyed hash of a player's name (of its Showdown user id: case and spaces ignored)."""
    return hmac.new(key, to_id(name).encode(), hashlib.sha256).hexdigest()[:16]


# -- reading sources ---------------------------------------------------------------------------


def source_files(sources: Sequence[Path]) -> list[Path]:
    """The files the sources name: files as given, folders searched for `*.log.json`."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files.extend(sorted(source.rglob("*.log.json")))
        elif source.exists():
            files.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such file or folder")
    return files


def sources_digest(sources: Sequence[Path]) -> str:
    """A content hash of every file the sources name (a cache key for an import)."""
    digest = hashlib.blake2b(digest_size=16)
    for path in source_files(sources):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def _open_text(path: Path) -> Iterator[str]:
    with path.open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rt") if compressed else path.open() as file:
        yield from file


def read_logged_battles(sources: Sequence[Path]) -> Iterator[LoggedBattle | Refusal]:
    """Every battle the sources hold, in order, or a `Refusal` where one cannot be read."""
    for path in source_files(sources):
        if not _is_jsonl(path):
            try:
                text = path.read_text()
                yield _battle(json.loads(text), str(path))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                yield Refusal(str(path), CORRUPT, f"{path}: {error}")
            continue
        try:
            for number, line in enumerate(_open_text(path), 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    yield _battle(json.loads(line), where)
                except ValueError as error:
                    yield Refusal(where, CORRUPT, f"{where}: {error}")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as error:
            yield Refusal(str(path), CORRUPT, f"{path}: {error} (a truncated file?)")


def _field(record: dict[str, Any], name: str, kind: type) -> Any:
    value = record.get(name)
    if not isinstance(value, kind):
        got = "missing" if value is None else type(value).__name__
        raise ValueError(f"field {name!r}: expected {kind.__name__}, got {got}")
    return value


def _rating(value: Any) -> float | None:
    """A server log's rating object (`{"elo": ...}`) or a replay's number."""
    if isinstance(value, dict):
        value = value.get("elo")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _battle(record: Any, where: str) -> LoggedBattle | Refusal:
    """A battle from one JSON object: a server log (`inputLog`, `roomid`) or a replay."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    server_log = "inputLog" in record or "roomid" in record
    if server_log:
        input_log = record.get("inputLog")
        battle_id = str(record.get("roomid") or "").removeprefix("battle-")
        log = _field(record, "log", list)
        ratings = [_rating(record.get(f"{side}rating")) for side in ("p1", "p2")]
        rating = max((r for r in ratings if r is not None), default=None)
        battle_format = str(record.get("format") or "")
        view: LogView = "omniscient"
    else:
        text = record.get("inputlog")
        input_log = text.splitlines() if isinstance(text, str) else None
        battle_id = str(record.get("id") or "")
        log = _field(record, "log", str).split("\n")
        rating = _rating(record.get("rating"))
        battle_format = str(record.get("formatid") or to_id(str(record.get("format") or "")))
        view = "public"
    battle_id = battle_id or where
    if not input_log:
        field_name = "inputLog" if server_log else "inputlog"
        return Refusal(
            where,
            NO_INPUT_LOG,
            f"{where}: {battle_id}: field {field_name!r} is empty or missing (the replay site "
            "keeps it only for random-battle formats)",
        )
    if not all(isinstance(line, str) for line in [*input_log, *log]):
        raise ValueError("fields 'inputLog' and 'log' must hold strings")
    start = input_log[0]
    if start.startswith(">start "):  # the simulator's own word on the format
        battle_format = str(json.loads(start[len(">start ") :]).get("formatid") or battle_format)
    return LoggedBattle(
        source=where,
        battle_id=battle_id,
        battle_format=battle_format,
        input_log=tuple(input_log),
        log=tuple(log),
        view=view,
        rating=rating,
    )


# -- importing ----------------------------------------------------------------------------------


@dataclass
class _Tally:
    read: int = 0
    imported: int = 0
    trajectories: int = 0
    transitions: int = 0
    refusals: list[Refusal] = field(default_factory=list)

    def summary(self, path: Path, simulator_version: str) -> ImportSummary:
        return ImportSummary(
            path=path,
            read=self.read,
            imported=self.imported,
            trajectories=self.trajectories,
            transitions=self.transitions,
            refusals=tuple(self.refusals),
            simulator_version=simulator_version,
        )


def _select(
    items: Iterator[LoggedBattle | Refusal],
    battle_format: str | None,
    min_rating: float | None,
    tally: _Tally,
) -> tuple[str | None, list[LoggedBattle]]:
    """The battles to re-simulate (refusing the rest) and the dataset's format."""
    chosen: list[LoggedBattle] = []
    seen: dict[tuple[str, ...], str] = {}
    for item in items:
        tally.read += 1
        if isinstance(item, Refusal):
            tally.refusals.append(item)
            continue
        refusal = _refusal(item, battle_format, min_rating, seen)
        if refusal is not None:
            tally.refusals.append(refusal)
            continue
        battle_format = battle_format or item.battle_format
        chosen.append(item)
    return battle_format, chosen


def _refusal(
    battle: LoggedBattle,
    battle_format: str | None,
    min_rating: float | None,
    seen: dict[tuple[str, ...], str],
) -> Refusal | None:
    where = f"{battle.source}: {battle.battle_id}"
    try:
        check_battle_format(battle.battle_format)
    except ValueError as error:
        return Refusal(battle.source, NO_GENERATED_TEAMS, f"{where}: {error}")
    if battle_format is not None and battle.battle_format != battle_format:
        return Refusal(
            battle.source,
            OTHER_FORMAT,
            f"{where}: format {battle.battle_format!r}, the dataset's is {battle_format!r} "
            "(one format per dataset; choose it with --format)",
        )
    if min_rating is not None and (battle.rating is None or battle.rating < min_rating):
        return Refusal(
            battle.source, LOW_RATING, f"{where}: rating {battle.rating} below {min_rating}"
        )
    # A battle is its seeds: the same battle under two ids (a server log and its replay)
    # would weigh twice and could land on both sides of the split.
    identity = tuple(
        line for line in battle.input_log[:4] if line.startswith((">start", ">player"))
    )
    first = seen.setdefault(identity, where)
    if first != where:
        return Refusal(battle.source, REPEATED, f"{where}: the same battle as {first}")
    return None


def _check(
    battle: LoggedBattle, result: ReplayResult, version: str, package: Path
) -> Refusal | None:
    """Why a re-simulated battle is refused, or None: it diverges from its recorded log, or
    its input log could not be re-simulated."""
    where = f"{battle.source}: {battle.battle_id}"
    if result.log:
        recorded = normalise_log(battle.log)
        resimulated = normalise_log(spectator_log(result.log, battle.view))
        divergence = first_divergence(recorded, resimulated)
        if divergence is not None:
            return Refusal(
                battle.source,
                DIVERGED,
                f"{where}: {divergence}. Usually another simulator version played it (random "
                f"sets change between versions): this is pokemon-showdown {version} at "
                f"{package}; point POKE_TUNE_SHOWDOWN_DIR at the install that played it",
            )
    if result.error is not None:
        return Refusal(battle.source, NOT_REPLAYABLE, f"{where}: {result.error}")
    return None


def _records(
    battle: LoggedBattle,
    result: ReplayResult,
    sides: Sides,
    hp_shaping: float,
    key: bytes,
    replay_id: str,
) -> list[dict[str, Any]]:
    names = {side: name for name, side in parse_input_log(battle.input_log).names.items()}
    hashes = {side: name_hash(names.get(side, side), key) for side in ("p1", "p2")}
    records = []
    for side, trajectory in sorted(result.trajectories.items()):
        if not trajectory.actions or (sides == "winner" and result.winner != side):
            continue
        record = trajectory_record(trajectory, replay_id, hp_shaping)
        record["provenance"] = Provenance(
            source=battle.source,
            battle_id=battle.battle_id,
            rating=battle.rating,
            player=hashes[side],
            opponent=hashes["p2" if side == "p1" else "p1"],
        )
        records.append(record)
    return records


def import_battles(
    sources: Sequence[Path],
    out: Path,
    *,
    battle_format: str | None = None,
    min_rating: float | None = None,
    sides: Sides = "both",
    hp_shaping: float = 0.0,
    num_workers: int | None = None,
    on_result: Callable[[object], None] | None = None,
) -> ImportSummary:
    """Re-simulate the logged battles of `sources` and write the verified ones' trajectories
    to `out` (trajectory-JSONL, gzip for `.gz`), in the order the sources hold them.

    Args:
        battle_format: the dataset's format (default: the first battle's); battles of
            other formats are refused.
        min_rating: refuse battles rated below it, or unrated.
        sides: whose trajectories to keep: both players', the winner's, p1's or p2's.
        hp_shaping: as in `generate_dataset`.
        on_result: called once per re-simulated battle (progress).

    Raises `NothingImportedError` (no file written) when no battle could be imported.
    """
    if sides not in ("both", "winner", "p1", "p2"):
        raise ValueError(f"sides must be both, winner, p1 or p2, got {sides!r}")
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; name the output file (.jsonl or .jsonl.gz)")
    tally = _Tally()
    battle_format, chosen = _select(read_logged_battles(sources), battle_format, min_rating, tally)
    runtime = find_runtime()
    if not chosen or battle_format is None:
        raise NothingImportedError(tally.summary(out, runtime.version))
    record = (sides in ("both", "winner", "p1"), sides in ("both", "winner", "p2"))
    inputs = [
        ReplayInput(str(i), battle.battle_format, battle.input_log, record)
        for i, battle in enumerate(chosen)
    ]
    with SimulatorPool(num_workers=num_workers, runtime=runtime) as pool:
        header = DatasetHeader(
            encoder_version=ENCODER_VERSION,
            observation_size=pool.encoder(battle_format).size,
            action_layout=ACTION_LAYOUT,
            num_actions=NUM_ACTIONS,
            battle_format=battle_format,
            generator={
                "import": {
                    "sources": [str(source) for source in sources],
                    "simulator_version": runtime.version,
                    "battle_format": battle_format,
                    "min_rating": min_rating,
                    "sides": sides,
                    "hp_shaping": hp_shaping,
                    "names": f"HMAC-SHA256 of the user id, keyed ({NAME_KEY_ENV} or the "
                    "cache's import-name-key)",
                }
            },
        )
        key = _name_key()
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written under a hidden name, moved into place only if a battle made it in.
        staging = out.with_name(f".{out.name}")
        waiting: dict[int, ReplayResult] = {}
        next_index = 0
        used_ids: set[str] = set()
        with TrajectoryWriter(staging, header) as writer:
            for result in replay_battles(pool, inputs):
                if on_result is not None:
                    on_result(result)
                waiting[int(result.key)] = result
                # Results arrive in completion order; write in source order (one file per input).
                while next_index in waiting:
                    ready, battle = waiting.pop(next_index), chosen[next_index]
                    next_index += 1
                    refusal = _check(battle, ready, runtime.version, runtime.package_dir)
                    if refusal is not None:
                        tally.refusals.append(refusal)
                        continue
                    replay_id = battle.battle_id
                    while replay_id in used_ids:  # two servers both number from 1
                        replay_id += "+"
                    used_ids.add(replay_id)
                    records = _records(battle, ready, sides, hp_shaping, key, replay_id)
                    for line in records:
                        writer.write(line)
                        tally.transitions += len(line["steps"])
                    tally.trajectories += len(records)
                    tally.imported += 1
    if tally.imported == 0:
        staging.unlink()
        raise NothingImportedError(tally.summary(out, runtime.version))
    os.replace(staging, out)
    return tally.summary(out, runtime.version)
