"""MLflow tracking on real stores: a tiny sweep into a SQLite store, one into a real
`mlflow server` on 127.0.0.1 that is stopped for part of the sweep, the champion alias,
and the MLflow UI in headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient

from poke_tune.algos import read_checkpoint
from poke_tune.eval.paired import PairedDifference
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.confirm.report import verdict
from poke_tune.tuning.experiment import UNSENT_FILE, Experiment
from poke_tune.tuning.policies import fluent_tracking_uri, load_registered_policy
from poke_tune.tuning.spec import OBJECTIVE_KEY, SearchSpec
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.sweep import SweepOutcome, run_sweep
from poke_tune.tuning.track.registry import promote, register
from poke_tune.tuning.track.store import TrackingUnavailableError
from tests.conftest import MLflowServer, free_port, wait_http

TINY = Path(__file__).parents[1] / "tiny.yaml"
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("POKE_TUNE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _spec(folder: Path, name: str, tracking_uri: str) -> SearchSpec:
    return load_spec(
        TINY,
        {
            "name": name,
            "storage_path": str(folder / "ray"),
            "num_samples": 3,
            "mlflow": {"tracking_uri": tracking_uri, "registered_model": f"{name}-policy"},
            # Enough battles that a trained policy beats the random baseline beyond the
            # interval, so that a champion is promoted.
            "confirm": {"battles": 60, "rounds": 2},
        },
    )


@pytest.fixture(scope="module")
def sqlite_sweep(
    local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SearchSpec, SweepOutcome]:
    folder = tmp_path_factory.mktemp("sqlite")
    spec = _spec(folder, "tracked", f"sqlite:///{folder / 'mlflow.db'}")
    return spec, run_sweep(spec)


def _check_sweep_in_mlflow(spec: SearchSpec, outcome: SweepOutcome, tmp_path: Path) -> None:
    """Parent, one child per trial with params, histories and status, the best checkpoint,
    and the champion: what a person comparing runs in the MLflow UI relies on."""
    assert spec.mlflow.tracking_uri is not None
    client = MlflowClient(spec.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == spec.name and parent.info.status == "FINISHED"
    assert parent.data.params["algorithm.algo"] == "iql"
    assert parent.data.tags["encoder_version"] == ENCODER_VERSION
    assert len(parent.data.tags["dataset.hash"]) >= 16
    children = {r.data.tags["poke_tune.trial_id"]: r for r in runs if r is not parent}
    assert len(children) == len(outcome.rows) == spec.num_samples
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}

    for row in outcome.rows:
        child = children[row.trial_id]
        assert child.info.status == "FINISHED"
        assert child.data.tags["status"] == row.status
        assert re.fullmatch(r"iql-expectile=[\d.]+-temperature=[\d.]+-t\d\d", child.info.run_name)
        assert child.data.params == {key: str(value) for key, value in row.params.items()}
        history = client.get_metric_history(child.info.run_id, "eval/win_rate")
        steps = [m.step for m in sorted(history, key=lambda m: m.step)]
        assert steps == [20 * (i + 1) for i in range(row.evaluations)]
        assert child.data.metrics[OBJECTIVE_KEY] == pytest.approx(row.score)
        assert "objective/final" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, "train/q_loss")) == len(steps)

    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "plots", "best_checkpoint", "confirmation"} <= names
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"optimization_history.png", "objective_vs_params.png"} <= plots
    report = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "confirmation")}
    assert report == {
        "confirmation.md",
        "confirmation.csv",
        "win_rates.png",
        "expected_best_vs_trials.png",
    }

    # The champion is the confirmation's winner; its numbers are on its child run.
    confirmation = outcome.confirmation
    assert confirmation is not None and confirmation.winner is not None
    winner = confirmation.winner
    best = next(r for r in outcome.rows if r.trial_id == winner.trial_id)
    assert best.checkpoint is not None
    shortlisted = [s for s in confirmation.standings if s.role == "candidate"]
    for standing in shortlisted:
        metrics = children[str(standing.trial_id)].data.metrics
        assert metrics["confirm/win_rate"] == pytest.approx(standing.result.win_rate)
        assert metrics["confirm/battles"] == standing.result.battles
        assert "confirm/vs_best_baseline_ci_low" in metrics and "confirm/optimism" in metrics
    assert parent.data.metrics["confirm/champion_win_rate"] == pytest.approx(
        winner.result.win_rate
    )
    local = mlflow.artifacts.download_artifacts(
        run_id=children[best.trial_id].info.run_id,
        artifact_path="best_checkpoint/trainer.pt",
        dst_path=str(tmp_path),
        tracking_uri=spec.mlflow.tracking_uri,
    )
    assert read_checkpoint(Path(local))["step"] == read_checkpoint(best.checkpoint)["step"]

    name = f"{spec.name}-policy"
    assert outcome.tracking is not None and outcome.tracking.promotion is not None
    assert outcome.tracking.promotion.promoted, verdict(confirmation)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == children[best.trial_id].info.run_id
    assert champion.tags["confirm.win_rate"] == f"{winner.result.win_rate:.4f}"
    assert champion.tags["confirm.seed"] == str(spec.confirm.seed)
    assert "confirm.vs_random" in champion.tags
    assert "promoted: beats the best baseline" in champion.description
    policy = load_registered_policy(f"models:/{name}@champion", spec.mlflow.tracking_uri)
    result = evaluate(policy, make_policy("random"), battles=4)
    assert result.battles == 4 and result.invalid_choices == 0
    with fluent_tracking_uri(spec.mlflow.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    mask = np.zeros((2, 14), bool)
    mask[:, 5] = True  # only one legal action: the model must pick it
    size = read_checkpoint(best.checkpoint)["observation_size"]
    observation = np.zeros((2, size), np.float32)
    assert model.predict({"observation": observation, "action_mask": mask}).tolist() == [5, 5]


def test_a_sweep_lands_in_a_sqlite_store(
    sqlite_sweep: tuple[SearchSpec, SweepOutcome], tmp_path: Path
) -> None:
    _check_sweep_in_mlflow(*sqlite_sweep, tmp_path)


def test_champion_moves_only_to_a_model_that_beats_it_on_the_same_battles(
    sqlite_sweep: tuple[SearchSpec, SweepOutcome],
) -> None:
    spec, outcome = sqlite_sweep
    assert outcome.confirmation is not None and spec.mlflow.tracking_uri is not None
    client = MlflowClient(spec.mlflow.tracking_uri)
    name = f"{spec.name}-policy"
    before = str(client.get_model_version_by_alias(name, "champion").version)
    # Another trial of the sweep, registered as a new version.
    other = next(
        r
        for r in outcome.rows
        if r.trial_id != outcome.confirmation.winner.trial_id  # type: ignore[union-attr]
    )
    run_id = client.search_runs(
        [client.get_experiment_by_name(spec.name).experiment_id],
        filter_string=f"tags.`poke_tune.trial_id` = '{other.trial_id}'",
    )[0].info.run_id
    version = register(client, spec, Experiment(spec).location, other, run_id)
    assert version != before
    # Registering the same checkpoint again finds the version instead of adding one.
    assert register(client, spec, Experiment(spec).location, other, run_id) == version

    def against_champion(difference: float) -> Any:
        gap = PairedDifference(difference, difference - 0.05, difference + 0.05, 24, 3, 1)
        return dataclasses.replace(outcome.confirmation, vs_current_champion=gap)

    refused = promote(client, spec, version, other, against_champion(-0.1))
    assert not refused.promoted and "current champion" in refused.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == before
    granted = promote(client, spec, version, other, against_champion(+0.1))
    assert granted.promoted
    assert str(client.get_model_version_by_alias(name, "champion").version) == version
    tags = client.get_model_version(name, version).tags
    assert tags["confirm.vs_previous_champion"] == "+0.100 [+0.050, +0.150]"
    # The champion confirmed again (`poke-tune confirm`) keeps the alias, and its version
    # records the new confirmation, even when it reads worse.
    again = promote(client, spec, version, other, against_champion(-0.2))
    assert again.promoted and again.reason.startswith("already the champion")
    assert str(client.get_model_version_by_alias(name, "champion").version) == version
    tags = client.get_model_version(name, version).tags
    assert tags["promotion"].startswith("promoted: already the champion; this confirmation:")
    assert "confirm.vs_previous_champion" not in tags  # not compared with itself


def test_an_unreachable_server_fails_before_anything_starts(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "unreachable", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="unreachable"):
        run_sweep(spec)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "ray").exists()


def test_a_server_outage_mid_sweep_loses_nothing(
    local_ray: None, mlflow_server: MLflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = mlflow_server
    # A password in the tracking URI must reach the server and nowhere else.
    spec = _spec(tmp_path, "outage", server.url.replace("http://", "http://alice:s3cret-pw@"))
    outage: dict[str, Any] = {}

    def stop_then_restart() -> None:
        client = MlflowClient(server.url)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            except Exception:
                runs = []
            if any("mlflow.parentRunId" in r.data.tags for r in runs):
                break
            time.sleep(0.5)
        server.stop()
        outage["stopped"] = time.monotonic()
        time.sleep(10)
        server.start()
        outage["restarted"] = time.monotonic()

    caplog.set_level(logging.WARNING, logger="poke_tune.tuning.track.store")
    controller = threading.Thread(target=stop_then_restart)
    controller.start()
    try:
        outcome = run_sweep(spec)
        controller.join()
        assert "stopped" in outage and "restarted" in outage
        assert any("MLflow unreachable" in r.getMessage() for r in caplog.records)
        assert not (Path(spec.storage_path) / spec.name / UNSENT_FILE).exists()
        _check_sweep_in_mlflow(spec, outcome, tmp_path)
        _check_no_password(spec, server.url, caplog)
    finally:
        controller.join()


def _check_no_password(spec: SearchSpec, url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Not in the experiment folder (Tune's pickles included), MLflow or the log."""
    for path in Path(Experiment(spec).location).rglob("*"):
        if path.is_file():
            assert b"s3cret-pw" not in path.read_bytes(), path
    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    for run in runs:
        assert "s3cret-pw" not in json.dumps([run.data.params, run.data.tags])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "alice:***@" in parent.data.params["mlflow.tracking_uri"]
    for version in client.search_model_versions(f"name = '{spec.name}-policy'"):
        assert "s3cret-pw" not in json.dumps(version.tags)
    assert not any("s3cret-pw" in r.getMessage() for r in caplog.records)


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_the_mlflow_ui_shows_the_sweep(
    sqlite_sweep: tuple[SearchSpec, SweepOutcome], tmp_path: Path
) -> None:
    found = _chromium()
    if found is None:
        if os.environ.get("POKE_TUNE_REQUIRE_BROWSER"):
            pytest.fail(
                "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
            )
        pytest.skip("no chromium/chromedriver on this machine")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    spec, outcome = sqlite_sweep
    port = free_port()
    experiment = f"{spec.storage_path}/{spec.name}"
    ui = subprocess.Popen(
        [str(Path(sys.executable).with_name("poke-tune")), "ui", experiment, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert ui.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+/#/experiments/\d+/runs", ui.stdout.readline())
        assert url is not None, "poke-tune ui did not print the runs page"
        wait_http(f"http://127.0.0.1:{port}/health")

        options = webdriver.ChromeOptions()
        options.binary_location = found[0]
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
            f"--user-data-dir={tmp_path / 'chromium'}",
        ):  # fmt: skip
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service(found[1]), options=options)
        try:
            browser.get(url.group(0))
            children = [
                client_run.info.run_name
                for client_run in MlflowClient(spec.mlflow.tracking_uri).search_runs(
                    [
                        MlflowClient(spec.mlflow.tracking_uri)
                        .get_experiment_by_name(spec.name)
                        .experiment_id
                    ],
                    filter_string="tags.`mlflow.parentRunId` != ''",
                )
            ]
            assert len(children) == len(outcome.rows)

            def shows_runs(driver: Any) -> bool:
                text = driver.find_element("tag name", "body").text
                if spec.name in text and not any(name in text for name in children):
                    # Child runs are folded under their parent: unfold them (the button
                    # in the run-name cell).
                    for button in driver.find_elements(
                        "css selector", "button[data-component-id*='runnamecellrenderer']"
                    ):
                        button.click()
                    text = driver.find_element("tag name", "body").text
                return spec.name in text and all(name in text for name in children)

            try:
                WebDriverWait(browser, 90).until(shows_runs)
            finally:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(ARTIFACTS / "mlflow_ui_sweep.png"))

            # The parent run's artifacts hold the confirmation report: open its folder.
            client = MlflowClient(spec.mlflow.tracking_uri)
            parent = outcome.tracking.parent_run_id  # type: ignore[union-attr]
            experiment_id = client.get_run(parent).info.experiment_id
            base = url.group(0).split("#")[0]
            browser.get(f"{base}#/experiments/{experiment_id}/runs/{parent}/artifacts")

            def shows_report(driver: Any) -> bool:
                text = driver.find_element("tag name", "body").text
                if "confirmation" in text and "win_rates.png" not in text:
                    for item in driver.find_elements(
                        "xpath", "//*[normalize-space(text())='confirmation']"
                    ):
                        try:
                            item.click()
                        except Exception:  # a covered or stale element: try the next
                            continue
                    text = driver.find_element("tag name", "body").text
                return all(n in text for n in ("confirmation.md", "win_rates.png"))

            try:
                WebDriverWait(browser, 90).until(shows_report)
            finally:
                browser.save_screenshot(str(ARTIFACTS / "mlflow_ui_confirmation.png"))
        finally:
            browser.quit()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
