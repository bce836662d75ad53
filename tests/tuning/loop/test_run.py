"""Running a loop (`tuning/loop/run.py`) without battles: what `run_iterate` refuses, the
loop folder's record as earlier loops wrote it, and the turn over rounds with its stages
stubbed (the record written after every stage, the hooks handed through as one value).
The real loop, killed and resumed, is `test_iterate.py` (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poke_tune.tuning.loop import run as loop_run
from poke_tune.tuning.loop.folder import LOOP_FILE, Loop, LoopExistsError
from poke_tune.tuning.loop.plan import LoopSettings
from poke_tune.tuning.loop.run import resume_iterate, run_iterate
from poke_tune.tuning.loop.stages import LoopHooks
from poke_tune.tuning.records import CurvePoint, LoopRecord, RoundRecord
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).parents[1] / "tiny.yaml"


def _spec(tmp_path: Path, **overrides: Any) -> SearchSpec:
    return load_spec(
        TINY,
        {
            "storage_path": str(tmp_path / "ray"),
            "rounds": {"count": 1},
            "mlflow": {"enabled": False},
            **overrides,
        },
    )


def test_a_spec_without_rounds_or_on_object_storage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no `rounds:` section"):
        run_iterate(_spec(tmp_path, rounds=None))
    with pytest.raises(ValueError, match="object storage is not supported"):
        run_iterate(_spec(tmp_path, storage_path="s3://bucket/runs"))
    with pytest.raises(FileNotFoundError, match="is not a poke-tune loop folder"):
        resume_iterate(tmp_path)


def test_a_started_loop_is_not_started_again(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    loop = Loop(LoopSettings.of(spec))
    with loop.lock():  # the lock makes the folder
        loop.start(LoopRecord())
    with pytest.raises(LoopExistsError, match="poke-tune iterate --resume"):
        run_iterate(spec)


def test_the_loop_record_reads_as_earlier_loops_wrote_it(tmp_path: Path) -> None:
    # `poke_tune_loop.json` keeps its fields, so a loop started before resumes.
    written = {
        "spec_file": "tiny.yaml",
        "overrides": ["rounds.count=1"],
        "argv": ["poke-tune", "iterate"],
        "rounds": [
            {
                "index": 0,
                "stage": "done",
                "sweep": "/runs/tiny/tiny-r0",
                "behaviour": [],
                "generated": "/cache/generated/a.json",
                "data": ["/cache/generated/a.json"],
                "dataset": "/cache/generated/a.json",
                "new_battles": 30,
                "battles": 30,
                "trajectories": 60,
                "transitions": 900,
                "winner": "models:/poke-tune-tiny/1",
                "best_params": {"expectile": 0.7},
                "promotion": "promoted: first",
                "promoted": True,
                "champion_round": 0,
                "champion": "models:/poke-tune-tiny/1",
                "sweep_run_id": "abc",
                "curve": [
                    {
                        "opponent": "random",
                        "win_rate": 0.5,
                        "ci_low": 0.1,
                        "ci_high": 0.9,
                        "won": [True, False],
                    }
                ],
                "seconds": {"sweeping": 12.0, "measuring": 3.0},
            },
            {"index": 1, "stage": "sweeping"},
        ],
        "stopped": None,
        "finished": False,
    }
    spec = _spec(tmp_path)
    loop = Loop(LoopSettings.of(spec))
    with loop.lock():
        loop.start(LoopRecord())
    (loop.folder / LOOP_FILE).write_text(json.dumps(written))
    record = Loop.open(loop.folder).read()
    assert record.rounds[0].curve[0].won == [True, False] and record.rounds[1].stage == "sweeping"
    loop.write(record)
    again = json.loads((loop.folder / LOOP_FILE).read_text())
    # Every field an earlier loop wrote is kept; later fields (promotion, head to head)
    # are added with their defaults.
    assert set(written) <= set(again) and set(written["rounds"][0]) <= set(again["rounds"][0])


def test_the_turn_writes_the_record_after_every_stage_and_hands_the_hooks_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, list[str]]] = []
    folder = tmp_path / "ray" / "tiny"

    def stages_on_disk() -> list[str]:
        record = json.loads((folder / LOOP_FILE).read_text())
        return [r["stage"] for r in record["rounds"]]

    def generate_round(settings: LoopSettings, record: LoopRecord, current: RoundRecord) -> None:
        seen.append(("generating", current.index, stages_on_disk()))

    def sweep_round(loop: Loop, record: LoopRecord, current: RoundRecord, hooks: LoopHooks) -> Any:
        assert hooks.address == "ray://head:10001"
        seen.append(("sweeping", current.index, stages_on_disk()))
        current.winner = f"winner-{current.index}"
        return type("Sweep", (), {"interrupted": False})()

    def measure_round(
        settings: LoopSettings, record: LoopRecord, current: RoundRecord, on_battle: Any
    ) -> None:
        seen.append(("measuring", current.index, stages_on_disk()))
        current.champion_round, current.champion = current.index, current.winner
        current.curve.append(
            CurvePoint(opponent="random", win_rate=0.5, ci_low=0.1, ci_high=0.9, won=[True])
        )

    monkeypatch.setattr(loop_run, "generate_round", generate_round)
    monkeypatch.setattr(loop_run, "sweep_round", sweep_round)
    monkeypatch.setattr(loop_run, "measure_round", measure_round)
    rounds: list[int] = []

    def on_round(settings: LoopSettings, record: LoopRecord, current: RoundRecord) -> None:
        assert settings.rounds.count == 1
        rounds.append(current.index)

    hooks = LoopHooks(address="ray://head:10001", on_round=on_round)
    outcome = run_iterate(_spec(tmp_path), hooks=hooks)
    assert seen == [
        ("sweeping", 0, ["sweeping"]),
        ("measuring", 0, ["measuring"]),
        ("generating", 1, ["done", "generating"]),
        ("sweeping", 1, ["done", "sweeping"]),
        ("measuring", 1, ["done", "measuring"]),
    ]
    assert rounds == [0, 1] and not outcome.interrupted
    assert outcome.record.finished and stages_on_disk() == ["done", "done"]
    assert outcome.report is not None and (outcome.report / "rounds.csv").is_file()
    # A finished loop resumed plays nothing more.
    assert resume_iterate(folder, hooks=hooks).record.finished and len(seen) == 5
