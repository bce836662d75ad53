"""`poke-tune data import`: logged battles (server logs, replays) in as trajectory files.

Sources: a server's battle log (`*.log.json`, the server's `logBattle` output), a folder
of them (searched recursively), a replay JSON file as the replay site serves it, or a
JSONL / `.jsonl.gz` file of either, one per line. Whoever wrote them is a stranger:
`sources.py` reads them within `ReadLimits` (regular files only, bounded sizes, streamed),
`logs.py` checks every field before use, and every battle is verified or refused alone,
with a reason (`Refusal`); nothing in one battle stops the rest.

Each battle is re-simulated from its input log on the simulator workers
(`sim.replay.replay_battles`), in chunks, so memory holds one chunk of battles: both
players' requests come back, so both sides' trajectories are rebuilt with the tracker and
encoder `generate` records with, the actions from the logged choices. A battle is imported
only if the re-simulated log matches the recorded one line for line (`normalise_log` drops
what only a server adds). The dataset's format is `battle_format`, else the one format of
the verified battles (several: `MixedFormatsError`, nothing written). Sources are never
written: OUT inside a source, or an existing OUT without `overwrite`, is refused first.

Privacy (`names.py`): player names are never written, nor shown: each is a keyed hash; a
source path's components that could be names are hashed too; chat is never read into the
output (the spectator log is only compared, never stored).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poke_tune.data.logs import (
    MALFORMED,
    NO_GENERATED_TEAMS,
    NO_INPUT_LOG,
    LoggedBattle,
    parse_battle,
)
from poke_tune.data.names import NAME_KEY_ENV, display_component, name_hash, name_key
from poke_tune.data.sources import (
    CORRUPT,
    MIB,
    NOT_REGULAR,
    TOO_LARGE,
    UNREADABLE,
    RawBattle,
    ReadLimits,
    Refusal,
    read_sources,
    source_files,
    sources_digest,
)
from poke_tune.data.verify import (
    DIVERGED,
    NO_DECISIONS,
    NO_WINNER,
    NOT_REPLAYABLE,
    UNKNOWN_FORMAT,
    FormatWriters,
    verify,
)
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.replay import ReplayInput, ReplayResult, replay_battles
from poke_tune.sim.runtime import find_runtime

__all__ = [
    "CORRUPT",
    "DIVERGED",
    "KEPT_REFUSALS",
    "LOW_RATING",
    "MALFORMED",
    "NAME_KEY_ENV",
    "NOT_REGULAR",
    "NOT_REPLAYABLE",
    "NO_DECISIONS",
    "NO_GENERATED_TEAMS",
    "NO_INPUT_LOG",
    "NO_WINNER",
    "OTHER_FORMAT",
    "REPEATED",
    "TOO_LARGE",
    "UNKNOWN_FORMAT",
    "UNREADABLE",
    "ImportSummary",
    "LoggedBattle",
    "MixedFormatsError",
    "NothingImportedError",
    "OutputError",
    "RawBattle",
    "ReadLimits",
    "Refusal",
    "Sides",
    "check_output",
    "import_battles",
    "name_hash",
    "read_logged_battles",
    "source_files",
    "sources_digest",
]

Sides = Literal["both", "winner", "p1", "p2"]

OTHER_FORMAT = "another format than --format"
REPEATED = "repeated battle"
LOW_RATING = "rating below --min-rating"

KEPT_REFUSALS = 1000
"""Refusals kept in full in a summary (all are counted): a flood of bad lines stays small."""
_CHUNK_BATTLES = 64
_CHUNK_BYTES = 64 * MIB


@dataclass(frozen=True)
class ImportSummary:
    """What an import read, wrote and refused (`refusals`: the first `KEPT_REFUSALS`)."""

    path: Path
    read: int
    imported: int
    trajectories: int
    transitions: int
    refusals: tuple[Refusal, ...] = ()
    simulator_version: str = ""
    refused_counts: tuple[tuple[str, int], ...] = ()
    battle_format: str | None = None

    @property
    def refused(self) -> int:
        return sum(n for _, n in self.refused_counts)

    def refused_by_reason(self) -> dict[str, int]:
        return dict(self.refused_counts)


class NothingImportedError(ValueError):
    """No battle could be imported; `summary` says why (no file was written)."""

    def __init__(self, summary: ImportSummary) -> None:
        self.summary = summary
        reasons = ", ".join(f"{n} {why}" for why, n in summary.refused_by_reason().items())
        first = f"; first: {summary.refusals[0].detail}" if summary.refusals else ""
        super().__init__(
            f"no battle imported from {summary.read} read ({reasons or 'no battles found'}){first}"
        )


class MixedFormatsError(ValueError):
    """Verified battles of several formats and no `battle_format`: nothing written."""

    def __init__(self, summary: ImportSummary, formats: dict[str, int]) -> None:
        self.summary = summary
        found = ", ".join(f"{name} ({n} battles)" for name, n in sorted(formats.items()))
        super().__init__(
            f"the sources hold verified battles of several formats: {found}; one format per "
            "dataset: choose one with --format (nothing was written)"
        )


class OutputError(ValueError):
    """OUT would write over a source, or over an existing file without `overwrite`."""


@dataclass
class _Tally:
    read: int = 0
    imported: int = 0
    trajectories: int = 0
    transitions: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def refuse(self, refusal: Refusal) -> None:
        self.counts[refusal.reason] = self.counts.get(refusal.reason, 0) + 1
        if len(self.refusals) < KEPT_REFUSALS:
            self.refusals.append(refusal)

    def summary(self, path: Path, version: str, battle_format: str | None) -> ImportSummary:
        return ImportSummary(
            path=path,
            read=self.read,
            imported=self.imported,
            trajectories=self.trajectories,
            transitions=self.transitions,
            refusals=tuple(self.refusals),
            simulator_version=version,
            refused_counts=tuple(self.counts.items()),
            battle_format=battle_format,
        )


def read_logged_battles(
    sources: Sequence[Path], limits: ReadLimits | None = None, key: bytes | None = None
) -> Iterator[LoggedBattle | Refusal]:
    """Every battle the sources hold, in order, or a `Refusal` where one cannot be read."""
    key = name_key() if key is None else key
    for item in read_sources(sources, limits or ReadLimits(), key):
        yield item if isinstance(item, Refusal) else parse_battle(item)


def check_output(sources: Sequence[Path], out: Path, *, overwrite: bool) -> None:
    """Refuse an OUT that is a source or lies inside a source folder (sources are never
    written), a folder, or an existing file unless `overwrite`."""
    target = out.resolve()
    for source in sources:
        resolved = source.resolve()
        if target == resolved or (resolved.is_dir() and target.is_relative_to(resolved)):
            raise OutputError(
                f"{out}: the output would be written {'over' if target == resolved else 'inside'} "
                f"the source {source}; sources are never written: name an OUT elsewhere"
            )
    if target.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; name the output file (.jsonl or .jsonl.gz)")
    if os.path.lexists(target) and not overwrite:
        raise OutputError(f"{out}: exists; replace it with --force, or name another OUT")


def _selected(
    items: Iterator[LoggedBattle | Refusal],
    battle_format: str | None,
    min_rating: float | None,
    tally: _Tally,
) -> Iterator[LoggedBattle]:
    """The battles to re-simulate; the others refused (counted in `tally`)."""
    for item in items:
        tally.read += 1
        if isinstance(item, Refusal):
            tally.refuse(item)
        elif battle_format is not None and item.battle_format != battle_format:
            where = f"{item.source}: {item.battle_id}"
            tally.refuse(
                Refusal(item.source, OTHER_FORMAT, f"{where}: format {item.battle_format!r}")
            )
        elif min_rating is not None and (item.rating is None or item.rating < min_rating):
            where = f"{item.source}: {item.battle_id}"
            tally.refuse(
                Refusal(item.source, LOW_RATING, f"{where}: rating {item.rating} < {min_rating}")
            )
        else:
            yield item


def _chunks(
    battles: Iterator[LoggedBattle], imported: dict[bytes, str], tally: _Tally
) -> Iterator[list[LoggedBattle]]:
    """Battles in chunks bounded in count and bytes; a battle already imported is refused
    as repeated, and a second copy within a chunk starts the next chunk (so it is checked
    against the first copy's outcome, never simulated beside it)."""
    chunk: list[LoggedBattle] = []
    size = 0
    for battle in battles:
        first = imported.get(battle.identity)
        if first is None and any(b.identity == battle.identity for b in chunk):
            yield chunk
            chunk, size = [], 0
            first = imported.get(battle.identity)
        if first is not None:
            where = f"{battle.source}: {battle.battle_id}"
            tally.refuse(Refusal(battle.source, REPEATED, f"{where}: the same battle as {first}"))
            continue
        chunk.append(battle)
        size += sum(map(len, battle.log)) + sum(map(len, battle.input_log))
        if len(chunk) >= _CHUNK_BATTLES or size >= _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


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
    limits: ReadLimits | None = None,
    overwrite: bool = False,
    pool: SimulatorPool | None = None,
) -> ImportSummary:
    """Re-simulate the logged battles of `sources` and write the verified ones' trajectories
    to `out` (trajectory-JSONL, gzip for `.gz`), in the order the sources hold them.

    Args:
        battle_format: the dataset's format; battles of other formats are refused unread.
            Default: the one format of the verified battles.
        min_rating: refuse battles rated below it, or unrated.
        sides: whose trajectories to keep: both players', the winner's, p1's or p2's.
        hp_shaping: as in `generate_dataset`.
        on_result: called once per re-simulated battle (progress).
        limits: what is read at most (`ReadLimits`' defaults).
        overwrite: replace an existing `out` (else `OutputError`).
        pool: an open pool to re-simulate on (default: one opened for this import).

    Raises `OutputError` before reading anything for an `out` that is or lies in a source,
    `NothingImportedError` or `MixedFormatsError` (no file written) when no dataset can be.
    """
    if sides not in ("both", "winner", "p1", "p2"):
        raise ValueError(f"sides must be both, winner, p1 or p2, got {sides!r}")
    check_output(sources, out, overwrite=overwrite)
    out = out.resolve()
    key = name_key()
    runtime = find_runtime()
    tally = _Tally()
    imported: dict[bytes, str] = {}
    labels = [display_component(source.name or "/", key) for source in sources]
    generator: dict[str, Any] = {
        "sources": labels,
        "simulator_version": runtime.version,
        "battle_format": battle_format,
        "min_rating": min_rating,
        "sides": sides,
        "hp_shaping": hp_shaping,
        "names": f"HMAC-SHA256 of the user id, keyed ({NAME_KEY_ENV} or the cache's "
        "import-name-key); source path components that could be names hashed alike",
    }
    record = (sides in ("both", "winner", "p1"), sides in ("both", "winner", "p2"))
    logged = read_logged_battles(sources, limits, key)
    battles = _selected(logged, battle_format, min_rating, tally)
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(SimulatorPool(num_workers=num_workers, runtime=runtime))
        writers = FormatWriters(out, pool, generator, runtime)
        try:
            for chunk in _chunks(battles, imported, tally):
                usable = []
                for battle in chunk:
                    problem = writers.unusable(battle)
                    if problem is None:
                        usable.append(battle)
                    else:
                        tally.refuse(problem)
                inputs = [
                    ReplayInput(str(i), battle.battle_format, battle.input_log, record)
                    for i, battle in enumerate(usable)
                ]
                results = _in_order(replay_battles(pool, inputs), on_result)
                for battle, result in zip(usable, results, strict=True):
                    try:
                        outcome = verify(battle, result, sides, hp_shaping, key, runtime)
                    except (ValueError, TypeError) as error:  # a record that cannot be
                        where = f"{battle.source}: {battle.battle_id}"  # written: say why
                        detail = f"{where}: {type(error).__name__}: {str(error)[:200]}"
                        outcome = Refusal(battle.source, NOT_REPLAYABLE, detail)
                    if isinstance(outcome, Refusal):
                        tally.refuse(outcome)
                        continue
                    writers.write(battle, outcome)
                    imported[battle.identity] = f"{battle.source}: {battle.battle_id}"
                    tally.imported += 1
                    tally.trajectories += len(outcome)
                    tally.transitions += sum(len(r.steps) for r in outcome)
            chosen = writers.finish(battle_format)
        except BaseException:
            writers.discard()
            raise
    formats = writers.counts
    summary = tally.summary(out, runtime.version, battle_format or chosen)
    if len(formats) > 1:
        raise MixedFormatsError(summary, formats)
    if tally.imported == 0:
        raise NothingImportedError(summary)
    return summary


def _in_order(
    results: Iterator[ReplayResult], on_result: Callable[[object], None] | None
) -> Iterator[ReplayResult]:
    """Results (keyed by their index in the chunk) in index order."""
    waiting: dict[int, ReplayResult] = {}
    next_index = 0
    for result in results:
        if on_result is not None:
            on_result(result)
        waiting[int(result.key)] = result
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1
