"""The typed records that cross the tuning stages: one row per trial of the search, the
sweep's own record (how it was started, where its life cycle stands) and the data
flywheel's loop record (each round's data, sweep, winner, champion and curve)."""

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
    "CurvePoint",
    "HeadToHeadCell",
    "LoopRecord",
    "PromotionRecord",
    "RoundRecord",
    "RoundStage",
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
RoundStage = Literal["generating", "sweeping", "measuring", "done"]


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


class CurvePoint(BaseModel):
    """A round's winner against one opponent on the curve battles (paired across rounds)."""

    opponent: str
    win_rate: float
    ci_low: float
    ci_high: float
    won: list[bool]


class PromotionRecord(BaseModel):
    """A round's winner against the champion in sequential paired battles
    (`rounds.promotion`): the 95% paired difference, the battles it took, why it stopped."""

    opponent: str
    difference: float
    ci_low: float
    ci_high: float
    battles: int
    looks: int
    stopped: str
    """`candidate better` (promoted), `champion better` or `budget`."""


class HeadToHeadCell(BaseModel):
    """Round `row`'s champion against round `column`'s on the same seeded battles."""

    row: int
    column: int
    win_rate: float
    ci_low: float
    ci_high: float
    battles: int


class RoundRecord(BaseModel):
    """One round of the loop: its data, its sweep, its winner and champion, its times."""

    model_config = ConfigDict(extra="ignore")

    index: int
    stage: RoundStage = "generating"
    sweep: str = ""
    """The round's sweep folder."""
    behaviour: list[str] = []
    """The policies that played the round's new battles (pinned; empty for round 0)."""
    generated: str = ""
    """The round's own data file (round 0: the spec's dataset)."""
    data: list[str] = []
    """The files of the dataset the round's sweep trains on (windowed)."""
    dataset: str = ""
    """The file the round's sweep trains on (the parts combined)."""
    new_battles: int = 0
    battles: int = 0
    trajectories: int = 0
    transitions: int = 0
    winner: str | None = None
    """The sweep's answer, pinned: `models:/MODEL/VERSION`, or its checkpoint file."""
    best_params: dict[str, Any] = {}
    promotion: str = ""
    """What the registry said of the winner (MLflow on)."""
    promoted: bool | None = None
    """The winner became the loop's champion (beat the previous one)."""
    champion_round: int | None = None
    """The round whose winner is the loop's champion after this round."""
    champion: str | None = None
    sweep_run_id: str | None = None
    curve: list[CurvePoint] = []
    """The winner's curve (round 0 on: against `rounds.curve_opponents`; later rounds also
    against the previous champion)."""
    sequential: PromotionRecord | None = None
    """The sequential promotion's battles (`rounds.promotion`; later rounds)."""
    seconds: dict[str, float] = {}
    """Wall time per stage (summed over resumes)."""

    def point(self, opponent: str) -> CurvePoint | None:
        return next((p for p in self.curve if p.opponent == opponent), None)


class LoopRecord(BaseModel):
    """How a loop was started and where it stands (`poke_tune_loop.json`)."""

    model_config = ConfigDict(extra="ignore")

    spec_file: str = ""
    overrides: list[str] = []
    argv: list[str] = []
    rounds: list[RoundRecord] = []
    stopped: str | None = None
    """Why the loop ended before `rounds.count` (the stop rule), if it did."""
    finished: bool = False
    head_to_head: list[HeadToHeadCell] = []
    """Every champion against every earlier one (`rounds.head_to_head_battles`), both
    directions."""
