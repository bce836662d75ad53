"""The compiled dataset: a manifest of content-addressed shards, memory-mapped read-only.

`load_dataset` takes a trajectory file (compiled once, streaming, into shards of at most
`shard_rows` rows: memory bounded by one shard whatever the file's size, cached by the
file's content hash) or a manifest (`*.json`, as `combine.py` writes: the shards of
several sources, concatenated). Shards live in `<cache>/shards/<content hash>/`
(`shards.py`) and are shared by every dataset that lists them, so appending a round adds
its own shards and nothing else is rewritten.

The layout is the *row layout*: each trajectory of n steps owns n + 1 consecutive rows of
observations and masks, the last holding s' of its final step (zeros and an all-False
mask after a real terminal; the recorded `final_observation`/`final_action_mask` when the
battle was cut off). Transitions are numbered across shards in manifest order; transition
g of trajectory t lies in row g + t, so s' is row g + t + 1. Nothing is loaded whole:
`observations_at`, `masks_at` and `transitions_at` gather the rows asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from poke_tune.data.jsonl import open_trajectories
from poke_tune.data.records import (
    DatasetError,
    DatasetHeader,
    header_problem,
)
from poke_tune.data.shards import SHARD_FORMAT, Shard, ShardBuilder, open_shard
from poke_tune.sim.actions import ACTION_LAYOUT
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.runtime import cache_dir

__all__ = [
    "MANIFEST_FORMAT",
    "OfflineDataset",
    "load_dataset",
    "open_manifest",
    "write_manifest",
]

_logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
SHARD_ROWS = 100_000
"""Rows per shard (about 1,400 battles): the compile holds one shard's float32 rows."""


def _offsets(sizes: list[int]) -> npt.NDArray[np.int64]:
    """[len(sizes) + 1] where each item starts, and the total."""
    return np.cumsum([0, *sizes], dtype=np.int64)


@dataclass(frozen=True, eq=False, kw_only=True)
class OfflineDataset:
    """Shards listed by a manifest, memory-mapped read-only (row layout: the module doc)."""

    source: Path
    """The trajectory file or manifest this was loaded from."""
    manifest: Path
    """The manifest listing the shards (the dataset pickles as this path)."""
    key: str
    """16 hex digits: the source file's sha256, or the hash of a combined manifest."""
    header: DatasetHeader
    size_bytes: int
    """Size of the source file(s)."""
    shards: tuple[Shard, ...] = field(repr=False)
    parts: tuple[int, ...] = field(repr=False)
    """The source part of each shard (a combined manifest's index; 0 otherwise)."""
    excluded: npt.NDArray[np.bool_] = field(repr=False)
    """[trajectories] repeats of an earlier part's trajectory, never trained on."""

    # -- sizes -----------------------------------------------------------------------------

    @cached_property
    def trajectory_lengths(self) -> npt.NDArray[np.int64]:
        """[trajectories] steps of every trajectory, shards in order (excluded included)."""
        return np.concatenate([np.asarray(s.arrays["lengths"]) for s in self.shards])

    @cached_property
    def trajectory_starts(self) -> npt.NDArray[np.int64]:
        """[trajectories + 1] first transition of every trajectory, and the total."""
        starts: npt.NDArray[np.int64] = np.r_[0, np.cumsum(self.trajectory_lengths)]
        return starts

    @cached_property
    def trajectory_returns(self) -> npt.NDArray[np.float32]:
        return np.concatenate([np.asarray(s.arrays["returns"]) for s in self.shards])

    @cached_property
    def trajectory_truncated(self) -> npt.NDArray[np.bool_]:
        return np.concatenate([np.asarray(s.arrays["truncated"]) for s in self.shards])

    @cached_property
    def _transition_offsets(self) -> npt.NDArray[np.int64]:
        return _offsets([s.num_transitions for s in self.shards])

    @cached_property
    def _row_offsets(self) -> npt.NDArray[np.int64]:
        return _offsets([s.num_rows for s in self.shards])

    @property
    def num_transitions(self) -> int:
        """Number of (s, a, r, s') transitions (repeats of an earlier part excluded)."""
        return int(self.trajectory_lengths[~self.excluded].sum())

    @property
    def num_trajectories(self) -> int:
        """Number of trajectories (one per player per battle; repeats excluded)."""
        return int((~self.excluded).sum())

    @property
    def observation_size(self) -> int:
        return self.header.observation_size

    @property
    def num_actions(self) -> int:
        return self.header.num_actions

    def nbytes(self) -> int:
        """Bytes of the compact arrays (the compiled cache, what a process maps)."""
        return sum(shard.nbytes() for shard in self.shards)

    # -- labels (read from the shards' metadata when asked) ---------------------------------

    def _trajectory_labels(self, name: str) -> list[str]:
        return [str(t[name]) for s in self.shards for t in s.labels()]

    @cached_property
    def replay_ids(self) -> tuple[str, ...]:
        """Per trajectory; a combined manifest prefixes each with its part (`0/...`)."""
        ids = self._trajectory_labels("replay_id")
        if max(self.parts) == 0:
            return tuple(ids)
        per_trajectory = np.repeat(self.parts, [s.num_trajectories for s in self.shards])
        return tuple(f"{part}/{id_}" for part, id_ in zip(per_trajectory, ids, strict=True))

    @property
    def num_battles(self) -> int:
        """Battles with a trajectory trained on (repeats excluded)."""
        kept = np.flatnonzero(~self.excluded)
        return len({self.replay_ids[index] for index in kept})

    @property
    def players(self) -> tuple[str, ...]:
        return tuple(self._trajectory_labels("player"))

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self._trajectory_labels("policy"))

    # -- the split and gathering -----------------------------------------------------------

    def split(
        self, val_fraction: float = 0.1, seed: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(train, val) sorted *trajectory* indices, split with a seeded shuffle.

        The validation side gets round(val_fraction * trajectories) trajectories, at least
        one when val_fraction > 0, and never all of them. Excluded repeats are in neither.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        kept = np.flatnonzero(~self.excluded)
        count = len(kept)
        num_val = 0 if val_fraction == 0 else min(count - 1, max(1, round(val_fraction * count)))
        in_val = np.zeros(count, dtype=bool)
        in_val[np.random.default_rng(seed).permutation(count)[:num_val]] = True
        return kept[~in_val], kept[in_val]

    def _by_shard(
        self, index: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]
    ) -> Iterator[tuple[Shard, npt.NDArray[np.bool_], npt.NDArray[np.int64]]]:
        """(shard, which entries of `index` it holds, their local index), shards with hits."""
        shard_of = np.searchsorted(offsets, index, side="right") - 1
        for shard_index in np.unique(shard_of):
            hits = shard_of == shard_index
            yield self.shards[shard_index], hits, index[hits] - offsets[shard_index]

    def observations_at(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """[len(rows), observation_size] float32 observations of global rows."""
        out = np.empty((len(rows), self.observation_size), dtype=np.float32)
        for shard, hits, local in self._by_shard(rows, self._row_offsets):
            out[hits] = shard.observations(local)
        return out

    def masks_at(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """[len(rows), num_actions] legal-action masks of global rows."""
        out = np.empty((len(rows), self.num_actions), dtype=bool)
        for shard, hits, local in self._by_shard(rows, self._row_offsets):
            out[hits] = shard.masks(local)
        return out

    def transitions_at(
        self, index: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(actions, rewards, terminals) of global transitions."""
        actions = np.empty(len(index), dtype=np.int64)
        rewards = np.empty(len(index), dtype=np.float32)
        terminals = np.empty(len(index), dtype=np.float32)
        for shard, hits, local in self._by_shard(index, self._transition_offsets):
            actions[hits] = shard.arrays["actions"][local]
            rewards[hits] = shard.arrays["rewards"][local]
            terminals[hits] = shard.arrays["terminals"][local]
        return actions, rewards, terminals

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle by reference to the manifest: workers re-map the same shard files.
        return (open_manifest, (self.manifest, self.source))


# -- manifests ---------------------------------------------------------------------------------


def write_manifest(
    path: Path,
    *,
    key: str,
    header: DatasetHeader,
    size_bytes: int,
    shards: list[tuple[Shard, int]],
    excluded: list[int] | None = None,
) -> None:
    """Write a manifest atomically: the header, the shards (with their part) and the
    excluded trajectories."""
    manifest = {
        "manifest_format": MANIFEST_FORMAT,
        "shard_format": SHARD_FORMAT,
        "key": key,
        "header": header.model_dump(),
        "source_size_bytes": size_bytes,
        "shards": [{"folder": str(s.folder.resolve()), "part": part} for s, part in shards],
        "excluded": excluded or [],
        "counts": {
            "trajectories": sum(s.num_trajectories for s, _ in shards) - len(excluded or []),
            "transitions": sum(s.num_transitions for s, _ in shards),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.replace(staging, path)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_format") != MANIFEST_FORMAT:
        return None
    # Shards of another layout: a file's manifest is compiled again, a combined one refused.
    return manifest if manifest.get("shard_format") == SHARD_FORMAT else None


def open_manifest(path: Path, source: Path | None = None) -> OfflineDataset:
    """The dataset a manifest lists; FileNotFoundError if it or a shard is missing."""
    manifest = _read_manifest(Path(path))
    if manifest is None:
        raise FileNotFoundError(f"{path} is not a poke-tune dataset manifest")
    shards = tuple(open_shard(Path(entry["folder"])) for entry in manifest["shards"])
    excluded = np.zeros(sum(s.num_trajectories for s in shards), dtype=bool)
    excluded[np.asarray(manifest["excluded"], dtype=np.int64)] = True
    return OfflineDataset(
        source=Path(source if source is not None else path),
        manifest=Path(path),
        key=manifest["key"],
        header=DatasetHeader.model_validate(manifest["header"]),
        size_bytes=manifest["source_size_bytes"],
        shards=shards,
        parts=tuple(int(entry["part"]) for entry in manifest["shards"]),
        excluded=excluded,
    )


# -- compiling a trajectory file, streaming ----------------------------------------------------


def _file_key(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:16]


def _compile(
    path: Path,
    manifest: Path,
    key: str,
    *,
    store: Path,
    shard_rows: int,
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> None:
    """Validate the trajectory file `path` in one pass (its header before any record),
    writing a shard every `shard_rows` rows, then the manifest listing them."""
    started = time.perf_counter()
    shards: list[Shard] = []
    with open_trajectories(
        path,
        expected_encoder_version=expected_encoder_version,
        expected_action_layout=expected_action_layout,
    ) as (header, records):
        builder = ShardBuilder(path, header, store)
        for line_no, record in records:
            builder.add(line_no, record)
            if builder.rows >= shard_rows and (shard := builder.flush()) is not None:
                shards.append(shard)
                _logger.info(
                    "compiling %s: shard %d written (line %d)", path, len(shards), line_no
                )
        if (shard := builder.flush()) is not None:
            shards.append(shard)
    if not shards:
        raise DatasetError(path, 2, "", "no trajectories after the header")
    write_manifest(
        manifest,
        key=key,
        header=header,
        size_bytes=path.stat().st_size,
        shards=[(shard, 0) for shard in shards],
    )
    transitions = sum(s.num_transitions for s in shards)
    elapsed = time.perf_counter() - started
    _logger.info(
        "compiled %s: %d shards, %d transitions in %.1f s (%.0f transitions/s)",
        path,
        len(shards),
        transitions,
        elapsed,
        transitions / max(elapsed, 1e-9),
    )


def load_dataset(
    path: Path,
    *,
    cache_root: Path | None = None,
    shard_rows: int = SHARD_ROWS,
    expected_encoder_version: str | None = ENCODER_VERSION,
    expected_action_layout: str | None = ACTION_LAYOUT,
) -> OfflineDataset:
    """Open a manifest, or validate and compile a trajectory file once (streaming, into
    shards), then memory-map the shards.

    Args:
        cache_root: where compiled datasets live (`shards/` and one manifest per file);
            default `<poke-tune cache>/datasets`.
        shard_rows: rows per shard when compiling (bounds the compile's memory).
        expected_encoder_version: header value required (None accepts any).
        expected_action_layout: header value required (None accepts any this code decodes).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, expected a dataset file (.jsonl, .jsonl.gz or a manifest)"
        )
    root = cache_root if cache_root is not None else cache_dir() / "datasets"
    if path.suffix == ".json":
        manifest = path
    else:
        key = _file_key(path)
        manifest = root / f"{key}.json"
        if _read_manifest(manifest) is None or not _shards_present(manifest):
            _compile(
                path,
                manifest,
                key,
                store=root / "shards",
                shard_rows=shard_rows,
                expected_encoder_version=expected_encoder_version,
                expected_action_layout=expected_action_layout,
            )
    dataset = open_manifest(manifest, source=path)
    refused = header_problem(dataset.header, expected_encoder_version, expected_action_layout)
    if refused is not None:
        raise DatasetError(path, 1, *refused)
    return dataset


def _shards_present(manifest: Path) -> bool:
    entries = (_read_manifest(manifest) or {}).get("shards", [])
    return all((Path(entry["folder"]) / "meta.json").is_file() for entry in entries)
