"""`poke-tune iterate` end to end: a tiny loop of two rounds (round 0 and round 1), killed
during round 1, resumed, with no battle generated twice and the loop's report on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from poke_tune.sim.runtime import find_runtime

TINY = Path(__file__).parents[1] / "tiny.yaml"
POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))
pytestmark = pytest.mark.slow


def _files(folder: Path) -> dict[str, int]:
    """Each cached file's modification time: rebuilt files would change it."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.json*"))}


def test_a_killed_loop_resumes_without_generating_any_battle_twice(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "POKE_TUNE_SHOWDOWN_DIR": str(find_runtime().package_dir),
        "POKE_TUNE_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    storage = tmp_path / "ray"
    command = [POKE_TUNE, "iterate", str(TINY), "--rounds", "1"]
    for override in (
        f"storage_path={storage}",
        "num_samples=2",
        "rounds.battles=12",
        "rounds.temperatures=[0.05]",
        "rounds.curve_battles=8",
        "rounds.curve_opponents=[max-damage]",
        # A league, promotion by sequential battles and the champions' matrix, tiny.
        "rounds.league={champion_share: 0.5}",
        "rounds.promotion={chunk: 8, budget: 16}",
        "rounds.head_to_head_battles=4",
    ):
        command += ["--set", override]
    loop = storage / "tiny"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list((loop / "tiny-r1").glob("*/result.json")):
        assert driver.poll() is None, driver.communicate()[0].decode()[-3000:]
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)  # Ctrl-C during round 1's search
    interrupted = driver.communicate(timeout=300)[0].decode()
    assert driver.returncode == 130, interrupted[-3000:]
    assert f"poke-tune iterate --resume {loop}" in interrupted
    assert "round 0:" in interrupted
    generated = _files(tmp_path / "cache" / "generated")
    combined = _files(tmp_path / "cache" / "combined")
    assert len(generated) == 2 and len(combined) == 1  # round 0's data, round 1's, together
    record = json.loads((loop / "poke_tune_loop.json").read_text())
    assert [r["stage"] for r in record["rounds"]] == ["done", "sweeping"]

    resumed = subprocess.run(
        [POKE_TUNE, "iterate", "--resume", str(loop)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "round 1:" in resumed.stdout and "the data flywheel" in resumed.stdout
    # No battle was generated twice: the cached files are the ones the first run built.
    assert _files(tmp_path / "cache" / "generated") == generated
    assert _files(tmp_path / "cache" / "combined") == combined
    record = json.loads((loop / "poke_tune_loop.json").read_text())
    assert record["finished"] and [r["stage"] for r in record["rounds"]] == ["done", "done"]
    zero, one = record["rounds"]
    # Round 1's battles were played by round 0's winner, pinned to its registered version.
    assert zero["winner"].startswith("models:/poke-tune-tiny/")
    assert one["behaviour"][0] == f"{zero['winner']}:softmax=0.05"
    assert one["transitions"] > zero["transitions"] and len(one["data"]) == 2
    assert {p["opponent"] for p in one["curve"]} == {"max-damage", "random", "previous champion"}
    # The report is on disk; MLflow has the loop's run with one child per round.
    rows = (loop / "report" / "rounds.csv").read_text().splitlines()
    assert len(rows) == 3 and (loop / "report" / "curve.png").stat().st_size > 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`poke_tune.loop` = '{loop}'",
    )
    rounds = sorted(r.data.tags.get("poke_tune.round", "loop") for r in runs)
    assert rounds == ["0", "1", "loop"]
    # Both rounds' sweeps registered under the one model.
    assert len(client.search_model_versions("name = 'poke-tune-tiny'")) == 2
    # Round 1's battles were drawn by the league, and its header says so.
    manifest = json.loads(Path(one["generated"]).read_text())
    assert manifest["header"]["generator"]["league"]["learners"] == [
        f"{zero['winner']}:softmax=0.05"
    ]
    # Promotion by sequential paired battles decided the champion, and the registry's
    # alias follows the loop's decision.
    decided = one["sequential"]
    assert decided["battles"] in (8, 16) and decided["opponent"] == "random"
    assert one["promoted"] == (decided["stopped"] == "candidate better")
    champion = client.get_model_version_by_alias("poke-tune-tiny", "champion")
    assert f"models:/poke-tune-tiny/{champion.version}" == one["champion"]
    cells = {(c["row"], c["column"]) for c in record["head_to_head"]}
    assert cells == ({(1, 0), (0, 1)} if one["promoted"] else set())
