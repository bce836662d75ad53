"""The experiment folder (`storage_path/name`) and the records poke-tune keeps in it.

Ray Tune owns the folder's trial directories and experiment state; poke-tune adds:
- `poke_tune_spec.json`: the spec as run (overrides applied), so `resume`, `best`,
  `confirm` and `track` need only the folder;
- `poke_tune_run.json`: how the sweep was started and where its life cycle stands
  (`SweepRecord`: searching, interrupted, searched, confirmed);
- `poke_tune_confirmation.json`: the confirmation stage's result;
- `mlflow_unsent.json`: tracking writes an outage kept back;
- `.poke_tune.lock`: held while a process works on the sweep (one at a time).

Everything that crosses a module seam is typed: `TrialRow` (one trial of the search) and
`SweepRecord`. URIs and command lines are stored with credentials redacted.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "CONFIRMATION_FILE",
    "RUN_FILE",
    "SPEC_FILE",
    "UNSENT_FILE",
    "SweepLockedError",
    "SweepRecord",
    "SweepStage",
    "TrialRow",
    "TrialStatus",
    "describe",
    "experiment_path",
    "lock_experiment",
    "read_record",
    "redact",
    "redacted",
    "spec_of",
    "write_record",
    "write_spec",
]

SPEC_FILE = "poke_tune_spec.json"
RUN_FILE = "poke_tune_run.json"
CONFIRMATION_FILE = "poke_tune_confirmation.json"
UNSENT_FILE = "mlflow_unsent.json"
LOCK_FILE = ".poke_tune.lock"

TrialStatus = Literal["running", "completed", "early-stopped", "interrupted", "diverged", "failed"]
"""running (still training), completed (all steps), early-stopped (by the scheduler),
interrupted (the sweep was stopped before the trial ended), diverged, failed (an error
after its retries)."""
SCORED: tuple[TrialStatus, ...] = ("completed", "early-stopped")
"""Trials whose selection score counts."""

SweepStage = Literal["searching", "interrupted", "searched", "confirmed"]


class SweepLockedError(ValueError):
    """Another process works on this experiment folder."""


@dataclass(frozen=True)
class TrialRow:
    """One trial of the search: what it tried, how it scored on the selection battles."""

    trial_id: str
    params: dict[str, Any]
    score: float | None
    """Selection score: the objective's best evaluation (`objective/best`)."""
    status: TrialStatus
    evaluations: int
    checkpoint: Path | None
    """The trainer file of the checkpoint saved at the trial's best evaluation."""
    run_name: str = ""


def describe(algo: str, params: dict[str, Any], sep: str = " ") -> str:
    """A trial's configuration in a few characters, e.g. `cql alpha=2.31`."""
    parts = [algo]
    for name, value in params.items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return sep.join(parts)


class SweepRecord(BaseModel):
    """How a sweep was started and where its life cycle stands (`poke_tune_run.json`)."""

    model_config = ConfigDict(extra="ignore")

    spec_file: str = ""
    overrides: list[str] = []
    argv: list[str] = []
    stage: SweepStage = "searching"


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@\s/]*@")
_SECRET_QUERY = re.compile(r"(?i)((?:password|secret|token|access_key|key)=)[^&\s]+")


def redact(text: str) -> str:
    """Hide passwords in URIs (`http://alice:pw@host` -> `http://alice:***@host`) and
    secret-looking query values, wherever a URI or a command line is kept or printed."""
    text = _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def redacted(spec: SearchSpec) -> SearchSpec:
    """The spec with its tracking URI's credentials hidden: what Tune pickles and what
    MLflow records (trials never need the tracking URI)."""
    uri = spec.mlflow.tracking_uri
    if uri is None or redact(uri) == uri:
        return spec
    return spec.model_copy(
        update={"mlflow": spec.mlflow.model_copy(update={"tracking_uri": redact(uri)})}
    )


def experiment_path(spec: SearchSpec) -> str:
    """The experiment's location (a folder, or a URI for s3:// storage)."""
    return f"{spec.storage_path.rstrip('/')}/{spec.name}"


def _is_local(path: str) -> bool:
    return "://" not in path


def write_spec(spec: SearchSpec) -> None:
    folder = Path(experiment_path(spec))
    folder.mkdir(parents=True, exist_ok=True)
    # The spec keeps its tracking URI (trials and resumed sweeps need it), redacted on
    # disk; the live URI with its password stays in this process only.
    (folder / SPEC_FILE).write_text(redact(spec.model_dump_json(indent=2)))


def spec_of(path: Path | str, *, tracking_uri: str | None = None) -> SearchSpec:
    """The spec an experiment folder was started with.

    A tracking URI with credentials is stored redacted: pass the real one (e.g. from
    `MLFLOW_TRACKING_URI`) as `tracking_uri`.
    """
    spec_file = Path(path) / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a poke-tune experiment folder (no {SPEC_FILE}); "
            "expected STORAGE_PATH/NAME of a sweep, e.g. runs/ray/cql-alpha"
        )
    raw = json.loads(spec_file.read_text())
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    stored = raw.get("mlflow", {}).get("tracking_uri") or ""
    if "***" in stored:
        if not uri or redact(uri) != stored:
            raise ValueError(
                f"{path}: the sweep's tracking URI {stored} had credentials, which are not "
                "stored: set MLFLOW_TRACKING_URI (or --tracking-uri) to the full URI"
            )
        raw["mlflow"]["tracking_uri"] = uri
    return SearchSpec.model_validate(raw)


def read_record(spec: SearchSpec) -> SweepRecord:
    path = Path(experiment_path(spec)) / RUN_FILE
    if not path.is_file():
        return SweepRecord()
    return SweepRecord.model_validate_json(path.read_text())


def write_record(spec: SearchSpec, record: SweepRecord) -> None:
    if not _is_local(spec.storage_path):
        return
    folder = Path(experiment_path(spec))
    folder.mkdir(parents=True, exist_ok=True)
    redacted = record.model_copy(
        update={
            "argv": [redact(a) for a in record.argv],
            "overrides": [redact(o) for o in record.overrides],
        }
    )
    (folder / RUN_FILE).write_text(redacted.model_dump_json(indent=2))


@contextmanager
def lock_experiment(spec: SearchSpec) -> Iterator[None]:
    """Hold the experiment folder for this process: a second `run`, `resume` or `confirm`
    of the same sweep is refused while the first works (an OS lock: freed on any exit)."""
    if not _is_local(spec.storage_path):
        yield  # shared object storage has no locks; one driver per sweep is the user's rule
        return
    folder = Path(experiment_path(spec))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepLockedError(
                f"sweep {spec.name!r} in {folder} is in use by {holder}: wait for it to "
                "finish, or give this sweep another name (--set name=...)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
