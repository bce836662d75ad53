"""Species, move and type data from the simulator's own Dex, extracted once and cached.

Nothing here is hand-typed: `load_dex` asks the installed `pokemon-showdown` package for
its Dex (through the worker script's `#dex` command) and caches the JSON in the project
cache, keyed by package version and format.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from poke_tune.sim.frames import FrameReader, encode_command
from poke_tune.sim.runtime import WORKER_SCRIPT, ShowdownRuntime, cache_dir, find_runtime

__all__ = ["Dex", "MoveData", "load_dex", "to_id"]

# Showdown's damageTaken codes: how much a defending type takes from an attacking type.
_DAMAGE_TAKEN = {0: 1.0, 1: 2.0, 2: 0.5, 3: 0.0}


@lru_cache(maxsize=4096)
def to_id(name: str) -> str:
    """Showdown's `toID`: lower-case letters and digits only ("Mr. Mime" -> "mrmime").

    Cached: battles repeat a small vocabulary of names on every decision.
    """
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass(frozen=True)
class MoveData:
    """The static facts of one move."""

    id: str
    type: str
    category: str  # "Physical", "Special" or "Status"
    base_power: int
    accuracy: int
    priority: int


class Dex:
    """Typed, read-only access to one format's Dex extract."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.gen: int = raw["gen"]
        # Sorted so the vocabulary (and so the observation layout) is stable across runs.
        self.types: tuple[str, ...] = tuple(sorted(t for t in raw["types"] if t != "Stellar"))
        self._type_chart: dict[str, dict[str, int]] = raw["types"]
        self._species_types: dict[str, tuple[str, ...]] = {
            sid: tuple(s["types"]) for sid, s in raw["species"].items()
        }
        self._moves = {
            mid: MoveData(
                id=mid,
                type=m["type"],
                category=m["category"],
                base_power=int(m["basePower"]),
                accuracy=int(m["accuracy"]),
                priority=int(m["priority"]),
            )
            for mid, m in raw["moves"].items()
        }
        # Policies and the encoder ask the same questions on every decision: memoised.
        self._species_cache: dict[str, tuple[str, ...]] = {}
        self._effectiveness_cache: dict[tuple[str, tuple[str, ...]], float] = {}

    def species_types(self, species: str) -> tuple[str, ...]:
        """Types of a species by name or id; formes fall back to their base species."""
        types = self._species_cache.get(species)
        if types is None:
            types = self._species_cache[species] = self._lookup_species_types(species)
        return types

    def _lookup_species_types(self, species: str) -> tuple[str, ...]:
        sid = to_id(species)
        while sid and sid not in self._species_types:
            # "Ogerpon-Wellspring" is in the Dex, but cosmetic formes such as
            # "Polteageist-Antique" may not be: drop the forme suffix and retry.
            if "-" not in species:
                return ()
            species = species.rsplit("-", 1)[0]
            sid = to_id(species)
        return self._species_types.get(sid, ())

    def move(self, move_id: str) -> MoveData | None:
        """A move's data by id (`None` for ids the Dex does not know)."""
        return self._moves.get(move_id)

    def effectiveness(self, attack_type: str, defender_types: tuple[str, ...]) -> float:
        """Type-effectiveness multiplier of `attack_type` against `defender_types`."""
        key = (attack_type, defender_types)
        multiplier = self._effectiveness_cache.get(key)
        if multiplier is None:
            multiplier = 1.0
            for defender in defender_types:
                code = self._type_chart.get(defender, {}).get(attack_type, 0)
                multiplier *= _DAMAGE_TAKEN[code]
            self._effectiveness_cache[key] = multiplier
        return multiplier

    @staticmethod
    def log2_effectiveness(multiplier: float) -> float:
        """log2 of a multiplier, scaled to [-1, 1]; immunity maps to -1."""
        if multiplier == 0.0:
            return -1.0
        return max(-1.0, min(1.0, math.log2(multiplier) / 2.0))


def _extract(runtime: ShowdownRuntime, battle_format: str) -> dict[str, Any]:
    env = {**os.environ, "POKE_TUNE_SHOWDOWN_PKG": str(runtime.package_dir)}
    request = encode_command(0, [f"#dex {json.dumps({'format': battle_format})}"])
    proc = subprocess.run(
        [runtime.node, str(WORKER_SCRIPT)],
        input=request,
        capture_output=True,
        timeout=120,
        env=env,
        check=True,
    )
    frames = FrameReader().feed(proc.stdout)
    if not frames:
        raise RuntimeError(f"the Dex extract printed nothing; stderr: {proc.stderr.decode()}")
    result: dict[str, Any] = json.loads(frames[0][1])
    return result


@lru_cache(maxsize=8)
def load_dex(battle_format: str = "gen9randombattle") -> Dex:
    """The Dex for `battle_format`, from the cache or extracted from the simulator once."""
    runtime = find_runtime()
    path = cache_dir() / "dex" / f"{runtime.version}-{to_id(battle_format)}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = _extract(runtime, battle_format)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(raw))
        tmp.replace(path)  # atomic: parallel first runs never read a half-written file
    return Dex(json.loads(Path(path).read_text()))
