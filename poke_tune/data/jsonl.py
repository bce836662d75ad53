"""Reading and writing trajectory files (trajectory-JSONL, plain or gzip).

A trajectory file (`.jsonl`, or gzip, detected by its magic bytes) holds a header line,
`{"header": {...}}` (`DatasetHeader`), then one `TrajectoryRecord` per line: one player's
view of one battle. Every defect is a `DatasetError` naming `file:line: field: problem`.
The record models and their checks are in `records.py`; `compiled.py` turns a file into
the memory-mapped arrays training reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from poke_tune.data.records import (
    DatasetError,
    DatasetHeader,
    TrajectoryRecord,
    header_problem,
    record_problem,
    validation_problem,
)
from poke_tune.sim.actions import ACTION_LAYOUT
from poke_tune.sim.encoding import ENCODER_VERSION

__all__ = [
    "TrajectoryWriter",
    "open_trajectories",
    "read_header",
    "read_trajectories",
    "write_trajectories",
]

_logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"


class _HeaderLine(BaseModel):
    header: DatasetHeader


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
        field, problem = validation_problem(error)
        problem += '; line 1 must be {"header": {...}}'
        raise DatasetError(path, 1, field, problem) from None
    refused = header_problem(header, expected_encoder_version, expected_action_layout)
    if refused is not None:
        raise DatasetError(path, 1, *refused)
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
            raise DatasetError(path, line_no, *validation_problem(error)) from None
        problem = record_problem(record, header)
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


@contextmanager
def open_trajectories(
    path: Path,
    *,
    expected_encoder_version: str | None = ENCODER_VERSION,
    expected_action_layout: str | None = ACTION_LAYOUT,
) -> Iterator[tuple[DatasetHeader, Iterator[tuple[int, TrajectoryRecord]]]]:
    """The validated header of an open trajectory file and its records, validated lazily as
    (line number, record) in one pass; the file closes when the `with` block ends."""
    path = Path(path)
    with closing(_lines(path)) as lines:
        header = _parse_header(path, lines, expected_encoder_version, expected_action_layout)
        yield header, _records(path, lines, header)


def read_trajectories(
    path: Path,
    *,
    expected_encoder_version: str | None = ENCODER_VERSION,
    expected_action_layout: str | None = ACTION_LAYOUT,
) -> Iterator[TrajectoryRecord]:
    """Validate a trajectory file lazily, yielding its records in order."""
    with open_trajectories(
        path,
        expected_encoder_version=expected_encoder_version,
        expected_action_layout=expected_action_layout,
    ) as (_, records):
        for _, record in records:
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
            problem = record_problem(record, self.header)
            if problem is not None:
                field, message = problem
                raise ValueError(
                    f"{self.path}: trajectory {self.lines_written - 1} "
                    f"({record.replay_id} {record.player}): {field}: {message}"
                )
        # Generated files leave `provenance` out: their bytes (and cache keys) stay as they were.
        self._write_line(record.model_dump(exclude=None if record.provenance else {"provenance"}))

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
