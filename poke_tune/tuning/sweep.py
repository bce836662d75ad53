"""A sweep's life cycle: search -> confirm -> report -> promote.

1. search (`search.py`): Optuna proposes, Ray Tune trains, every trial is scored on the
   objective's selection battles;
2. confirm (`confirm.py`): the shortlist and the baselines (`contenders.py`) replay fresh
   battles; the champion is chosen there;
3. report (`report.py`): the numbers a user reads, all from the confirmation battles,
   written into the experiment folder, whether or not MLflow is on;
4. promote (the tracker, `registry.py`): the champion is registered, and the alias
   `champion` moves only if it beats the baselines and the current champion; the tracker
   then uploads the report and closes the runs.

The report is written before anything is registered, so a tracking failure cannot lose it.

`run_sweep` starts a sweep, `resume_sweep` continues an interrupted one, `confirm_sweep`
re-runs stages 2-4 (e.g. with more battles), `track_sweep` re-sends what an outage kept
back, `load_sweep` reads a sweep back. A sweep interrupted by Ctrl-C stops after stage 1
(its report has the trials, nothing is registered or promoted) until `resume` finishes
it. One process works on an experiment folder at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ray import tune

from poke_tune.data.compiled import OfflineDataset
from poke_tune.sim.battle_records import BattleResult
from poke_tune.tuning.confirm.confirm import Confirmation, confirm
from poke_tune.tuning.confirm.contenders import contenders
from poke_tune.tuning.confirm.report import write_report
from poke_tune.tuning.datasets import Recorder, prepare_dataset
from poke_tune.tuning.experiment import Experiment
from poke_tune.tuning.records import SearchOutcome, SweepRecord, SweepStage, TrialRow
from poke_tune.tuning.search.search import (
    connect_named_cluster,
    resume_search,
    search,
    searched,
)
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.track.tracker import NullTracker, Tracker, TrackingSummary

__all__ = [
    "SweepExistsError",
    "SweepOutcome",
    "confirm_sweep",
    "load_sweep",
    "resume_sweep",
    "run_sweep",
    "track_sweep",
]


class SweepExistsError(ValueError):
    """`run` of a name whose experiment folder already holds a sweep."""


class SweepInterruptedError(ValueError):
    """A stage that needs a finished search was asked of an interrupted one."""


@dataclass(frozen=True)
class SweepOutcome:
    """Where a sweep stands: its trials, its confirmation, its report, what tracking did."""

    experiment: Experiment
    search: SearchOutcome
    confirmation: Confirmation | None
    tracking: TrackingSummary | None
    report: Path | None = None
    """The report's folder (None when it was not written here, e.g. `best`)."""

    @property
    def spec(self) -> SearchSpec:
        return self.experiment.spec

    @property
    def rows(self) -> list[TrialRow]:
        return self.search.rows

    @property
    def ranked(self) -> list[TrialRow]:
        return self.search.ranked

    @property
    def interrupted(self) -> bool:
        return self.search.interrupted

    @property
    def results(self) -> tune.ResultGrid:
        return self.search.results

    @property
    def selected(self) -> TrialRow | None:
        """The trial with the best selection score (not a reported result: see
        `confirmation` for the champion's win rate on fresh battles)."""
        return next(iter(self.ranked), None)

    @property
    def found_nothing(self) -> bool:
        """No trial produced an objective (every trial failed or diverged)."""
        return not self.interrupted and self.selected is None


OnBattle = Callable[[BattleResult], None]


def _tracker(experiment: Experiment) -> Tracker:
    if not experiment.spec.mlflow.enabled:
        return NullTracker()
    from poke_tune.tuning.track.tracking import MLflowTracker  # MLflow loads only when used

    return MLflowTracker(experiment)


def run_sweep(
    spec: SearchSpec,
    *,
    address: str | None = None,
    record: SweepRecord | None = None,
    callbacks: Sequence[tune.Callback] = (),
    on_battle: OnBattle | None = None,
    recorder: Recorder | None = None,
) -> SweepOutcome:
    """Run a whole sweep (local Ray unless `address` / RAY_ADDRESS names a cluster).

    `record` (spec file, overrides, command line) is saved in the experiment folder and on
    the MLflow parent run, with credentials redacted; `callbacks` are further Tune
    callbacks; `recorder` plays a dataset's `record` recipe (see `tuning.datasets`). An
    unreachable tracking store fails here, before any data or Ray start.
    """
    record = record or SweepRecord()
    experiment = Experiment(spec)
    tracker = _tracker(experiment)  # an unreachable store fails before anything is written
    with experiment.lock():
        if experiment.started:
            raise SweepExistsError(
                f"a sweep named {spec.name!r} already exists in {experiment.folder} "
                f"({experiment.read_record().stage}). Continue it with `poke-tune resume "
                f"{experiment.folder}`, see it with `poke-tune best {experiment.folder}`, or "
                "start a new sweep under another name: --set name=NEW_NAME"
            )
        connect_named_cluster(address)  # a cluster's nodes play the dataset's battles
        dataset = prepare_dataset(
            spec.dataset, recorder=recorder, tracking_uri=spec.mlflow.tracking_uri
        )
        experiment.start(record)
        live = [*callbacks, *tracker.callbacks(dataset, record)]
        outcome = search(spec, dataset, address=address, callbacks=live)  # 1
        return _after_search(experiment, outcome, tracker, dataset, on_battle)


def resume_sweep(
    path: Path,
    *,
    address: str | None = None,
    on_battle: OnBattle | None = None,
    recorder: Recorder | None = None,
) -> SweepOutcome:
    """Continue an interrupted sweep; MLflow logging continues in the same runs."""
    experiment = Experiment.open(path)
    with experiment.lock():
        tracker = _tracker(experiment)
        connect_named_cluster(address)
        dataset = prepare_dataset(
            experiment.spec.dataset,
            recorder=recorder,
            tracking_uri=experiment.spec.mlflow.tracking_uri,
        )
        outcome = resume_search(path, experiment.spec, dataset, address=address)  # 1
        return _after_search(experiment, outcome, tracker, dataset, on_battle)


def confirm_sweep(experiment: Experiment, *, on_battle: OnBattle | None = None) -> SweepOutcome:
    """Re-run the confirmation of a finished sweep (see `Experiment.reconfirmed`), then
    report and promotion."""
    with experiment.lock():
        outcome = searched(_folder(experiment), experiment.spec)
        if outcome.interrupted:
            raise SweepInterruptedError(
                f"the search of {experiment.location} did not finish: "
                f"`poke-tune resume {experiment.location}` first"
            )
        tracker = _tracker(experiment)
        connect_named_cluster(None)  # RAY_ADDRESS: the confirmation spreads
        dataset = prepare_dataset(
            experiment.spec.dataset, tracking_uri=experiment.spec.mlflow.tracking_uri
        )
        return _after_search(experiment, outcome, tracker, dataset, on_battle, replay="again")


def track_sweep(path: Path) -> SweepOutcome:
    """Send a finished sweep's unsent MLflow writes, then log its end-of-sweep records
    (reusing the saved confirmation: no battles are replayed, nothing registered twice)."""
    experiment = Experiment.open(path)
    with experiment.lock():
        tracker = _tracker(experiment)
        if experiment.spec.mlflow.enabled:
            from poke_tune.tuning.track.tracking import send_unsent

            send_unsent(experiment)
        outcome = searched(path, experiment.spec)
        return _after_search(experiment, outcome, tracker, None, None, replay="never")


def load_sweep(path: Path) -> SweepOutcome:
    """A sweep read back from its folder, with its saved confirmation (`poke-tune best`)."""
    experiment = Experiment.open(path)
    outcome = searched(path, experiment.spec)
    report = experiment.report_folder  # absent in folders of sweeps before the report
    return SweepOutcome(
        experiment,
        outcome,
        saved_confirmation(experiment),
        None,
        report if report is not None and report.is_dir() else None,
    )


def saved_confirmation(experiment: Experiment) -> Confirmation | None:
    saved = experiment.read_confirmation()
    return None if saved is None else Confirmation.from_json(saved)


def _folder(experiment: Experiment) -> Path:
    if experiment.folder is None:
        raise ValueError(f"{experiment.location} is not a folder on this machine")
    return experiment.folder


Replay = Literal["if not saved", "again", "never"]
"""When stage 2 plays its battles: unless a confirmation is saved (run, resume), in any
case (`confirm`), or never (`track`, which only re-sends)."""


def _after_search(
    experiment: Experiment,
    outcome: SearchOutcome,
    tracker: Tracker,
    dataset: OfflineDataset | None,
    on_battle: OnBattle | None,
    *,
    replay: Replay = "if not saved",
) -> SweepOutcome:
    """Stages 2-4 after a search. An interrupted search is reported where it stopped:
    nothing is confirmed or promoted. The report is on disk before the tracker registers,
    promotes or uploads anything, so a tracking failure cannot lose it."""
    spec = experiment.spec
    with _report_folder(experiment) as folder:
        confirmation = None
        if not outcome.interrupted and replay != "again":
            confirmation = saved_confirmation(experiment)
        wanted = spec.confirm.enabled and spec.objective.uses_battles and outcome.ranked
        if confirmation is None and wanted and not outcome.interrupted and replay != "never":
            assert dataset is not None, "stage 2 needs the dataset (its behaviour policies, BC)"
            entrants = contenders(outcome.ranked, spec, dataset, tracker.champion_policy())
            confirmation = confirm(  # 2
                spec.confirm, spec.objective, entrants, on_result=on_battle
            )
            experiment.save_confirmation(confirmation.to_json())
        if replay != "never":
            stage: SweepStage = "confirmed" if confirmation is not None else "searched"
            experiment.set_stage("interrupted" if outcome.interrupted else stage)
        report = write_report(folder, outcome.rows, outcome.ranked, confirmation, spec)  # 3
        promotion = None
        if not outcome.interrupted:
            promotion = tracker.promote(outcome.ranked, confirmation)  # 4
        tracking = tracker.finish(outcome, report, promotion)
    return SweepOutcome(experiment, outcome, confirmation, tracking, experiment.report_folder)


@contextmanager
def _report_folder(experiment: Experiment) -> Iterator[Path]:
    """The experiment's `report/`; object storage has no folder here, so its report is
    written to a temporary one that lives as long as the tracker needs it."""
    if experiment.report_folder is not None:
        yield experiment.report_folder
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
