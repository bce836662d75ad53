"""The tracking seam of a sweep: what the life cycle (`sweep.py`) asks of a tracker.

`MLflowTracker` (`tracking.py`) implements it; `NullTracker` is the tracker of
`mlflow: {enabled: false}`, so the life cycle has no tracking branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from poke_tune.sim.policies import Policy

if TYPE_CHECKING:
    from ray import tune

    from poke_tune.data.compiled import OfflineDataset
    from poke_tune.tuning.confirm.confirm import Confirmation
    from poke_tune.tuning.confirm.report import Report
    from poke_tune.tuning.records import SearchOutcome, SweepRecord, TrialRow

__all__ = ["NullTracker", "Promotion", "Tracker", "TrackingSummary"]

CHAMPION = "champion"


@dataclass(frozen=True)
class Promotion:
    """What happened to the sweep's winner in the model registry."""

    model: str
    version: str
    promoted: bool
    reason: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}@{CHAMPION}"


@dataclass(frozen=True)
class TrackingSummary:
    """Where the sweep was tracked and what its registry decided."""

    tracking_uri: str
    """Redacted: printable."""
    parent_run_id: str
    promotion: Promotion | None = None


class Tracker(Protocol):
    def callbacks(self, dataset: OfflineDataset, record: SweepRecord) -> list[tune.Callback]:
        """Tune callbacks that log a new sweep live (a resumed sweep keeps its own)."""
        ...

    def champion_policy(self) -> Policy | None:
        """The registered champion, to replay on the confirmation battles."""
        ...

    def promote(
        self, ranked: Sequence[TrialRow], confirmation: Confirmation | None
    ) -> Promotion | None:
        """Stage 4: log the confirmation's numbers, register the checkpoint of the sweep's
        answer (`confirm.winner` among `ranked`) and move `champion` to it if it earned
        that (None: no answer, nothing registered)."""
        ...

    def finish(
        self, outcome: SearchOutcome, report: Report, promotion: Promotion | None
    ) -> TrackingSummary | None:
        """Upload stage 3's report and close the sweep's runs (also of an interrupted one)."""
        ...


class NullTracker:
    """Tracking turned off: nothing is logged, registered or promoted."""

    def callbacks(self, dataset: OfflineDataset, record: SweepRecord) -> list[tune.Callback]:
        return []

    def champion_policy(self) -> Policy | None:
        return None

    def promote(
        self, ranked: Sequence[TrialRow], confirmation: Confirmation | None
    ) -> Promotion | None:
        return None

    def finish(
        self, outcome: SearchOutcome, report: Report, promotion: Promotion | None
    ) -> TrackingSummary | None:
        return None
