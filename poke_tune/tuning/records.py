"""The typed records that cross the tuning stages: one row per trial of the search and
the sweep's own record (how it was started, where its life cycle stands)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from poke_tune.tuning.spec import ObjectiveSpec

if TYPE_CHECKING:  # records know no Ray at run time
    from ray.tune import ResultGrid

__all__ = [
    "SCORED",
    "SearchOutcome",
    "SweepRecord",
    "SweepStage",
    "TrialRow",
    "TrialStatus",
    "describe",
    "ranked",
    "trial_status",
]

TrialStatus = Literal["running", "completed", "early-stopped", "interrupted", "diverged", "failed"]
"""running (still training), completed (all steps), early-stopped (by the scheduler),
interrupted (the sweep was stopped before the trial ended), diverged, failed (an error
after its retries)."""
SCORED: tuple[TrialStatus, ...] = ("completed", "early-stopped")
"""Trials whose selection score counts."""

SweepStage = Literal["searching", "interrupted", "searched", "confirmed"]


def trial_status(last_result: dict[str, Any], *, failed: bool, state: str | None) -> TrialStatus:
    """An ended (or cut-off) trial's status from its last reported result, whether it
    errored, and Tune's trial state (None when unknown, e.g. while the sweep runs)."""
    if failed or state == "ERROR":
        return "failed"
    reported = last_result.get("status")
    if reported in ("completed", "diverged"):
        return "completed" if reported == "completed" else "diverged"
    if state is not None and state != "TERMINATED":
        return "interrupted"  # RUNNING / PAUSED / PENDING when the sweep stopped
    return "early-stopped"


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


def ranked(rows: Sequence[TrialRow], objective: ObjectiveSpec) -> list[TrialRow]:
    """The scored trials with a checkpoint, best selection score first: the order every
    stage after the search picks from (confirmation's shortlist, the answer without a
    confirmation, the budget curve)."""
    scored = [r for r in rows if r.status in SCORED and r.score is not None and r.checkpoint]
    return sorted(scored, key=lambda r: -objective.sign * (r.score or 0.0))


def describe(algo: str, params: dict[str, Any], sep: str = " ") -> str:
    """A trial's configuration in a few characters, e.g. `cql alpha=2.31`."""
    parts = [algo]
    for name, value in params.items():
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return sep.join(parts)


@dataclass(frozen=True)
class SearchOutcome:
    """What the search stage hands on: Tune's results and one row per trial."""

    results: ResultGrid
    rows: list[TrialRow]
    interrupted: bool
    """The sweep stopped before every trial ended (Ctrl-C): nothing is promoted."""
    ranked: list[TrialRow]
    """The scored trials with a checkpoint, best selection score first (`records.ranked`)."""


class SweepRecord(BaseModel):
    """How a sweep was started and where its life cycle stands (`poke_tune_run.json`)."""

    model_config = ConfigDict(extra="ignore")

    spec_file: str = ""
    overrides: list[str] = []
    argv: list[str] = []
    stage: SweepStage = "searching"
