"""A sweep's life cycle: search -> confirm -> promote -> report.

1. search (`search.py`): Optuna proposes, Ray Tune trains, every trial is scored on the
   objective's selection battles;
2. confirm (`confirm.py`): the shortlist and the baselines replay fresh battles; the
   champion is chosen there;
3. promote (`registry.py`, through the tracker): the champion is registered, and the alias
   `champion` moves only if it beats the baselines and the current champion;
4. report (`report.py`): the numbers a user reads, all from the confirmation battles.

`run_sweep` starts a sweep, `resume_sweep` continues an interrupted one, `confirm_sweep`
re-runs stages 2-4 (e.g. with more battles), `track_sweep` re-sends what an outage kept
back, `load_sweep` reads a sweep back. A sweep interrupted by Ctrl-C stops after stage 1:
nothing is registered or promoted until `resume` finishes it. One process works on an
experiment folder at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from poke_tune.data.compiled import OfflineDataset
from poke_tune.sim.battles import BattleResult
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.confirm import (
    Confirmation,
    Contender,
    bc_baseline,
    behaviour_policies,
    candidates,
    confirm,
    shortlist,
)
from poke_tune.tuning.experiment import (
    CONFIRMATION_FILE,
    SPEC_FILE,
    SweepRecord,
    TrialRow,
    experiment_path,
    lock_experiment,
    read_record,
    redact,
    spec_of,
    write_record,
    write_spec,
)
from poke_tune.tuning.search import SearchOutcome, prepare_dataset, resume_search, search, searched
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.tracker import NullTracker, Tracker, TrackingSummary

__all__ = [
    "SweepExistsError",
    "SweepOutcome",
    "confirm_sweep",
    "load_sweep",
    "resume_sweep",
    "run_sweep",
    "track_sweep",
]

_logger = logging.getLogger(__name__)


class SweepExistsError(ValueError):
    """`run` of a name whose experiment folder already holds a sweep."""


class SweepInterruptedError(ValueError):
    """A stage that needs a finished search was asked of an interrupted one."""


@dataclass(frozen=True)
class SweepOutcome:
    """Where a sweep stands: its trials, its confirmation, what tracking did."""

    spec: SearchSpec
    rows: list[TrialRow]
    interrupted: bool
    confirmation: Confirmation | None
    tracking: TrackingSummary | None
    results: tune.ResultGrid | None = None

    @property
    def selected(self) -> TrialRow | None:
        """The trial with the best selection score (not a reported result: see
        `confirmation` for the champion's win rate on fresh battles)."""
        return next(iter(shortlist(self.rows, self.spec, 1)), None)

    @property
    def found_nothing(self) -> bool:
        """No trial produced an objective (every trial failed or diverged)."""
        return not self.interrupted and self.selected is None

    @property
    def experiment(self) -> str:
        return experiment_path(self.spec)


OnBattle = Callable[[BattleResult], None]


def _tracker(spec: SearchSpec) -> Tracker:
    if not spec.mlflow.enabled:
        return NullTracker()
    from poke_tune.tuning.tracking import MLflowTracker  # MLflow loads only when used

    return MLflowTracker(spec)


def run_sweep(
    spec: SearchSpec,
    *,
    address: str | None = None,
    record: SweepRecord | None = None,
    callbacks: Sequence[tune.Callback] = (),
    on_battle: OnBattle | None = None,
) -> SweepOutcome:
    """Run a whole sweep (local Ray unless `address` / RAY_ADDRESS names a cluster).

    `record` (spec file, overrides, command line) is saved in the experiment folder and on
    the MLflow parent run, with credentials redacted; `callbacks` are further Tune
    callbacks. An unreachable tracking store fails here, before any data or Ray start.
    """
    record = record or SweepRecord()
    tracker = _tracker(spec)  # an unreachable store fails before anything is written
    with lock_experiment(spec):
        folder = Path(experiment_path(spec))
        if (folder / SPEC_FILE).is_file():
            stage = read_record(spec).stage
            raise SweepExistsError(
                f"a sweep named {spec.name!r} already exists in {folder} ({stage}). "
                f"Continue it with `poke-tune resume {folder}`, see it with `poke-tune best "
                f"{folder}`, or start a new sweep under another name: --set name=NEW_NAME"
            )
        dataset = prepare_dataset(spec)
        write_spec(spec)
        write_record(spec, record)
        all_callbacks = [*callbacks, *tracker.callbacks(dataset, record)]
        outcome = search(spec, dataset, address=address, callbacks=all_callbacks)
        return _after_search(spec, outcome, tracker, dataset, on_battle=on_battle)


def resume_sweep(
    path: Path, *, address: str | None = None, on_battle: OnBattle | None = None
) -> SweepOutcome:
    """Continue an interrupted sweep; MLflow logging continues in the same runs."""
    spec = spec_of(path)
    with lock_experiment(spec):
        tracker = _tracker(spec)
        _share_tracking_uri(spec)
        outcome = resume_search(path, spec, address=address)
        return _after_search(spec, outcome, tracker, prepare_dataset(spec), on_battle=on_battle)


def confirm_sweep(
    path: Path,
    *,
    top_k: int | None = None,
    battles: int | None = None,
    on_battle: OnBattle | None = None,
) -> SweepOutcome:
    """Re-run the confirmation (e.g. with more battles), then promotion and report."""
    spec = spec_of(path)
    update = {k: v for k, v in (("top_k", top_k), ("battles", battles)) if v is not None}
    spec = spec.model_copy(
        update={"confirm": spec.confirm.model_copy(update={"enabled": True, **update})}
    )
    with lock_experiment(spec):
        outcome = searched(path, spec)
        if outcome.interrupted:
            raise SweepInterruptedError(
                f"the search of {path} did not finish: `poke-tune resume {path}` first"
            )
        tracker = _tracker(spec)
        return _after_search(
            spec, outcome, tracker, prepare_dataset(spec), on_battle=on_battle, force=True
        )


def track_sweep(path: Path) -> SweepOutcome:
    """Send a finished sweep's unsent MLflow writes, then log its end-of-sweep records
    (reusing the saved confirmation: no battles are replayed, nothing registered twice)."""
    spec = spec_of(path)
    with lock_experiment(spec):
        tracker = _tracker(spec)
        from poke_tune.tuning.tracking import send_unsent

        send_unsent(spec)
        outcome = searched(path, spec)
        confirmation = saved_confirmation(spec)
        tracking = tracker.finish(outcome, confirmation)
        return SweepOutcome(spec, outcome.rows, outcome.interrupted, confirmation, tracking)


def load_sweep(path: Path) -> SweepOutcome:
    """A sweep read back from its folder, with its saved confirmation (`poke-tune best`)."""
    spec = spec_of(path)
    outcome = searched(path, spec)
    return SweepOutcome(
        spec, outcome.rows, outcome.interrupted, saved_confirmation(spec), None, outcome.results
    )


def saved_confirmation(spec: SearchSpec) -> Confirmation | None:
    path = Path(experiment_path(spec)) / CONFIRMATION_FILE
    return Confirmation.from_json(path.read_text()) if path.is_file() else None


def _share_tracking_uri(spec: SearchSpec) -> None:
    # Tune restores the live-logging callback from its pickle, where the URI is redacted:
    # it reads the real one from the environment.
    uri = spec.mlflow.tracking_uri
    if spec.mlflow.enabled and uri is not None and redact(uri) != uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri


def _after_search(
    spec: SearchSpec,
    outcome: SearchOutcome,
    tracker: Tracker,
    dataset: OfflineDataset,
    *,
    on_battle: OnBattle | None,
    force: bool = False,
) -> SweepOutcome:
    """Stages 2-4 after a search; an interrupted search only records where it stopped."""
    record = read_record(spec)
    if outcome.interrupted:
        write_record(spec, record.model_copy(update={"stage": "interrupted"}))
        tracking = tracker.finish(outcome, None)
        return SweepOutcome(spec, outcome.rows, True, None, tracking, outcome.results)
    confirmation = None if force else saved_confirmation(spec)
    wanted = spec.confirm.enabled and spec.objective.uses_battles
    if confirmation is None and wanted and shortlist(outcome.rows, spec, 1):
        confirmation = _confirm(spec, outcome.rows, tracker, dataset, on_battle)
        path = Path(experiment_path(spec)) / CONFIRMATION_FILE
        if "://" not in spec.storage_path:
            path.write_text(confirmation.to_json())
    tracking = tracker.finish(outcome, confirmation)
    stage = "confirmed" if confirmation is not None else "searched"
    write_record(spec, record.model_copy(update={"stage": stage}))
    return SweepOutcome(spec, outcome.rows, False, confirmation, tracking, outcome.results)


def _confirm(
    spec: SearchSpec,
    rows: list[TrialRow],
    tracker: Tracker,
    dataset: OfflineDataset,
    on_battle: OnBattle | None,
) -> Confirmation:
    contenders = candidates(shortlist(rows, spec, spec.confirm.top_k), spec)
    for name in behaviour_policies(spec, dataset):
        contenders.append(Contender(name=name, policy=make_policy(name), role="baseline"))
    if spec.confirm.bc:
        _logger.info("training the BC baseline (%d steps)", spec.training.steps)
        contenders.append(Contender("bc", bc_baseline(spec, dataset), "baseline"))
    champion = tracker.champion_policy()
    if champion is not None:
        contenders.append(Contender(champion.name, champion, "champion"))
    return confirm(spec, contenders, on_result=on_battle)
