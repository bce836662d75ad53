"""The data flywheel's report (`tuning/loop/report.py`): a row per finished round in
`rounds.csv` (the CLI prints them too) and the curve in `curve.png`. Fast: no battles."""

from __future__ import annotations

from pathlib import Path

from poke_tune.tuning.loop.plan import PREVIOUS_CHAMPION, LoopSettings
from poke_tune.tuning.loop.report import loop_table, write_loop_report
from poke_tune.tuning.records import LoopRecord, RoundRecord
from poke_tune.tuning.spec_file import load_spec
from tests.tuning.loop.test_plan import TINY, curve_point, done_round


def test_the_loop_report_has_a_row_per_round(tmp_path: Path) -> None:
    settings = LoopSettings.of(
        load_spec(TINY, {"storage_path": str(tmp_path / "ray"), "rounds": {"count": 3}})
    )
    head = curve_point(PREVIOUS_CHAMPION, [True] * 6 + [False] * 4)
    record = LoopRecord(
        rounds=[
            done_round(0, 0, 5, transitions=100, seconds={"sweeping": 30.0}),
            done_round(1, 1, 8, transitions=220, seconds={"generating": 5.0, "sweeping": 20.0}),
            RoundRecord(index=2, stage="sweeping"),
        ]
    )
    record.rounds[1].curve.append(head)
    rows = loop_table(settings, record)
    assert [r["round"] for r in rows] == ["0", "1"]
    assert rows[1]["vs random"] == "0.800"
    assert rows[1]["vs random paired to previous"].startswith("+0.300")
    assert rows[1]["winner vs previous champion"] == "0.600"
    assert rows[1]["generating s"] == "5"
    files = write_loop_report(tmp_path / "report", settings, record)
    assert [f.name for f in files] == ["rounds.csv", "curve.png"]
    assert all(f.stat().st_size > 0 for f in files)
    assert len((tmp_path / "report" / "rounds.csv").read_text().splitlines()) == 3
