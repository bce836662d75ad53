"""The trajectory-file record models and their checks against the file's header.

A trajectory file holds a `DatasetHeader`, then one `TrajectoryRecord` per line: one
player's view of one battle. This module defines those models, `DatasetError` (every
defect, named `file:line: field: problem`) and the checks of a header against this poke-tune
and of each record against its header. The checks know nothing of files: each names a
(field, problem), and `jsonl.py`, which reads and writes the files, adds where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
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

from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_index

__all__ = [
    "ACTION_TYPES",
    "FORMAT_VERSION",
    "DatasetError",
    "DatasetHeader",
    "Provenance",
    "Step",
    "TrajectoryRecord",
    "header_problem",
    "record_problem",
    "validation_problem",
]

FORMAT_VERSION: Literal[1] = 1
"""Version of the trajectory-JSONL format written in every header."""

ACTION_TYPES = ("move", "switch", "tera")
"""Names of `Step.action_type` 0, 1 and 2."""


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


class Provenance(BaseModel):
    """Where an imported trajectory's battle came from (`poke-tune data import`); absent
    for generated battles. Player names are never stored: only keyed hashes of them."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    source: StrictStr
    """The file it was read from (`FILE:LINE` for a line of a JSONL file)."""
    battle_id: StrictStr
    """The server's room id or the replay's id."""
    rating: StrictFloat | StrictInt | None = None
    player: StrictStr
    """Keyed hash of this side's player name (groups one player's battles)."""
    opponent: StrictStr
    """Keyed hash of the other side's player name."""


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
    provenance: Provenance | None = None
    """Imported battles only; generated files leave the field out."""


# -- validation -----------------------------------------------------------------------------


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def validation_problem(error: ValidationError) -> tuple[str, str]:
    """The (field path, problem) of the first of pydantic's errors on one line, counting
    the rest."""
    errors = error.errors(include_url=False)
    first = errors[0]
    problem = first["msg"]
    value = first.get("input")
    if first["type"] != "json_invalid" and isinstance(value, str | int | float | bool):
        problem += f", got {value!r}"[:80]
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more errors on this line)"
    return _field_path(first["loc"]), problem


def header_problem(
    header: DatasetHeader,
    expected_encoder_version: str | None,
    expected_action_layout: str | None,
) -> tuple[str, str] | None:
    """The first (field path, problem) that refuses a header: a version other than the one
    expected (None skips that check), or actions this poke-tune cannot decode."""
    expected_versions = (
        ("encoder_version", header.encoder_version, expected_encoder_version),
        ("action_layout", header.action_layout, expected_action_layout),
    )
    for field, found, expected in expected_versions:
        if expected is not None and found != expected:
            hint = "; regenerate it with the current encoder" if field == "encoder_version" else ""
            problem = f"the file has {field} {found!r}, expected {expected!r}{hint}"
            return f"header.{field}", problem
    if header.action_layout != ACTION_LAYOUT:
        return (
            "header.action_layout",
            f"cannot decode actions of layout {header.action_layout!r}; "
            f"this poke-tune knows {ACTION_LAYOUT!r}",
        )
    if header.num_actions != NUM_ACTIONS:
        return (
            "header.num_actions",
            f"{header.num_actions} does not match the {NUM_ACTIONS} actions of {ACTION_LAYOUT}",
        )
    return None


def record_problem(record: TrajectoryRecord, header: DatasetHeader) -> tuple[str, str] | None:
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
            kind = ACTION_TYPES[step.action_type]
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
