"""The experiment folder (`storage_path/name`) and what poke-tune keeps in it.

Ray Tune owns the folder's trial directories and experiment state; `Experiment` owns the
rest, and is the one place that knows the folder's path, whether it is on this machine,
and the names of poke-tune's files in it:
- `poke_tune_spec.json`: the spec as run (overrides applied), so `resume`, `best`,
  `confirm` and `track` need only the folder;
- `poke_tune_run.json`: how the sweep was started and where its life cycle stands
  (`SweepRecord`: searching, interrupted, searched, confirmed);
- `poke_tune_confirmation.json`: the confirmation stage's result;
- `report/`: stage 3's files (trials table, Optuna plots, confirmation table and charts),
  written whether or not MLflow is on;
- `mlflow_unsent.json`: tracking writes an outage kept back;
- `.poke_tune.lock`: held while a process works on the sweep (one at a time).

Shared object storage (`s3://...`) has no folder here: Tune keeps its state there, and
poke-tune's own files are not written (one driver per sweep is then the user's rule).
URIs and command lines are stored with credentials redacted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from poke_tune.tuning.records import SweepRecord, SweepStage
from poke_tune.tuning.redaction import is_redacted, redact, redacted
from poke_tune.tuning.spec import SearchSpec

__all__ = ["Experiment", "SweepLockedError", "folder_lock", "is_local", "storage_problem"]

SPEC_FILE = "poke_tune_spec.json"
RUN_FILE = "poke_tune_run.json"
CONFIRMATION_FILE = "poke_tune_confirmation.json"
UNSENT_FILE = "mlflow_unsent.json"
REPORT_FOLDER = "report"
LOCK_FILE = ".poke_tune.lock"


class SweepLockedError(ValueError):
    """Another process works on this experiment folder."""


def is_local(storage_path: str) -> bool:
    """A plain folder or a file:// URI (anything else is a pyarrow/fsspec filesystem)."""
    return "://" not in storage_path or storage_path.startswith("file://")


def storage_problem(storage_path: str, *, shared: bool, nodes: int) -> str | None:
    """Why `storage_path` cannot serve a cluster of `nodes` alive nodes, or None."""
    if nodes <= 1 or shared or not is_local(storage_path):
        return None
    return (
        f"storage_path {storage_path!r} is a local folder, but the Ray cluster has {nodes} "
        "nodes: trials on other nodes would write their checkpoints to their own disks, "
        "where the driver cannot read them back (Ray Tune does not sync node-local folders). "
        "Use shared storage: s3://BUCKET/PREFIX (MinIO: set AWS_ENDPOINT_URL on the cluster, "
        "or append ?endpoint_override=HOST:PORT&scheme=http), gs://BUCKET/PREFIX, or a folder "
        "mounted at the same path on every node (NFS) declared with `storage_shared: true` "
        "(or --set storage_shared=true)."
    )


@contextmanager
def folder_lock(lock_file: Path, busy: str) -> Iterator[None]:
    """Hold a folder for this process through its `lock_file` (an OS lock, freed on any
    exit); another process holding it is a `SweepLockedError` with the message `busy`."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_file, timeout=0):
            yield
    except Timeout:
        raise SweepLockedError(busy) from None


@dataclass(frozen=True)
class Experiment:
    """A sweep's experiment folder, named by its spec (`storage_path/name`)."""

    spec: SearchSpec

    @classmethod
    def open(cls, path: Path | str, *, tracking_uri: str | None = None) -> Experiment:
        """The experiment a folder holds, with the spec it was started with.

        A tracking URI with credentials is stored redacted: the real one comes from
        `tracking_uri` or MLFLOW_TRACKING_URI.
        """
        spec_file = Path(path) / SPEC_FILE
        if not spec_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a poke-tune experiment folder (no {SPEC_FILE}); "
                "expected STORAGE_PATH/NAME of a sweep, e.g. runs/ray/cql-alpha"
            )
        raw = json.loads(spec_file.read_text())
        stored = raw.get("mlflow", {}).get("tracking_uri")
        if is_redacted(stored):
            uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
            if not uri or redact(uri) != stored:
                raise ValueError(
                    f"{path}: the sweep's tracking URI {stored} had credentials, which are "
                    "not stored: set MLFLOW_TRACKING_URI (or --tracking-uri) to the full URI"
                )
            raw["mlflow"]["tracking_uri"] = uri
        return cls(SearchSpec.model_validate(raw))

    def reconfirmed(self, *, top_k: int | None = None, battles: int | None = None) -> Experiment:
        """The same experiment with its confirmation on and, where given, more candidates
        or battles (`poke-tune confirm`)."""
        update = {k: v for k, v in (("top_k", top_k), ("battles", battles)) if v is not None}
        settings = self.spec.confirm.model_copy(update={"enabled": True, **update})
        return Experiment(self.spec.model_copy(update={"confirm": settings}))

    @property
    def location(self) -> str:
        """The folder, or a URI for shared object storage: Tune's and MLflow's name of it."""
        return f"{self.spec.storage_path.rstrip('/')}/{self.spec.name}"

    @property
    def is_local(self) -> bool:
        return is_local(self.spec.storage_path)

    @property
    def folder(self) -> Path | None:
        """The folder on this machine, None for shared object storage."""
        return Path(self.location.removeprefix("file://")) if self.is_local else None

    def _file(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / name

    @property
    def started(self) -> bool:
        """A sweep of this name was started here before."""
        spec_file = self._file(SPEC_FILE)
        return spec_file is not None and spec_file.is_file()

    @property
    def report_folder(self) -> Path | None:
        """Where stage 3 writes its report; None for shared object storage."""
        return self._file(REPORT_FOLDER)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this process: a second `run`, `resume` or `confirm` of the
        same sweep is refused while the first works (an OS lock: freed on any exit)."""
        if self.folder is None:
            yield  # object storage has no locks; one driver per sweep is the user's rule
            return
        busy = (
            f"sweep {self.spec.name!r} in {self.folder} is in use by another process: "
            "wait for it to finish, or give this sweep another name (--set name=...)"
        )
        with folder_lock(self.folder / LOCK_FILE, busy):
            yield

    def start(self, record: SweepRecord) -> None:
        """Keep the spec as run and how the sweep was started."""
        spec_file = self._file(SPEC_FILE)
        if spec_file is None:
            return
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        # The spec keeps its tracking URI (trials and resumed sweeps need it), redacted on
        # disk; the live URI with its password stays in this process only.
        spec_file.write_text(redacted(self.spec).model_dump_json(indent=2))
        self.write_record(record)

    def read_record(self) -> SweepRecord:
        path = self._file(RUN_FILE)
        if path is None or not path.is_file():
            return SweepRecord()
        return SweepRecord.model_validate_json(path.read_text())

    def write_record(self, record: SweepRecord) -> None:
        path = self._file(RUN_FILE)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        update = {
            "argv": [redact(a) for a in record.argv],
            "overrides": [redact(o) for o in record.overrides],
        }
        path.write_text(record.model_copy(update=update).model_dump_json(indent=2))

    def set_stage(self, stage: SweepStage) -> None:
        self.write_record(self.read_record().model_copy(update={"stage": stage}))

    def read_confirmation(self) -> str | None:
        """The saved confirmation (JSON), if stage 2 ran."""
        path = self._file(CONFIRMATION_FILE)
        return path.read_text() if path is not None and path.is_file() else None

    def save_confirmation(self, confirmation_json: str) -> None:
        path = self._file(CONFIRMATION_FILE)
        if path is not None:
            path.write_text(confirmation_json)

    def read_unsent(self) -> dict[str, Any] | None:
        """Tracking writes an outage kept back, if any."""
        path = self._file(UNSENT_FILE)
        if path is None or not path.is_file():
            return None
        saved: dict[str, Any] = json.loads(path.read_text())
        return saved

    def save_unsent(self, unsent: dict[str, Any] | None) -> Path | None:
        """Keep (or, given None, clear) the unsent writes; the file, None when it could
        not be kept (object storage)."""
        path = self._file(UNSENT_FILE)
        if path is None:
            return None
        if unsent is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(unsent))
        return path
