"""An imported battle checked against its re-simulation, and the verified ones written.

`verify` turns one battle and its `ReplayResult` into trajectory records or a `Refusal`:
*cannot be re-simulated* when the simulator refused a logged choice (or the input log)
while the log so far still matched the recorded one, *diverges* when the logs differ
first, *no winner* for `--sides winner` on a tie or a battle cut off. Messages never print
a player's name: known names are hashed (`names.redact`) and a differing line whose kind
carries free text (chat, `|win|`, messages, HTML) is shown by its kind only.

`FormatWriters` writes verified battles to one hidden staging file per format, so the
dataset's format is decided by verified battles (or `--format`) at the end; only the
chosen file is moved to OUT, the others are removed, and so are all of them on an error
or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from poke_tune.data.generate import trajectory_record
from poke_tune.data.jsonl import TrajectoryWriter
from poke_tune.data.logs import LoggedBattle
from poke_tune.data.names import name_hash, redact
from poke_tune.data.records import DatasetHeader, Provenance, TrajectoryRecord
from poke_tune.data.sources import Refusal
from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS
from poke_tune.sim.battle_records import SIDES
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.replay import ReplayResult, normalise_log, spectator_log
from poke_tune.sim.runtime import ShowdownRuntime

__all__ = [
    "DIVERGED",
    "NOT_REPLAYABLE",
    "NO_DECISIONS",
    "NO_WINNER",
    "UNKNOWN_FORMAT",
    "FormatWriters",
    "verify",
]

DIVERGED = "diverges from its re-simulation"
NOT_REPLAYABLE = "cannot be re-simulated"
NO_WINNER = "no winner for --sides winner"
NO_DECISIONS = "no decision of the kept sides"
UNKNOWN_FORMAT = "unknown format"

_FREE_TEXT = frozenset(
    {"win", "tie", "c", "c:", "chat", "j", "J", "l", "L", "n", "N", "player", "raw", "html",
     "uhtml", "uhtmlchange", "-message", "message", "inactive", "title", "bigerror", "error"}
)  # fmt: skip


@lru_cache(maxsize=4)
def simulator_formats(runtime: ShowdownRuntime) -> frozenset[str]:
    """The format ids the installed simulator knows (asked once per install)."""
    script = (
        f"const {{Dex}} = require({json.dumps(str(runtime.package_dir / 'dist' / 'sim'))});"
        "console.log(JSON.stringify(Dex.formats.all()"
        ".filter(f => f.effectType === 'Format').map(f => f.id)))"
    )
    proc = subprocess.run(
        [runtime.node, "-e", script], capture_output=True, timeout=120, check=True, text=True
    )
    return frozenset(json.loads(proc.stdout))


def _shown(line: str, names: dict[str, str], key: bytes) -> str:
    kind = line.split("|", 2)[1] if line.startswith("|") and line.count("|") >= 2 else ""
    if kind in _FREE_TEXT:
        return repr(f"|{kind}|") + f" (its text, {len(line)} characters, not shown)"
    return repr(redact(line, names, key)[:80])


def _divergence(
    recorded: list[str], resimulated: list[str], names: dict[str, str], key: bytes
) -> str | None:
    """Where two normalised logs first differ, names hashed (None when they agree)."""
    for number, (mine, theirs) in enumerate(zip(recorded, resimulated, strict=False), 1):
        if mine != theirs:
            return (
                f"line {number}: recorded {_shown(mine, names, key)}, "
                f"re-simulated {_shown(theirs, names, key)}"
            )
    if len(recorded) != len(resimulated):
        shorter, longer = sorted((recorded, resimulated), key=len)
        which = "recorded" if longer is recorded else "re-simulated"
        return (
            f"line {len(shorter) + 1}: only the {which} log goes on, "
            f"{_shown(longer[len(shorter)], names, key)}"
        )
    return None


def _problem(
    battle: LoggedBattle, result: ReplayResult, key: bytes, runtime: ShowdownRuntime
) -> Refusal | None:
    names = {name: side for side, name in battle.names.items()}
    where = f"{battle.source}: {battle.battle_id}"
    recorded = normalise_log(battle.log)
    if result.error is not None:
        # Only the log before the failure counts: after a refused choice it drifts.
        sound = normalise_log(spectator_log(result.log[: result.error_at or 0], battle.view))
        divergence = _divergence(recorded[: len(sound)], sound, names, key)
        if divergence is None:
            reason = redact(result.error, names, key)
            return Refusal(battle.source, NOT_REPLAYABLE, f"{where}: {reason}")
    else:
        resimulated = normalise_log(spectator_log(result.log, battle.view))
        divergence = _divergence(recorded, resimulated, names, key)
        if divergence is None:
            return None
    return Refusal(
        battle.source,
        DIVERGED,
        f"{where}: {divergence}. Usually another simulator version played it (random sets "
        f"change between versions): this is pokemon-showdown {runtime.version}; point "
        "POKE_TUNE_SHOWDOWN_DIR at the install that played it",
    )


def verify(
    battle: LoggedBattle,
    result: ReplayResult,
    sides: str,
    hp_shaping: float,
    key: bytes,
    runtime: ShowdownRuntime,
) -> list[TrajectoryRecord] | Refusal:
    """The battle's trajectory records (sides as asked), or why it is refused."""
    problem = _problem(battle, result, key, runtime)
    if problem is not None:
        return problem
    where = f"{battle.source}: {battle.battle_id}"
    if sides == "winner" and result.winner is None:
        ended = "was cut off" if result.truncated else "is a tie"
        return Refusal(battle.source, NO_WINNER, f"{where}: the battle {ended}")
    hashes = {side: name_hash(battle.names.get(side, side), key) for side in SIDES}
    records = []
    for side, trajectory in sorted(result.trajectories.items()):
        if not trajectory.actions or (sides == "winner" and result.winner != side):
            continue
        record = trajectory_record(trajectory, battle.battle_id, hp_shaping)
        record["provenance"] = Provenance(
            source=battle.source,
            battle_id=battle.battle_id,
            rating=battle.rating,
            player=hashes[side],
            opponent=hashes["p2" if side == "p1" else "p1"],
        )
        records.append(TrajectoryRecord.model_validate(record))
    if not records:
        return Refusal(battle.source, NO_DECISIONS, f"{where}: no decision to keep")
    return records


class FormatWriters:
    """One staging file per format next to OUT (see the module docstring)."""

    def __init__(
        self, out: Path, pool: SimulatorPool, generator: dict[str, Any], runtime: ShowdownRuntime
    ) -> None:
        self._out = out
        self._pool = pool
        self._generator = generator
        self.counts: dict[str, int] = {}
        self._writers: dict[str, TrajectoryWriter] = {}
        self._failed: dict[str, str] = {}
        self._used_ids: set[str] = set()
        self._version = runtime.version
        self._formats = simulator_formats(runtime)

    def unusable(self, battle: LoggedBattle) -> Refusal | None:
        """A refusal when the simulator has no encoder for the battle's format."""
        name = battle.battle_format
        if name not in self._failed and name not in self._writers:
            if name not in self._formats:
                self._failed[name] = f"not a format of pokemon-showdown {self._version}"
                return self.unusable(battle)
            try:
                self._pool.encoder(name)
            except Exception as error:  # any failure: this format is unusable
                self._failed[name] = f"{type(error).__name__}: {str(error)[:200]}"
        if name in self._failed:
            detail = f"{battle.source}: {battle.battle_id}: format {name!r}: {self._failed[name]}"
            return Refusal(battle.source, UNKNOWN_FORMAT, detail)
        return None

    def _staging(self, battle_format: str) -> Path:
        return self._out.with_name(f".{self._out.name}.{battle_format}.staging")

    def write(self, battle: LoggedBattle, records: list[TrajectoryRecord]) -> None:
        name = battle.battle_format
        writer = self._writers.get(name)
        if writer is None:
            header = DatasetHeader(
                encoder_version=ENCODER_VERSION,
                observation_size=self._pool.encoder(name).size,
                action_layout=ACTION_LAYOUT,
                num_actions=NUM_ACTIONS,
                battle_format=name,
                generator={"import": {**self._generator, "battle_format": name}},
            )
            writer = self._writers[name] = TrajectoryWriter(self._staging(name), header)
        replay_id = battle.battle_id
        while replay_id in self._used_ids:  # two servers both number from 1
            replay_id += "+"
        self._used_ids.add(replay_id)
        for record in records:
            writer.write(record.model_copy(update={"replay_id": replay_id}))
        self.counts[name] = self.counts.get(name, 0) + 1

    def finish(self, battle_format: str | None) -> str | None:
        """Move the one format's file to OUT and return it; None (nothing moved) when there
        is none, or several and no `battle_format`."""
        if len(self.counts) != 1 or (battle_format and battle_format not in self.counts):
            self.discard()
            return None
        (name,) = self.counts
        self._writers.pop(name).close()
        self.discard()
        os.replace(self._staging(name), self._out)
        return name

    def discard(self) -> None:
        """Remove every staging file still open or left."""
        for name, writer in self._writers.items():
            with contextlib.suppress(OSError):
                writer.__exit__(InterruptedError, None, None)
            staging = self._staging(name)
            staging.with_name(staging.name + ".partial").unlink(missing_ok=True)
            staging.unlink(missing_ok=True)
        self._writers.clear()
