"""One shard of a compiled dataset: a few thousand trajectories, stored compact and exact.

A shard holds whole trajectories in the *row layout* (`compiled.py`): a trajectory of n
steps owns n + 1 consecutive rows of observations and masks, the last holding s' of its
final step. Its observation columns are stored in the narrowest form that holds the
shard's values exactly, chosen per column from the values themselves (so no encoder
change can make a stored value wrong):

- *bits*: a column holding only 0 and 1, eight columns a byte (`np.packbits`);
- *codes*: a column with at most 256 distinct values, a byte per entry indexing a
  per-column float32 table (turn/100, HP fractions of a few maxima, boosts/6, ...);
- *floats*: every other column, float32 as recorded.

Masks are bits. Decoding gathers rows and rebuilds the float32 observation exactly:
`decode` equals the recorded float32 values, entry for entry. A shard folder is named by
the hash of its content (`key`), so a changed shard is a new key and shards are shared by
every dataset that lists them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from poke_tune.data.records import DatasetError, DatasetHeader, TrajectoryRecord
from poke_tune.sim.actions import action_index

__all__ = [
    "SHARD_FORMAT",
    "Shard",
    "ShardBuilder",
    "ShardContent",
    "decisions_digest",
    "open_shard",
    "write_shard",
]

_SHARD_HEADER = (
    "encoder_version",
    "observation_size",
    "action_layout",
    "num_actions",
    "battle_format",
)
SHARD_FORMAT = 2
"""Bump when the stored layout changes: the format is part of every shard's key."""

_CODES = 256  # a byte of code per entry
_LABELS = "trajectories.json"
_ARRAYS = (
    "obs_bits",  # uint8 [rows, ceil(bit columns / 8)]
    "obs_codes",  # uint8 [rows, code columns]
    "obs_floats",  # float32 [rows, float columns]
    "mask_bits",  # uint8 [rows, ceil(num_actions / 8)]
    "actions",  # uint8 [transitions]
    "rewards",  # float32 [transitions]
    "terminals",  # uint8 [transitions]
    "lengths",  # int64 [trajectories] steps
    "returns",  # float32 [trajectories] recorded total_reward
    "truncated",  # bool [trajectories]
    "bit_columns",  # int64: observation column of each bit
    "code_columns",  # int64
    "code_tables",  # float32 [code columns, 256]
    "float_columns",  # int64
)


@dataclass(frozen=True, kw_only=True)
class ShardContent:
    """What one shard holds, decoded: the arrays a compile pass collects."""

    observations: npt.NDArray[np.float32]
    """[rows, observation_size], row layout."""
    masks: npt.NDArray[np.bool_]
    """[rows, num_actions]."""
    actions: npt.NDArray[np.int64]
    rewards: npt.NDArray[np.float32]
    terminals: npt.NDArray[np.float32]
    lengths: npt.NDArray[np.int64]
    returns: npt.NDArray[np.float32]
    truncated: npt.NDArray[np.bool_]
    trajectories: list[dict[str, Any]]
    """Per trajectory: replay_id, player, policy, provenance and the decisions' digest."""


def _encode_columns(observations: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
    """The observation block split into bits, codes and floats, each column exactly."""
    ones = observations == 1
    binary = np.all((observations == 0) | ones, axis=0)
    bit_columns = np.flatnonzero(binary)
    code_columns: list[int] = []
    tables: list[npt.NDArray[np.float32]] = []
    codes: list[npt.NDArray[np.uint8]] = []
    for column in np.flatnonzero(~binary):
        values, inverse = np.unique(observations[:, column], return_inverse=True)
        if len(values) <= _CODES:
            code_columns.append(int(column))
            tables.append(np.pad(values, (0, _CODES - len(values))).astype(np.float32))
            codes.append(inverse.astype(np.uint8))
    float_columns = np.setdiff1d(np.flatnonzero(~binary), code_columns)
    rows = len(observations)
    return {
        "obs_bits": np.packbits(ones[:, bit_columns], axis=1),
        "obs_codes": np.stack(codes, axis=1) if codes else np.zeros((rows, 0), np.uint8),
        "obs_floats": np.ascontiguousarray(observations[:, float_columns]),
        "bit_columns": bit_columns.astype(np.int64),
        "code_columns": np.asarray(code_columns, dtype=np.int64),
        "code_tables": np.stack(tables) if tables else np.zeros((0, _CODES), np.float32),
        "float_columns": float_columns.astype(np.int64),
    }


@dataclass(frozen=True, eq=False)
class Shard:
    """A shard folder, memory-mapped read-only (its pages shared by every process)."""

    folder: Path
    meta: dict[str, Any] = field(repr=False)
    arrays: dict[str, npt.NDArray[Any]] = field(repr=False)

    @property
    def key(self) -> str:
        """The hash of the shard's content: its folder name."""
        return str(self.meta["key"])

    @property
    def num_rows(self) -> int:
        return len(self.arrays["obs_floats"])

    @property
    def num_transitions(self) -> int:
        return len(self.arrays["actions"])

    @property
    def num_trajectories(self) -> int:
        return len(self.arrays["lengths"])

    @cached_property
    def _codec(self) -> tuple[npt.NDArray[Any], ...]:
        """The column maps and the flattened code tables, in memory (a few hundred KB)."""
        a = self.arrays
        code_columns = np.array(a["code_columns"])
        offsets = np.arange(len(code_columns), dtype=np.intp) * _CODES
        tables = np.array(a["code_tables"]).ravel()
        return (
            np.array(a["bit_columns"]),
            code_columns,
            offsets,
            tables,
            np.array(a["float_columns"]),
        )

    def observations(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """[len(rows), observation_size] float32, exactly as recorded."""
        bit_columns, code_columns, offsets, tables, float_columns = self._codec
        out = np.empty((len(rows), int(self.meta["observation_size"])), dtype=np.float32)
        out[:, bit_columns] = np.unpackbits(
            self.arrays["obs_bits"][rows], axis=1, count=len(bit_columns)
        )
        out[:, code_columns] = tables[self.arrays["obs_codes"][rows] + offsets]
        out[:, float_columns] = self.arrays["obs_floats"][rows]
        return out

    def masks(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """[len(rows), num_actions] legal-action masks."""
        count = int(self.meta["num_actions"])
        return np.unpackbits(self.arrays["mask_bits"][rows], axis=1, count=count).astype(bool)

    def labels(self) -> list[dict[str, Any]]:
        """Per trajectory: replay_id, player, policy, provenance and the decisions' digest
        (read from disk when asked: training never needs them)."""
        labels: list[dict[str, Any]] = orjson.loads((self.folder / _LABELS).read_bytes())
        return labels

    def nbytes(self) -> int:
        """Bytes of the stored arrays (what a process maps)."""
        return sum(int(array.nbytes) for array in self.arrays.values())


def _content_key(arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> str:
    digest = hashlib.sha256(f"shard-format-{SHARD_FORMAT}".encode())
    for name in _ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()[:20]


def write_shard(content: ShardContent, store: Path, header: dict[str, Any]) -> Shard:
    """Encode `content`, write it under `store/<key>/` (atomically; a folder already there
    is the same content) and return it memory-mapped. `header` holds the dataset header's
    fields a shard must agree on (encoder, sizes, layout, format)."""
    arrays: dict[str, npt.NDArray[Any]] = {
        **_encode_columns(content.observations),
        "mask_bits": np.packbits(content.masks, axis=1),
        "actions": content.actions.astype(np.uint8),
        "rewards": content.rewards.astype(np.float32),
        "terminals": content.terminals.astype(np.uint8),
        "lengths": content.lengths.astype(np.int64),
        "returns": content.returns.astype(np.float32),
        "truncated": content.truncated.astype(bool),
    }
    meta: dict[str, Any] = {
        "shard_format": SHARD_FORMAT,
        "header": header,
        "observation_size": int(content.observations.shape[1]),
        "num_actions": int(content.masks.shape[1]),
    }
    labels = orjson.dumps(content.trajectories)
    key = _content_key(arrays, {**meta, "trajectories": content.trajectories})
    folder = store / key
    if not (folder / "meta.json").is_file():
        store.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=store))
        try:
            for name in _ARRAYS:
                np.save(staging / f"{name}.npy", arrays[name])
            (staging / _LABELS).write_bytes(labels)
            (staging / "meta.json").write_bytes(orjson.dumps({**meta, "key": key}))
            with suppress(OSError):  # another process wrote the same content first
                os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return open_shard(folder)


def open_shard(folder: Path) -> Shard:
    """A shard folder memory-mapped read-only; FileNotFoundError if it holds none."""
    try:
        meta = orjson.loads((folder / "meta.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise FileNotFoundError(f"no shard in {folder}: {error}") from None
    if meta.get("shard_format") != SHARD_FORMAT:
        raise FileNotFoundError(f"{folder} holds shard format {meta.get('shard_format')}")
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    return Shard(folder=folder, meta=meta, arrays=arrays)


def decisions_digest(player: str, observations: npt.NDArray[np.float32], actions: Any) -> str:
    """The same player's same decisions in the same battle, whatever the labels around them
    (policy, provenance, replay id): two imports of one server log, or a log and its replay."""
    digest = hashlib.blake2b(player.encode(), digest_size=16)
    digest.update(np.ascontiguousarray(observations, dtype=np.float32).tobytes())
    digest.update(np.asarray(actions, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def _first_nonfinite(block: npt.NDArray[np.float32], steps: int) -> str:
    row, column = (int(v) for v in np.argwhere(~np.isfinite(block))[0])
    return f"steps[{row}].observation[{column}]" if row < steps else f"final_observation[{column}]"


class ShardBuilder:
    """Collects trajectories until a shard is full, then writes it and starts over."""

    def __init__(self, path: Path, header: DatasetHeader, store: Path) -> None:
        self.path, self.header, self.store = path, header, store
        self.shard_header = {name: getattr(header, name) for name in _SHARD_HEADER}
        self._clear()

    def _clear(self) -> None:
        self.blocks: list[npt.NDArray[np.float32]] = []
        self.masks: list[npt.NDArray[np.bool_]] = []
        self.actions: list[npt.NDArray[np.int64]] = []
        self.rewards: list[npt.NDArray[np.float32]] = []
        self.trajectories: list[dict[str, Any]] = []
        self.returns: list[float] = []
        self.truncated: list[bool] = []
        self.rows = 0

    def add(self, line_no: int, record: TrajectoryRecord) -> None:
        steps, size = record.steps, self.header.observation_size
        n = len(steps)
        block = np.zeros((n + 1, size), dtype=np.float32)
        mask = np.zeros((n + 1, self.header.num_actions), dtype=bool)
        with np.errstate(over="ignore", invalid="ignore"):
            block[:n] = [step.observation for step in steps]
            if record.final_observation is not None:
                block[n] = record.final_observation
            step_rewards = np.array([step.reward for step in steps], dtype=np.float32)
            total = np.float32(record.total_reward)
        if not np.isfinite(block).all():
            raise DatasetError(
                self.path, line_no, _first_nonfinite(block, n), "value overflows float32"
            )
        if not (np.isfinite(step_rewards).all() and np.isfinite(total)):
            raise DatasetError(self.path, line_no, "reward", "a reward overflows float32")
        mask[:n] = [step.action_mask for step in steps]
        if record.final_action_mask is not None:
            mask[n] = record.final_action_mask
        actions = np.array([action_index(s.action_type, s.action_target) for s in steps])
        self.blocks.append(block)
        self.masks.append(mask)
        self.actions.append(actions)
        self.rewards.append(step_rewards)
        self.returns.append(float(total))
        self.truncated.append(record.truncated)
        provenance = record.provenance.model_dump() if record.provenance is not None else None
        self.trajectories.append(
            {
                "replay_id": record.replay_id,
                "player": record.player,
                "policy": record.policy,
                "provenance": provenance,
                "digest": decisions_digest(record.player, block[:n], actions),
            }
        )
        self.rows += n + 1

    def flush(self) -> Shard | None:
        if not self.blocks:
            return None
        lengths = np.array([len(a) for a in self.actions], dtype=np.int64)
        terminals = np.zeros(int(lengths.sum()), dtype=np.float32)
        ends = np.cumsum(lengths) - 1
        terminals[ends[~np.asarray(self.truncated, dtype=bool)]] = 1.0
        content = ShardContent(
            observations=np.concatenate(self.blocks),
            masks=np.concatenate(self.masks),
            actions=np.concatenate(self.actions),
            rewards=np.concatenate(self.rewards),
            terminals=terminals,
            lengths=lengths,
            returns=np.asarray(self.returns, dtype=np.float32),
            truncated=np.asarray(self.truncated, dtype=bool),
            trajectories=self.trajectories,
        )
        self._clear()
        return write_shard(content, self.store, self.shard_header)
