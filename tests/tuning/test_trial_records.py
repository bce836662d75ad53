"""A trial's status from its last result, its error and Tune's state; a trial described
in a few characters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from poke_tune.tuning.records import SCORED, TrialRow, describe, ranked, trial_status
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).with_name("tiny.yaml")


@pytest.mark.parametrize(
    ("last_result", "failed", "state", "expected"),
    [
        # An error wins over everything the trial reported.
        ({"status": "completed"}, True, "TERMINATED", "failed"),
        ({"status": "completed"}, True, None, "failed"),
        ({}, False, "ERROR", "failed"),
        ({"status": "diverged"}, False, "ERROR", "failed"),
        # What the trial reported about its own end.
        ({"status": "completed"}, False, "TERMINATED", "completed"),
        ({"status": "completed"}, False, None, "completed"),
        ({"status": "completed"}, False, "RUNNING", "completed"),
        ({"status": "diverged"}, False, "TERMINATED", "diverged"),
        ({"status": "diverged"}, False, None, "diverged"),
        ({"status": "diverged"}, False, "PAUSED", "diverged"),
        # Cut off by the end of the sweep.
        ({"status": "running"}, False, "RUNNING", "interrupted"),
        ({}, False, "PAUSED", "interrupted"),
        ({}, False, "PENDING", "interrupted"),
        # Stopped by the scheduler: Tune terminated it before it reported completion.
        ({"status": "running"}, False, "TERMINATED", "early-stopped"),
        ({}, False, "TERMINATED", "early-stopped"),
        # The live callback does not know Tune's state.
        ({"status": "running"}, False, None, "early-stopped"),
        ({}, False, None, "early-stopped"),
    ],
)
def test_trial_status(
    last_result: dict[str, Any], failed: bool, state: str | None, expected: str
) -> None:
    assert trial_status(last_result, failed=failed, state=state) == expected


def test_only_completed_and_early_stopped_trials_are_scored() -> None:
    assert set(SCORED) == {"completed", "early-stopped"}


def test_describe() -> None:
    assert describe("cql", {"alpha": 2.3123, "n": 3}) == "cql alpha=2.31 n=3"
    assert describe("iql", {"expectile": 0.712345, "lr": 3e-4}, sep=",") == (
        "iql,expectile=0.712,lr=0.0003"
    )
    assert describe("bc", {}) == "bc"


def _row(
    trial_id: str, score: float | None, status: str = "completed", checkpoint: bool = True
) -> TrialRow:
    return TrialRow(
        trial_id=trial_id,
        params={},
        score=score,
        status=status,  # type: ignore[arg-type]
        evaluations=1,
        checkpoint=Path(f"/ckpt/{trial_id}/trainer.pt") if checkpoint else None,
    )


@pytest.mark.parametrize(("mode", "order"), [("max", ["b", "e", "a"]), ("min", ["a", "e", "b"])])
def test_ranked_keeps_the_scored_trials_with_a_checkpoint_best_first(
    mode: str, order: list[str]
) -> None:
    spec = load_spec(TINY, {"objective": {"mode": mode}})
    rows = [
        _row("a", 0.2),
        _row("b", 0.9),
        _row("c", 0.95, status="failed"),
        _row("d", 0.99, checkpoint=False),
        _row("e", 0.5, status="early-stopped"),
        _row("f", None),
        _row("g", 0.97, status="diverged"),
        _row("h", 0.98, status="interrupted"),
    ]
    assert [row.trial_id for row in ranked(rows, spec.objective)] == order
