"""Running a loop: `run_iterate` starts one from round 0, `resume_iterate` continues one
at the round and stage its record names, and the turn in between plays round after round
(generating -> sweeping -> measuring, `stages.py`), writing the record after every stage
and the report after every round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from poke_tune.tuning.experiment import Experiment
from poke_tune.tuning.loop.folder import Loop, LoopExistsError
from poke_tune.tuning.loop.plan import LoopSettings, model_name, round_spec, stop_reason
from poke_tune.tuning.loop.report import write_loop_report
from poke_tune.tuning.loop.stages import (
    LoopHooks,
    generate_round,
    measure_round,
    sweep_round,
)
from poke_tune.tuning.records import LoopRecord, RoundRecord, RoundStage
from poke_tune.tuning.redaction import redact
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.sweep import SweepOutcome

__all__ = ["IterateOutcome", "resume_iterate", "run_iterate"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IterateOutcome:
    """Where a loop stands: its record, whether Ctrl-C stopped it, its report."""

    loop: Loop
    record: LoopRecord
    interrupted: bool
    report: Path | None
    last_sweep: SweepOutcome | None = None

    @property
    def settings(self) -> LoopSettings:
        return self.loop.settings

    @property
    def spec(self) -> SearchSpec:
        return self.loop.spec


def run_iterate(
    spec: SearchSpec, *, record: LoopRecord | None = None, hooks: LoopHooks | None = None
) -> IterateOutcome:
    """Run the data flywheel of `spec` (its `rounds` section) from round 0."""
    settings = LoopSettings.of(spec)
    if "://" in spec.storage_path and not spec.storage_path.startswith("file://"):
        raise ValueError(
            f"storage_path {spec.storage_path!r}: the data flywheel keeps its record in a "
            "local (or mounted) folder; object storage is not supported"
        )
    uri = spec.mlflow.tracking_uri
    if uri and redact(uri) != uri:
        raise ValueError(
            f"tracking URI {redact(uri)}: the data flywheel stores its spec as run, so it "
            "takes a tracking URI without credentials"
        )
    loop = Loop(settings)
    with loop.lock():
        if loop.started or Experiment(spec).started:
            raise LoopExistsError(
                f"{loop.folder} already holds a loop or sweep named {spec.name!r}: continue "
                f"it with `poke-tune iterate --resume {loop.folder}`, or name the loop "
                "anew: --set name=NEW_NAME"
            )
        loop.start(record or LoopRecord())
        return _turn(loop, hooks or LoopHooks())


def resume_iterate(folder: Path, *, hooks: LoopHooks | None = None) -> IterateOutcome:
    """Continue a loop at the round and stage its record names."""
    loop = Loop.open(folder)
    with loop.lock():
        return _turn(loop, hooks or LoopHooks())


def _turn(loop: Loop, hooks: LoopHooks) -> IterateOutcome:
    """Play rounds until `rounds.count`, the stop rule, or Ctrl-C."""
    settings = loop.settings
    record = loop.read()
    sweep: SweepOutcome | None = None
    while not record.finished:
        if not record.rounds or record.rounds[-1].stage == "done":
            index = len(record.rounds)
            first: RoundStage = "sweeping" if index == 0 else "generating"
            record.rounds.append(RoundRecord(index=index, stage=first))
            loop.write(record)
        current = record.rounds[-1]
        if current.stage == "generating":
            with _timed(current, "generating"):
                generate_round(settings, record, current)
            current.stage = "sweeping"
            loop.write(record)
        if current.stage == "sweeping":
            with _timed(current, "sweeping"):
                sweep = sweep_round(loop, record, current, hooks)
            if sweep.interrupted:
                loop.write(record)
                return IterateOutcome(loop, record, True, _report(loop, record), sweep)
            current.stage = "measuring"
            loop.write(record)
        if current.stage == "measuring":
            with _timed(current, "measuring"):
                measure_round(settings, record, current, hooks.on_battle)
            current.stage = "done"
            reason = stop_reason(settings, record, current.index)
            if current.index >= settings.rounds.count or reason is not None:
                record.finished, record.stopped = True, reason
            loop.write(record)
            _report(loop, record)
            if hooks.on_round is not None:
                hooks.on_round(settings, record, current)
    return IterateOutcome(loop, record, False, _report(loop, record), sweep)


@contextmanager
def _timed(current: RoundRecord, stage: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        current.seconds[stage] = current.seconds.get(stage, 0.0) + time.monotonic() - start


def _report(loop: Loop, record: LoopRecord) -> Path:
    """The loop's report on disk, then on MLflow (a failure there is logged: the report
    is on disk, and the next round or `--resume` sends it again)."""
    folder = loop.report_folder
    write_loop_report(folder, loop.settings, record)
    if loop.spec.mlflow.enabled:
        try:
            from poke_tune.tuning.track.loop_runs import log_loop  # MLflow only when on

            log_loop(
                round_spec(loop.settings, 0, loop.folder),
                name=loop.spec.name,
                model=model_name(loop.spec),
                folder=loop.folder,
                report=folder,
                record=record,
            )
        except Exception as error:  # tracking must not stop the loop
            _logger.warning("the loop's report was not logged to MLflow: %s", error)
    return folder
