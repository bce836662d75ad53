"""Real third-party logs: a local server's own battle logs, written while poke-env bots (and
a poke-tune `PolicyPlayer`) play on it, imported by re-simulation; a corrupt log and one
from "another simulator version" (its seed altered) are refused with their reasons."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from poke_tune.cli.main import app
from poke_tune.data import importer
from poke_tune.data.importer import import_battles
from poke_tune.data.jsonl import read_trajectories
from poke_tune.play.factory import make_player
from poke_tune.play.match import play_match
from poke_tune.play.record import battle_logs, record_bot_battles, wait_for_logs
from poke_tune.play.server import LocalServer, free_port
from poke_tune.sim.actions import action_index
from poke_tune.sim.policies import make_policy
from tests.play.test_play_observations import Recording

pytestmark = pytest.mark.slow


def test_bot_battles_logged_by_the_server_import_and_bad_logs_are_refused(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    recorded = record_bot_battles(6, logs_dir=logs, concurrency=2)
    files = battle_logs(logs)
    assert recorded.battles == len(files) == 6
    summary = import_battles([logs], tmp_path / "all.jsonl.gz", num_workers=1)
    assert (summary.read, summary.imported, summary.refused) == (6, 6, 0)
    records = list(read_trajectories(tmp_path / "all.jsonl.gz"))
    assert len(records) == 12 and all(r.policy == "logged" for r in records)
    text = (tmp_path / "all.jsonl.gz").read_bytes()
    assert b"SimpleHeuristics" not in text  # compressed, but cheap to check

    files[0].write_text(files[0].read_text()[:-200])  # a truncated write
    altered = json.loads(files[1].read_text())
    start = altered["inputLog"][0]
    altered["inputLog"][0] = start.replace("sodium,", "sodium,0", 1)[:-3] + '"}'
    files[1].write_text(json.dumps(altered))
    summary = import_battles([logs], tmp_path / "rest.jsonl", num_workers=1)
    assert summary.imported == 4
    assert summary.refused_by_reason() == {importer.CORRUPT: 1, importer.DIVERGED: 1}
    diverged = next(r for r in summary.refusals if r.reason == importer.DIVERGED)
    assert "line " in diverged.detail and "POKE_TUNE_SHOWDOWN_DIR" in diverged.detail


def test_a_policy_player_battle_imports_to_what_the_player_saw(tmp_path: Path) -> None:
    recording = Recording(make_policy("heuristic"))
    logs = tmp_path / "logs"
    with LocalServer(port=free_port(), logs_dir=logs) as server:

        async def match() -> int:
            player = make_player(recording, server_url=server.url, concurrency=1)
            opponent = make_player("poke-env:max-base-power", server_url=server.url)
            result = await play_match(player, opponent=opponent, battles=1)
            return result.invalid_choices + result.failed

        assert asyncio.run(match()) == 0
        assert wait_for_logs(logs, 1) == 1  # written whole just after the battle ends
    summary = import_battles([logs], tmp_path / "out.jsonl", num_workers=1)
    assert summary.imported == 1, summary.refusals
    side = recording.decisions[0][0]
    (record,) = [r for r in read_trajectories(tmp_path / "out.jsonl") if r.player == side]
    assert len(record.steps) == len(recording.decisions)
    for step, (_, observation, mask, action) in zip(
        record.steps, recording.decisions, strict=True
    ):
        # The file holds float32 values: compare as float32.
        np.testing.assert_array_equal(np.asarray(step.observation, np.float32), observation)
        np.testing.assert_array_equal(step.action_mask, mask)
        assert action_index(step.action_type, step.action_target) == action


def test_the_record_then_import_recipe_from_the_command_line(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "bots.jsonl.gz"
    recorded = CliRunner().invoke(app, ["data", "record", str(logs), "--battles", "2"])
    assert recorded.exit_code == 0, recorded.stderr
    assert f"{logs}: 2 battle logs (2 new)" in recorded.stdout
    imported = CliRunner().invoke(app, ["data", "import", str(logs), str(out), "--workers", "1"])
    assert imported.exit_code == 0, imported.stderr
    assert f"wrote {out}: 2 battles, 4 trajectories" in imported.stdout
