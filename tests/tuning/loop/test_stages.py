"""The measuring stage with real battles and no sweep: a round's winner promoted by
sequential paired battles, and the champions' head-to-head matrix in the report."""

from __future__ import annotations

import csv
from pathlib import Path

from poke_tune.tuning.loop.plan import LoopSettings
from poke_tune.tuning.loop.report import loop_table, write_loop_report
from poke_tune.tuning.loop.stages import measure_round
from poke_tune.tuning.records import LoopRecord, RoundRecord
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).parents[1] / "tiny.yaml"


def _settings(tmp_path: Path, budget: int) -> LoopSettings:
    rounds = {
        "count": 2,
        "curve_battles": 12,
        "curve_opponents": ["max-damage"],
        "reference": "max-damage",
        "promotion": {"chunk": 20, "budget": budget},
        "head_to_head_battles": 10,
    }
    overrides = {"storage_path": str(tmp_path), "mlflow": {"enabled": False}, "rounds": rounds}
    return LoopSettings.of(load_spec(TINY, overrides))


def _measured(settings: LoopSettings, winners: list[str]) -> LoopRecord:
    """Each round's winner measured in turn, as the loop does after its sweeps."""
    record = LoopRecord()
    for index, winner in enumerate(winners):
        record.rounds.append(RoundRecord(index=index, stage="measuring", winner=winner))
        measure_round(settings, record, record.rounds[-1], None)
        record.rounds[-1].stage = "done"
    return record


def test_a_clearly_better_winner_is_promoted_early_and_meets_the_champions(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, budget=100)
    record = _measured(settings, ["random", "max-damage"])
    first, second = record.rounds
    assert first.sequential is None and first.champion == "random"  # round 0 starts the loop
    decided = second.sequential
    assert decided is not None and decided.stopped == "candidate better"
    # Resolved before the budget, at a chunk's end.
    assert decided.battles < 100 and decided.battles == 20 * decided.looks
    assert decided.ci_low > 0
    assert second.promoted and second.champion == "max-damage" and second.champion_round == 1
    assert second.promotion.startswith(
        f"promoted: candidate better after {decided.battles} paired battles"
    )
    # Both directions of the new champion against the old one, on the same battles.
    cells = {(c.row, c.column): c for c in record.head_to_head}
    assert set(cells) == {(1, 0), (0, 1)}
    assert cells[1, 0].battles == cells[0, 1].battles == 10
    assert cells[1, 0].win_rate + cells[0, 1].win_rate <= 1.0
    assert cells[1, 0].win_rate > cells[0, 1].win_rate  # max-damage beats random
    written = write_loop_report(tmp_path / "report", settings, record)
    assert tmp_path / "report" / "head_to_head.csv" in written
    with (tmp_path / "report" / "head_to_head.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert [r["champion of round"] for r in rows] == ["0", "1"] and rows[0]["vs round 0"] == ""
    row = loop_table(settings, record)[1]
    assert row["promotion battles"] == str(decided.battles)
    assert row["promotion"].startswith("candidate better")
    assert row["vs max-damage paired to round 0"].startswith("+")


def test_an_equal_winner_stops_at_the_budget_and_the_champion_stays(tmp_path: Path) -> None:
    settings = _settings(tmp_path, budget=40)
    record = _measured(settings, ["max-damage", "max-damage"])
    decided = record.rounds[1].sequential
    assert decided is not None and decided.stopped == "budget" and decided.battles == 40
    assert decided.difference == 0.0  # the same policy on the same battles
    assert not record.rounds[1].promoted and record.rounds[1].champion_round == 0
    assert record.head_to_head == []  # no new champion: no one to meet
