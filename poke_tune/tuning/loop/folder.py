"""The loop folder (`storage_path/NAME`): the rounds' sweep folders, the loop's spec as
run, its record (`poke_tune_loop.json`, rewritten atomically after every stage), its lock
(one process per loop) and its report folder. `Loop` is the one owner of that folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from poke_tune.tuning.experiment import folder_lock
from poke_tune.tuning.loop.plan import LoopSettings
from poke_tune.tuning.records import LoopRecord
from poke_tune.tuning.spec import SearchSpec

__all__ = ["LOOP_FILE", "LOOP_SPEC_FILE", "Loop", "LoopExistsError"]

LOOP_SPEC_FILE = "poke_tune_loop_spec.json"
LOOP_FILE = "poke_tune_loop.json"
LOCK_FILE = ".poke_tune_loop.lock"
REPORT_FOLDER = "report"


class LoopExistsError(ValueError):
    """`iterate` of a name whose loop folder already holds a loop or a sweep."""


@dataclass(frozen=True)
class Loop:
    """A loop's folder (`storage_path/NAME`): its spec, record, lock and report."""

    settings: LoopSettings

    @classmethod
    def open(cls, path: Path | str) -> Loop:
        spec_file = Path(path) / LOOP_SPEC_FILE
        if not spec_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a poke-tune loop folder (no {LOOP_SPEC_FILE}); expected "
                "STORAGE_PATH/NAME of `poke-tune iterate`"
            )
        # The tracking URI is stored as given: a loop with credentials in it is refused
        # at the start (`run_iterate`).
        spec = SearchSpec.model_validate_json(spec_file.read_text())
        return cls(LoopSettings.of(spec))

    @property
    def spec(self) -> SearchSpec:
        return self.settings.spec

    @property
    def folder(self) -> Path:
        return Path(self.spec.storage_path.removeprefix("file://")) / self.spec.name

    @property
    def started(self) -> bool:
        return (self.folder / LOOP_SPEC_FILE).is_file()

    @property
    def report_folder(self) -> Path:
        return self.folder / REPORT_FOLDER

    @contextmanager
    def lock(self) -> Iterator[None]:
        busy = f"loop {self.spec.name!r} in {self.folder} is in use by another process"
        with folder_lock(self.folder / LOCK_FILE, busy):
            yield

    def start(self, record: LoopRecord) -> None:
        _write(self.folder / LOOP_SPEC_FILE, self.spec.model_dump_json(indent=2))
        self.write(record)

    def read(self) -> LoopRecord:
        return LoopRecord.model_validate_json((self.folder / LOOP_FILE).read_text())

    def write(self, record: LoopRecord) -> None:
        _write(self.folder / LOOP_FILE, record.model_dump_json(indent=2))


def _write(path: Path, text: str) -> None:
    """Written under another name and renamed: a kill never leaves half a record."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)
