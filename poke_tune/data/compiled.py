"""The compiled dataset: a trajectory file validated once and cached as memory-mapped arrays.

`load_dataset` validates a file once and compiles it into
`<cache>/datasets/<sha256[:16]>/`, one `.npy` per array, in the *row layout*: each
trajectory of n steps owns n + 1 consecutive rows of `observations`/`action_masks`, the
last holding s' of its final step (zeros and an all-False mask after a real terminal; the
recorded `final_observation`/`final_action_mask` when the battle was cut off). Transition
i starts at row `rows[i]` and its next observation is row `rows[i] + 1`, so s' needs no
copy. Later loads memory-map the arrays read-only, so processes share their pages.
The file format is `jsonl.py`'s job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from poke_tune.data.jsonl import open_trajectories
from poke_tune.data.records import (
    ACTION_TYPES,
    DatasetError,
    DatasetHeader,
    header_problem,
)
from poke_tune.sim.actions import ACTION_LAYOUT, action_index, action_parts
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.runtime import cache_dir

__all__ = ["OfflineDataset", "dataset_info", "load_dataset"]

_logger = logging.getLogger(__name__)

_CACHE_FORMAT = 1  # bump when the compiled layout changes: stale cache folders are rebuilt
_TRANSITION_ARRAYS = ("rows", "actions", "rewards", "terminals", "trajectory_ids")
_TRAJECTORY_ARRAYS = ("trajectory_returns", "trajectory_truncated")
_ROW_ARRAYS = ("observations", "action_masks")


@dataclass(frozen=True, eq=False, kw_only=True)
class OfflineDataset:
    """A compiled trajectory file, memory-mapped read-only (row layout, see the module doc)."""

    source: Path
    """The trajectory file this was loaded from."""
    folder: Path
    """The cache folder holding the arrays."""
    key: str
    """First 16 hex digits of the source file's sha256."""
    header: DatasetHeader
    size_bytes: int
    """Size of the source file."""
    observations: npt.NDArray[np.float32]
    """[rows, observation_size]."""
    action_masks: npt.NDArray[np.bool_]
    """[rows, num_actions]; the legal actions at each row's observation."""
    rows: npt.NDArray[np.int64]
    """[transitions] row of s; s' is row + 1."""
    actions: npt.NDArray[np.int64]
    """[transitions] flat action index."""
    rewards: npt.NDArray[np.float32]
    terminals: npt.NDArray[np.float32]
    """[transitions] 1.0 on the last step of a trajectory that was not cut off."""
    trajectory_ids: npt.NDArray[np.int32]
    """[transitions] index of the trajectory (ascending, contiguous)."""
    trajectory_returns: npt.NDArray[np.float32]
    """[trajectories] recorded total_reward."""
    trajectory_truncated: npt.NDArray[np.bool_]
    replay_ids: tuple[str, ...]
    players: tuple[str, ...]
    policies: tuple[str, ...]

    @property
    def num_transitions(self) -> int:
        """Number of (s, a, r, s') transitions."""
        return len(self.rows)

    @property
    def num_trajectories(self) -> int:
        """Number of trajectories (one per player per battle)."""
        return len(self.trajectory_returns)

    @property
    def observation_size(self) -> int:
        """Length of one observation vector."""
        return self.header.observation_size

    @property
    def num_actions(self) -> int:
        """Number of flat actions."""
        return self.header.num_actions

    @property
    def next_rows(self) -> npt.NDArray[np.int64]:
        """[transitions] row of s' (a new array on every access)."""
        return self.rows + 1

    def split(
        self, val_fraction: float = 0.1, seed: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(train, val) sorted transition indices, split by trajectory with a seeded shuffle.

        The validation side gets round(val_fraction * trajectories) trajectories, at least
        one when val_fraction > 0, and never all of them.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        count = self.num_trajectories
        num_val = 0 if val_fraction == 0 else min(count - 1, max(1, round(val_fraction * count)))
        in_val = np.zeros(count, dtype=bool)
        in_val[np.random.default_rng(seed).permutation(count)[:num_val]] = True
        val_transitions = in_val[self.trajectory_ids]
        return np.flatnonzero(~val_transitions), np.flatnonzero(val_transitions)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle by reference to the cache folder: workers re-map the same files.
        return (_open_compiled, (self.folder, self.source))


def _file_key(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:16]


def _read_meta(folder: Path) -> dict[str, Any] | None:
    """The folder's meta.json, or None when missing, unreadable or of an older layout."""
    try:
        meta: dict[str, Any] = orjson.loads((folder / "meta.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return meta if meta.get("cache_format") == _CACHE_FORMAT else None


def _open_compiled(folder: Path, source: Path) -> OfflineDataset:
    meta = _read_meta(folder)
    if meta is None:
        raise FileNotFoundError(f"no compiled dataset in {folder}")
    arrays = {
        name: np.load(folder / f"{name}.npy", mmap_mode="r")
        for name in _ROW_ARRAYS + _TRANSITION_ARRAYS + _TRAJECTORY_ARRAYS
    }
    counts = meta["counts"]
    if (
        len(arrays["rows"]) != counts["transitions"]
        or len(arrays["observations"]) != counts["rows"]
    ):
        raise ValueError(f"corrupt dataset cache {folder}: array lengths disagree with meta.json")
    return OfflineDataset(
        source=Path(source),
        folder=folder,
        key=meta["key"],
        header=DatasetHeader.model_validate(meta["header"]),
        size_bytes=meta["source_size_bytes"],
        replay_ids=tuple(meta["replay_ids"]),
        players=tuple(meta["players"]),
        policies=tuple(meta["policies"]),
        **arrays,
    )


def _first_nonfinite(block: npt.NDArray[np.float32], steps: int) -> str:
    row, column = (int(v) for v in np.argwhere(~np.isfinite(block))[0])
    return f"steps[{row}].observation[{column}]" if row < steps else f"final_observation[{column}]"


def _compile(
    path: Path,
    out: Path,
    key: str,
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> None:
    """Validate the trajectory file `path` in one pass (its header before any record) and
    write its arrays and meta.json into the empty folder `out`."""
    started = time.perf_counter()
    with open_trajectories(
        path,
        expected_encoder_version=expected_encoder_version,
        expected_action_layout=expected_action_layout,
    ) as (header, records):
        size, num_actions = header.observation_size, header.num_actions
        observations: list[npt.NDArray[np.float32]] = []
        masks: list[npt.NDArray[np.bool_]] = []
        actions: list[int] = []
        rewards: list[npt.NDArray[np.float32]] = []
        lengths: list[int] = []
        truncated: list[bool] = []
        returns: list[float] = []
        replay_ids: list[str] = []
        players: list[str] = []
        policies: list[str] = []
        for line_no, record in records:
            steps = record.steps
            n = len(steps)
            block = np.zeros((n + 1, size), dtype=np.float32)
            mask = np.zeros((n + 1, num_actions), dtype=bool)
            with np.errstate(over="ignore", invalid="ignore"):
                block[:n] = [step.observation for step in steps]
                if record.final_observation is not None:
                    block[n] = record.final_observation
                step_rewards = np.array([step.reward for step in steps], dtype=np.float32)
                total = np.float32(record.total_reward)
            if not np.isfinite(block).all():
                field = _first_nonfinite(block, n)
                raise DatasetError(path, line_no, field, "value overflows float32")
            if not (np.isfinite(step_rewards).all() and np.isfinite(total)):
                raise DatasetError(path, line_no, "reward", "a reward overflows float32")
            mask[:n] = [step.action_mask for step in steps]
            if record.final_action_mask is not None:
                mask[n] = record.final_action_mask
            observations.append(block)
            masks.append(mask)
            rewards.append(step_rewards)
            actions.extend(action_index(step.action_type, step.action_target) for step in steps)
            lengths.append(n)
            truncated.append(record.truncated)
            returns.append(float(total))
            replay_ids.append(record.replay_id)
            players.append(record.player)
            policies.append(record.policy)
    if not lengths:
        raise DatasetError(path, 2, "", "no trajectories after the header")

    steps_per = np.asarray(lengths, dtype=np.int64)
    num_rows = int(steps_per.sum()) + len(lengths)
    trajectory_ids = np.repeat(np.arange(len(lengths), dtype=np.int32), steps_per)
    rows = np.arange(len(actions), dtype=np.int64) + trajectory_ids  # one extra row per trajectory
    terminals = np.zeros(len(actions), dtype=np.float32)
    ends = np.cumsum(steps_per) - 1
    terminals[ends[~np.asarray(truncated)]] = 1.0

    for name, chunks, dtype, width in (
        ("observations", observations, np.float32, size),
        ("action_masks", masks, np.bool_, num_actions),
    ):
        target = np.lib.format.open_memmap(
            out / f"{name}.npy", mode="w+", dtype=dtype, shape=(num_rows, width)
        )
        np.concatenate(chunks, out=target)
        target.flush()
        del target
    columns: dict[str, npt.NDArray[Any]] = {
        "rows": rows,
        "actions": np.asarray(actions, dtype=np.int64),
        "rewards": np.concatenate(rewards),
        "terminals": terminals,
        "trajectory_ids": trajectory_ids,
        "trajectory_returns": np.asarray(returns, dtype=np.float32),
        "trajectory_truncated": np.asarray(truncated, dtype=bool),
    }
    for name, array in columns.items():
        np.save(out / f"{name}.npy", array)
    meta = {
        "cache_format": _CACHE_FORMAT,
        "key": key,
        "source": str(path.resolve()),
        "source_size_bytes": path.stat().st_size,
        "header": header.model_dump(),
        "counts": {
            "battles": len(set(replay_ids)),
            "trajectories": len(lengths),
            "transitions": len(actions),
            "rows": num_rows,
        },
        "replay_ids": replay_ids,
        "players": players,
        "policies": policies,
    }
    (out / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    elapsed = time.perf_counter() - started
    _logger.info(
        "compiled %s: %d trajectories, %d transitions in %.1f s (%.0f transitions/s)",
        path,
        len(lengths),
        len(actions),
        elapsed,
        len(actions) / max(elapsed, 1e-9),
    )


def _compile_into(
    path: Path,
    folder: Path,
    key: str,
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> None:
    """Compile into a private temp folder, then move it into place atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=folder.parent))
    try:
        _compile(path, staging, key, expected_encoder_version, expected_action_layout)
        if folder.exists() and _read_meta(folder) is None:  # stale layout or a broken folder
            stale = folder.with_name(f".{key}.stale-{uuid.uuid4().hex}")
            with suppress(FileNotFoundError):  # another process moved it first
                os.replace(folder, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:
            if _read_meta(folder) is None:
                raise
            _logger.debug("another process compiled %s first", folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _compiled_folder(
    path: Path,
    cache_root: Path | None,
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> Path:
    """The cache folder of `path`'s arrays, compiled first if it holds none."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, expected a dataset file (.jsonl or .jsonl.gz)"
        )
    key = _file_key(path)
    folder = (cache_root if cache_root is not None else cache_dir() / "datasets") / key
    meta = _read_meta(folder)
    if meta is None:
        _compile_into(path, folder, key, expected_encoder_version, expected_action_layout)
        return folder
    refused = header_problem(
        DatasetHeader.model_validate(meta["header"]),
        expected_encoder_version,
        expected_action_layout,
    )
    if refused is not None:
        raise DatasetError(path, 1, *refused)
    return folder


def load_dataset(
    path: Path,
    *,
    cache_root: Path | None = None,
    expected_encoder_version: str | None = ENCODER_VERSION,
    expected_action_layout: str | None = ACTION_LAYOUT,
) -> OfflineDataset:
    """Validate and compile a trajectory file once, then memory-map the cached arrays.

    Args:
        cache_root: where compiled datasets live; default `<poke-tune cache>/datasets`.
        expected_encoder_version: header value required (None accepts any).
        expected_action_layout: header value required (None accepts any this code decodes).
    """
    path = Path(path)
    return _open_compiled(
        _compiled_folder(path, cache_root, expected_encoder_version, expected_action_layout),
        source=path,
    )


def dataset_info(dataset: OfflineDataset) -> dict[str, Any]:
    """Summary statistics of a compiled dataset (for `poke-tune data info` and logs).

    Outcomes (`wins`/`losses`/`draws`) count trajectories that ended in a real terminal by
    the sign of their last step's reward, which holds the battle result; this assumes any
    reward shaping on that step is smaller than the +-1 outcome. Cut-off trajectories are
    counted apart, under `truncated`.
    """
    ids = dataset.trajectory_ids
    count, transitions = dataset.num_trajectories, dataset.num_transitions
    ends = np.flatnonzero(np.r_[ids[1:] != ids[:-1], True])
    final_rewards = np.asarray(dataset.rewards[ends])
    finished = ~np.asarray(dataset.trajectory_truncated)
    returns = np.asarray(dataset.trajectory_returns, dtype=np.float64)
    action_counts = np.bincount(dataset.actions, minlength=dataset.num_actions)
    by_type = np.zeros(len(ACTION_TYPES))
    for index, frequency in enumerate(action_counts):
        by_type[action_parts(index)[0]] += frequency
    legal = np.asarray(dataset.action_masks[dataset.rows]).sum(axis=1)
    return {
        "path": str(dataset.source),
        "key": dataset.key,
        "size_bytes": dataset.size_bytes,
        "encoder_version": dataset.header.encoder_version,
        "action_layout": dataset.header.action_layout,
        "battle_format": dataset.header.battle_format,
        "battles": len(set(dataset.replay_ids)),
        "trajectories": count,
        "transitions": transitions,
        "mean_steps_per_trajectory": transitions / count,
        "truncated_fraction": float(np.mean(dataset.trajectory_truncated)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "wins": int(np.sum(finished & (final_rewards > 0))),
        "losses": int(np.sum(finished & (final_rewards < 0))),
        "draws": int(np.sum(finished & (final_rewards == 0))),
        "truncated": int(np.sum(~finished)),
        "action_frequency": (action_counts / transitions).tolist(),
        "action_type_frequency": dict(
            zip(ACTION_TYPES, (by_type / transitions).tolist(), strict=True)
        ),
        "mean_legal_actions": float(legal.mean()),
        "policies": dict(sorted(Counter(dataset.policies).items())),
    }
