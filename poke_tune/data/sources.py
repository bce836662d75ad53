"""Reading an import's sources safely: files strangers wrote, read within fixed bounds.

Only regular files are read (a symlink to one is followed; a FIFO, a device, a socket or a
symlink loop is refused unread, and a file is opened non-blocking, then checked again, so
one swapped in meanwhile cannot block). Each file is read within `ReadLimits`: its size on
disk, the bytes of one battle (a whole `.log.json` or replay file, or one JSONL line) and
the bytes a JSONL(.gz) file may decompress to. JSONL is streamed line by line with a
bounded `readline`, so memory never holds more than one battle's bytes of a file; an
over-long line is skipped to its end in bounded pieces.

`read_sources` yields each battle's JSON bytes (`RawBattle`) or a `Refusal` naming what was
wrong: unreadable (permissions, a symlink loop, an unreadable subfolder), not a regular
file, too large, corrupt (a truncated gzip stream). Paths are shown as `names.display_path`
shows them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from poke_tune.data.names import display_path

__all__ = [
    "CORRUPT",
    "MIB",
    "NOT_REGULAR",
    "TOO_LARGE",
    "UNREADABLE",
    "RawBattle",
    "ReadLimits",
    "Refusal",
    "read_sources",
    "source_files",
    "sources_digest",
]

MIB = 1 << 20

# Refusal reasons of reading (the summary counts battles per reason).
UNREADABLE = "unreadable"
NOT_REGULAR = "not a regular file"
TOO_LARGE = "too large"
CORRUPT = "truncated or corrupt JSON"


@dataclass(frozen=True)
class Refusal:
    """A battle (or a whole file) not imported, and why."""

    source: str
    reason: str  # one of the reason constants: the summary counts by it
    detail: str


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what an import reads (CLI: `--max-file-mb`, `--max-battle-mb`,
    `--max-decompressed-mb`). A battle is 20-200 KB; the defaults leave wide margins."""

    max_file_bytes: int = 1024 * MIB
    """A source file's size on disk."""
    max_battle_bytes: int = 16 * MIB
    """One battle's JSON: a whole `.log.json` or replay file, or one line of a JSONL file."""
    max_decompressed_bytes: int = 2048 * MIB
    """What one JSONL(.gz) file may decompress to (a gzip bomb stops here)."""

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_battle_bytes", "max_decompressed_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 byte, got {getattr(self, name)}")


@dataclass(frozen=True)
class RawBattle:
    """One battle's JSON bytes and where they were read."""

    source: str  # display path, `:LINE` for a JSONL line
    data: bytes


def _walk(root: Path) -> Iterator[Path | tuple[Path, OSError]]:
    """Every `*.log.json` below `root`, sorted; an unreadable subfolder as (folder, error).
    Symlinked folders are not entered (no loops)."""
    errors: list[OSError] = []
    for folder, folders, files in os.walk(root, onerror=errors.append):
        while errors:
            error = errors.pop()
            yield Path(error.filename or folder), error
        folders.sort()
        for name in sorted(files):
            if name.endswith(".log.json"):
                yield Path(folder) / name
    while errors:
        error = errors.pop()
        yield Path(error.filename or root), error


def source_files(sources: Sequence[Path]) -> Iterator[tuple[Path, Path | tuple[Path, OSError]]]:
    """(root, file) for every file the sources name: files as given, folders searched for
    `*.log.json`; (root, (folder, error)) for a folder that could not be listed. Raises
    FileNotFoundError for a source that does not exist."""
    for source in sources:
        if not os.path.lexists(source):
            raise FileNotFoundError(f"{source}: no such file or folder")
    for source in sources:
        if _is_dir(source):
            for found in _walk(source):
                yield source, found
        else:
            yield source, source


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _open_regular(path: Path, limits: ReadLimits) -> int:
    """A read-only descriptor of `path` if it is a regular file within the size limit;
    raises `_Refused` otherwise."""
    try:
        before = os.stat(path)
    except OSError as error:
        raise _Refused(UNREADABLE, _os_reason(error)) from None
    if not stat.S_ISREG(before.st_mode):
        raise _Refused(NOT_REGULAR, f"{_kind(before.st_mode)}, not a regular file")
    if before.st_size > limits.max_file_bytes:
        limit = _mib_limit("file", limits)
        raise _Refused(TOO_LARGE, f"{_mib(before.st_size)} on disk, over {limit}")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise _Refused(UNREADABLE, _os_reason(error)) from None
    after = os.fstat(descriptor)
    if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
        before.st_dev,
        before.st_ino,
    ):
        os.close(descriptor)
        raise _Refused(NOT_REGULAR, "replaced while being opened, not a regular file")
    return descriptor


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _os_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return "a special file"


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def _mib_limit(which: str, limits: ReadLimits) -> str:
    flag, size = {
        "file": ("--max-file-mb", limits.max_file_bytes),
        "battle": ("--max-battle-mb", limits.max_battle_bytes),
        "gzip": ("--max-decompressed-mb", limits.max_decompressed_bytes),
    }[which]
    return f"the limit of {size / MIB:g} MiB ({flag})"


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def read_sources(
    sources: Sequence[Path], limits: ReadLimits, key: bytes
) -> Iterator[RawBattle | Refusal]:
    """Every battle's JSON bytes in the sources, in order, or a `Refusal` for what cannot be
    read (see the module docstring)."""
    for root, found in source_files(sources):
        if isinstance(found, tuple):
            folder, error = found
            where = display_path(root, folder, key)
            yield Refusal(where, UNREADABLE, f"{where}: folder not listed: {_os_reason(error)}")
            continue
        where = display_path(root, found, key)
        try:
            descriptor = _open_regular(found, limits)
        except _Refused as refused:
            yield Refusal(where, refused.reason, f"{where}: {refused.detail}")
            continue
        with os.fdopen(descriptor, "rb") as raw:
            if _is_jsonl(found):
                yield from _jsonl(raw, where, limits)
            else:
                yield _whole(raw, where, limits)


def _whole(raw: io.BufferedReader, where: str, limits: ReadLimits) -> RawBattle | Refusal:
    try:
        data = raw.read(limits.max_battle_bytes + 1)
    except OSError as error:
        return Refusal(where, UNREADABLE, f"{where}: {_os_reason(error)}")
    if len(data) > limits.max_battle_bytes:
        return Refusal(where, TOO_LARGE, f"{where}: a battle over {_mib_limit('battle', limits)}")
    return RawBattle(where, data)


def _jsonl(
    raw: io.BufferedReader, where: str, limits: ReadLimits
) -> Iterator[RawBattle | Refusal]:
    """The lines of a JSONL file, gzip or not, each at most `max_battle_bytes`."""
    try:
        compressed = raw.peek(2)[:2] == b"\x1f\x8b"
        stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw) if compressed else raw
        read = 0
        number = 0
        while True:
            line = stream.readline(limits.max_battle_bytes + 2)  # the battle and "\n"
            if not line:
                return
            number += 1
            read += len(line)
            ended = line.endswith(b"\n")
            too_large = len(line) - ended > limits.max_battle_bytes
            skipped = 0
            if too_large and not ended:
                skipped = _skip_line(stream, limits.max_decompressed_bytes - read)
                read += skipped
            if read > limits.max_decompressed_bytes:
                yield Refusal(
                    where,
                    TOO_LARGE,
                    f"{where}: decompresses past {_mib_limit('gzip', limits)} at line {number}; "
                    "the rest of the file is not read",
                )
                return
            at = f"{where}:{number}"
            if too_large:
                yield Refusal(at, TOO_LARGE, f"{at}: a line over {_mib_limit('battle', limits)}")
            elif line.strip():
                yield RawBattle(at, line)
    except (OSError, EOFError, zlib.error) as error:
        unreadable = isinstance(error, OSError) and not isinstance(error, gzip.BadGzipFile)
        reason = UNREADABLE if unreadable else CORRUPT
        yield Refusal(where, reason, f"{where}: {error} (a truncated file?)")


def _skip_line(stream: io.BufferedIOBase, budget: int) -> int:
    """Read past the rest of an over-long line in bounded pieces; the bytes read (stops
    once past `budget`)."""
    skipped = 0
    while skipped <= budget:
        piece = stream.readline(MIB)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            break
    return skipped


def sources_digest(sources: Sequence[Path], limits: ReadLimits | None = None) -> str:
    """A content hash of every file the sources name (a cache key for an import); what
    cannot be read safely (see `read_sources`) counts by its name and why."""
    limits = limits or ReadLimits()
    digest = hashlib.blake2b(digest_size=16)
    for _, found in source_files(sources):
        if isinstance(found, tuple):
            digest.update(b"unlisted\0" + os.fsencode(found[0].name) + b"\0")
            continue
        digest.update(os.fsencode(found.name) + b"\0")
        try:
            descriptor = _open_regular(found, limits)
        except _Refused as refused:
            digest.update(refused.reason.encode() + b"\0")
            continue
        with os.fdopen(descriptor, "rb") as file:
            left = limits.max_file_bytes
            while left > 0 and (block := file.read(min(MIB, left))):
                digest.update(block)
                left -= len(block)
    return digest.hexdigest()
