"""Trajectory-JSONL files: validation, writing, and the memory-mapped columnar cache.

A trajectory file (`.jsonl`, or gzip, detected by its magic bytes) holds a header line,
`{"header": {...}}` (`DatasetHeader`), then one `TrajectoryRecord` per line: one player's
view of one battle. Every defect is a `DatasetError` naming `file:line: field: problem`.

`load_dataset` validates a file once and compiles it into
`<cache>/datasets/<sha256[:16]>/`, one `.npy` per array, in the *row layout*: each
trajectory of n steps owns n + 1 consecutive rows of `observations`/`action_masks`, the
last holding s' of its final step (zeros and an all-False mask after a real terminal; the
recorded `final_observation`/`final_action_mask` when the battle was cut off). Transition
i starts at row `rows[i]` and its next observation is row `rows[i] + 1`, so s' needs no
copy. Later loads memory-map the arrays read-only, so processes share their pages.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SerializationInfo,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
)
from pydantic_core import CoreSchema, core_schema

from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_index, action_parts
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.runtime import cache_dir

__all__ = [
    "FORMAT_VERSION",
    "DatasetError",
    "DatasetHeader",
    "OfflineDataset",
    "Step",
    "TrajectoryRecord",
    "TrajectoryWriter",
    "dataset_info",
    "load_dataset",
    "read_header",
    "read_trajectories",
    "write_trajectories",
]

_logger = logging.getLogger(__name__)

FORMAT_VERSION: Literal[1] = 1
"""Version of the trajectory-JSONL format written in every header."""

_CACHE_FORMAT = 1  # bump when the compiled layout changes: stale cache folders are rebuilt
_GZIP_MAGIC = b"\x1f\x8b"
_ACTION_TYPES = ("move", "switch", "tera")
_TRANSITION_ARRAYS = ("rows", "actions", "rewards", "terminals", "trajectory_ids")
_TRAJECTORY_ARRAYS = ("trajectory_returns", "trajectory_truncated")
_ROW_ARRAYS = ("observations", "action_masks")


class DatasetError(ValueError):
    """A malformed trajectory file; the message reads `file:line: field: problem`."""

    def __init__(self, path: Path | str, line: int, field: str, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(f"{path}:{line}: {field + ': ' if field else ''}{problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.field, self.problem))


# -- record models ------------------------------------------------------------------------


class _Vector:
    """Pydantic marker: a JSON list of floats/bools, or from Python also a 1-D numpy array.

    JSON input goes through pydantic-core's list validator (fast, exact error locations);
    numpy input is copied as float32/bool so `TrajectoryWriter` can hand it to orjson as is.
    """

    def __init__(self, dtype: type[np.float32] | type[np.bool_]) -> None:
        self.dtype = dtype

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        item: CoreSchema
        if self.dtype is np.float32:
            item = core_schema.float_schema(strict=True, allow_inf_nan=False)
        else:
            item = core_schema.bool_schema()
        items = core_schema.list_schema(item)
        return core_schema.json_or_python_schema(
            json_schema=items,
            python_schema=core_schema.no_info_wrap_validator_function(self._validate, items),
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_vector, info_arg=True
            ),
        )

    def _validate(self, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(value, np.ndarray):
            return handler(value)
        if value.ndim != 1:
            raise ValueError(f"expected a 1-D array, got shape {value.shape}")
        if self.dtype is np.bool_:
            if value.dtype.kind not in "biu" or not np.isin(value, (0, 1)).all():
                raise ValueError(f"expected a 0/1 or bool array, got dtype {value.dtype}")
            return value.astype(np.bool_)
        if value.dtype.kind not in "iuf":
            raise ValueError(f"expected a numeric array, got dtype {value.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            array = value.astype(np.float32)
        if not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array))[0])
            raise ValueError(f"element {bad} is not a finite float32 ({value[bad]!r})")
        return array


def _serialize_vector(value: Any, info: SerializationInfo) -> Any:
    if isinstance(value, np.ndarray) and info.mode_is_json():
        return value.tolist()
    return value


_FloatVector = Annotated[list[float] | npt.NDArray[np.float32], _Vector(np.float32)]
_BoolVector = Annotated[list[bool] | npt.NDArray[np.bool_], _Vector(np.bool_)]


class DatasetHeader(BaseModel):
    """Line 1 of a trajectory file: the versions and sizes every record must match."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    format_version: Literal[1] = FORMAT_VERSION
    encoder_version: StrictStr
    observation_size: StrictInt = Field(gt=0)
    action_layout: StrictStr
    num_actions: StrictInt = Field(gt=0)
    battle_format: StrictStr
    generator: dict[str, Any] = Field(default_factory=dict)
    """Free-form provenance (policies, seeds, simulator version)."""


class _HeaderLine(BaseModel):
    header: DatasetHeader


class Step(BaseModel):
    """One decision: observation, chosen action, its reward, and the legal-action mask."""

    model_config = ConfigDict(allow_inf_nan=False)

    observation: _FloatVector
    action_type: StrictInt
    """0 move, 1 switch, 2 move + terastallize (see `poke_tune.sim.actions`)."""
    action_target: StrictInt
    reward: StrictFloat
    done: StrictBool
    """True exactly on the trajectory's last step."""
    action_mask: _BoolVector


class TrajectoryRecord(BaseModel):
    """One player's view of one battle: one line of a trajectory file."""

    model_config = ConfigDict(allow_inf_nan=False)

    replay_id: StrictStr
    player: Literal["p1", "p2"]
    policy: StrictStr
    total_reward: StrictFloat
    truncated: StrictBool
    """The battle was cut off by a turn limit: the last step is not a real terminal."""
    steps: list[Step] = Field(min_length=1)
    final_observation: _FloatVector | None = None
    """s' of the last step; present exactly when `truncated`."""
    final_action_mask: _BoolVector | None = None
    """The legal-action mask at `final_observation`; present exactly when `truncated`."""


# -- validation -----------------------------------------------------------------------------


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _from_validation_error(path: Path, line: int, error: ValidationError) -> DatasetError:
    errors = error.errors(include_url=False)
    first = errors[0]
    problem = first["msg"]
    value = first.get("input")
    if first["type"] != "json_invalid" and isinstance(value, str | int | float | bool):
        problem += f", got {value!r}"[:80]
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more errors on this line)"
    return DatasetError(path, line, _field_path(first["loc"]), problem)


def _check_header(
    path: Path,
    header: DatasetHeader,
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> None:
    if expected_encoder_version is not None and header.encoder_version != expected_encoder_version:
        raise DatasetError(
            path,
            1,
            "header.encoder_version",
            f"the file has encoder_version {header.encoder_version!r}, expected "
            f"{expected_encoder_version!r}; regenerate it with the current encoder",
        )
    if expected_action_layout is not None and header.action_layout != expected_action_layout:
        raise DatasetError(
            path,
            1,
            "header.action_layout",
            f"the file has action_layout {header.action_layout!r}, expected "
            f"{expected_action_layout!r}",
        )
    if header.action_layout != ACTION_LAYOUT:
        raise DatasetError(
            path,
            1,
            "header.action_layout",
            f"cannot decode actions of layout {header.action_layout!r}; "
            f"this poke-tune knows {ACTION_LAYOUT!r}",
        )
    if header.num_actions != NUM_ACTIONS:
        raise DatasetError(
            path,
            1,
            "header.num_actions",
            f"{header.num_actions} does not match the {NUM_ACTIONS} actions of {ACTION_LAYOUT}",
        )


def _record_problem(record: TrajectoryRecord, header: DatasetHeader) -> tuple[str, str] | None:
    """The first (field path, problem) that makes `record` inconsistent with `header`."""
    size, num_actions = header.observation_size, header.num_actions
    last = len(record.steps) - 1
    for i, step in enumerate(record.steps):
        if len(step.observation) != size:
            return (
                f"steps[{i}].observation",
                f"length {len(step.observation)}, expected observation_size {size}",
            )
        if len(step.action_mask) != num_actions:
            return (
                f"steps[{i}].action_mask",
                f"length {len(step.action_mask)}, expected num_actions {num_actions}",
            )
        try:
            index = action_index(step.action_type, step.action_target)
        except ValueError as error:
            bad = "action_type" if step.action_type not in (0, 1, 2) else "action_target"
            return f"steps[{i}].{bad}", str(error)
        if not step.action_mask[index]:
            kind = _ACTION_TYPES[step.action_type]
            return (
                f"steps[{i}].action_mask[{index}]",
                f"the mask forbids the chosen action {index} ({kind} {step.action_target})",
            )
        if step.done != (i == last):
            problem = (
                f"done is true before the last step ({last + 1} steps)"
                if step.done
                else "done is false on the last step"
            )
            return f"steps[{i}].done", problem
    for name, value, length in (
        ("final_observation", record.final_observation, size),
        ("final_action_mask", record.final_action_mask, num_actions),
    ):
        if record.truncated and value is None:
            return name, "missing; required when truncated is true (s' of the last step)"
        if not record.truncated and value is not None:
            return name, "must be null when truncated is false (the last step is terminal)"
        if value is not None and len(value) != length:
            return name, f"length {len(value)}, expected {length}"
    return None


def _lines(path: Path) -> Generator[tuple[int, bytes], None, None]:
    """(1-based line number, raw line) of a plain or gzip file."""
    with path.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    line_no = 0
    with gzip.open(path, "rb") if compressed else path.open("rb") as file:
        try:
            for line_no, line in enumerate(file, start=1):
                yield line_no, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise DatasetError(
                path, line_no + 1, "", f"corrupt or truncated gzip stream ({error})"
            ) from error


def _parse_header(
    path: Path,
    lines: Iterator[tuple[int, bytes]],
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> DatasetHeader:
    first = next(lines, None)
    if first is None:
        raise DatasetError(path, 1, "", "empty file; expected the header line")
    if not first[1].strip():
        raise DatasetError(path, 1, "", 'line 1 is empty; expected {"header": {...}}')
    try:
        header = _HeaderLine.model_validate_json(first[1]).header
    except ValidationError as error:
        problem = _from_validation_error(path, 1, error)
        raise DatasetError(
            path, 1, problem.field, problem.problem + '; line 1 must be {"header": {...}}'
        ) from None
    _check_header(path, header, expected_encoder_version, expected_action_layout)
    return header


def _records(
    path: Path, lines: Iterator[tuple[int, bytes]], header: DatasetHeader
) -> Iterator[tuple[int, TrajectoryRecord]]:
    by_key: dict[tuple[str, str], int] = {}
    by_content: dict[bytes, int] = {}
    for line_no, line in lines:
        if not line.strip():
            continue
        try:
            record = TrajectoryRecord.model_validate_json(line)
        except ValidationError as error:
            raise _from_validation_error(path, line_no, error) from None
        problem = _record_problem(record, header)
        if problem is not None:
            raise DatasetError(path, line_no, *problem)
        _check_repeat(path, line_no, line, record, by_key, by_content)
        yield line_no, record


def _check_repeat(
    path: Path,
    line_no: int,
    line: bytes,
    record: TrajectoryRecord,
    by_key: dict[tuple[str, str], int],
    by_content: dict[bytes, int],
) -> None:
    """Refuse a trajectory seen before (same replay_id and player, or the same line under
    another replay_id): repeats weigh twice and can land on both sides of the split."""
    key = (record.replay_id, record.player)
    first = by_key.setdefault(key, line_no)
    if first != line_no:
        raise DatasetError(
            path,
            line_no,
            "replay_id",
            f"trajectory {record.replay_id!r} {record.player} repeats line {first}",
        )
    content = line.strip().replace(orjson.dumps(record.replay_id), b"", 1)
    first = by_content.setdefault(hashlib.blake2b(content, digest_size=16).digest(), line_no)
    if first != line_no:
        raise DatasetError(
            path,
            line_no,
            "",
            f"trajectory {record.replay_id!r} {record.player} is a copy of line {first} "
            "under another replay_id",
        )


def read_header(
    path: Path,
    *,
    expected_encoder_version: str | None = ENCODER_VERSION,
    expected_action_layout: str | None = ACTION_LAYOUT,
) -> DatasetHeader:
    """The validated header of a trajectory file (None expectations skip that check)."""
    with closing(_lines(Path(path))) as lines:
        return _parse_header(Path(path), lines, expected_encoder_version, expected_action_layout)


def read_trajectories(
    path: Path,
    *,
    expected_encoder_version: str | None = ENCODER_VERSION,
    expected_action_layout: str | None = ACTION_LAYOUT,
) -> Iterator[TrajectoryRecord]:
    """Validate a trajectory file lazily, yielding its records in order."""
    path = Path(path)
    with closing(_lines(path)) as lines:
        header = _parse_header(path, lines, expected_encoder_version, expected_action_layout)
        for _, record in _records(path, lines, header):
            yield record


# -- writing --------------------------------------------------------------------------------


class TrajectoryWriter:
    """Writes a trajectory file record by record; gzip when the name ends in `.gz`.

    Lines go to `<path>.partial`, renamed to `path` on a clean `close()`; after an error
    inside a `with` block the partial file stays for inspection. `check=False` skips the
    consistency checks against the header (only tests need to write broken files).
    """

    def __init__(self, path: Path, header: DatasetHeader, *, check: bool = True) -> None:
        self.path = Path(path)
        self.header = header
        self.check = check
        self.lines_written = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._raw = self._partial.open("wb")
        # mtime=0 and no file name in the gzip header: the same records give the same bytes.
        self._file: io.BufferedIOBase = (
            gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0)
            if self.path.name.endswith(".gz")
            else self._raw
        )
        self._closed = False
        self._write_line({"header": header.model_dump()})

    def _write_line(self, obj: Any) -> None:
        self._file.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self.lines_written += 1

    def write(self, record: TrajectoryRecord | Mapping[str, Any]) -> None:
        """Append one trajectory; a mapping is validated as a `TrajectoryRecord` first.

        Raises pydantic's ValidationError for a malformed mapping, ValueError for a record
        inconsistent with the header (unless `check=False`).
        """
        if not isinstance(record, TrajectoryRecord):
            record = TrajectoryRecord.model_validate(record)
        if self.check:
            problem = _record_problem(record, self.header)
            if problem is not None:
                field, message = problem
                raise ValueError(
                    f"{self.path}: trajectory {self.lines_written - 1} "
                    f"({record.replay_id} {record.player}): {field}: {message}"
                )
        self._write_line(record.model_dump())

    def close(self) -> None:
        """Finish the file and move it into place."""
        if not self._closed:
            self._closed = True
            self._file.close()
            self._raw.close()
            os.replace(self._partial, self.path)

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._file.close()
            self._raw.close()
            _logger.warning("left the unfinished trajectory file %s", self._partial)


def write_trajectories(
    path: Path,
    header: DatasetHeader,
    trajectories: Iterable[TrajectoryRecord | Mapping[str, Any]],
    *,
    check: bool = True,
) -> int:
    """Write a trajectory file; returns the number of lines written (header included)."""
    with TrajectoryWriter(path, header, check=check) as writer:
        for record in trajectories:
            writer.write(record)
    return writer.lines_written


# -- the compiled dataset ------------------------------------------------------------------


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


def _compile(path: Path, header: DatasetHeader, out: Path, key: str) -> None:
    """Validate `path` and write its arrays and meta.json into the empty folder `out`."""
    started = time.perf_counter()
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
    with closing(_lines(path)) as lines:
        _parse_header(path, lines, None, None)
        for line_no, record in _records(path, lines, header):
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


def _compile_into(path: Path, header: DatasetHeader, folder: Path, key: str) -> None:
    """Compile into a private temp folder, then move it into place atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=folder.parent))
    try:
        _compile(path, header, staging, key)
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
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, expected a dataset file (.jsonl or .jsonl.gz)"
        )
    key = _file_key(path)
    folder = (cache_root if cache_root is not None else cache_dir() / "datasets") / key
    meta = _read_meta(folder)
    if meta is None:
        header = read_header(
            path,
            expected_encoder_version=expected_encoder_version,
            expected_action_layout=expected_action_layout,
        )
        _compile_into(path, header, folder, key)
    else:
        header = DatasetHeader.model_validate(meta["header"])
        _check_header(path, header, expected_encoder_version, expected_action_layout)
    return _open_compiled(folder, path)


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
    by_type = np.zeros(len(_ACTION_TYPES))
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
            zip(_ACTION_TYPES, (by_type / transitions).tolist(), strict=True)
        ),
        "mean_legal_actions": float(legal.mean()),
        "policies": dict(sorted(Counter(dataset.policies).items())),
    }
