"""The tracking store on real stores: the `Outbox` sending to a SQLite store, refusing
what the store refuses, and keeping everything while a server is down; `check_reachable`
on a down server (with a password in its URI that must not show)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.track.store import (
    EXPERIMENT_TAG,
    TRIAL_TAG,
    Outbox,
    TrackingUnavailableError,
    check_reachable,
    experiment_id,
    quick_http_failures,
    sweep_runs_filter,
)
from tests.conftest import free_port

TINY = Path(__file__).parents[1] / "tiny.yaml"
SWEEP = "/runs/ray/tiny-0001"
_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (its schema takes a while to create)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'nested' / 'mlflow.db'}"
    check_reachable(uri)  # creates the folder, and the schema under the setup lock
    return uri


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A down server fails in seconds, not minutes; the settings do not outlive the test."""
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    quick_http_failures()


def _spec(store: str) -> SearchSpec:
    return load_spec(TINY, {"name": f"store{next(_names)}", "mlflow": {"tracking_uri": store}})


def _experiment(store: str) -> str:
    return experiment_id(MlflowClient(store), _spec(store))


def _sweep(outbox: Outbox, trial: str = "t1") -> list[dict[str, Any]]:
    """What a sweep queues: its parent run, a child, the child's metrics, its end."""
    outbox.put("create_run", "parent", name="tiny", tags={EXPERIMENT_TAG: SWEEP})
    outbox.put(
        "create_run",
        trial,
        parent="parent",
        name=f"iql {trial}",
        tags={EXPERIMENT_TAG: SWEEP, TRIAL_TAG: trial},
    )
    outbox.put(
        "log_batch",
        trial,
        metrics=[
            ["eval/win_rate", 0.25, 1000, 20],
            ["eval/win_rate", 0.5, 2000, 40],
            ["train/loss", 1.5, 2000, 40],
        ],
        params={"expectile": "0.7"},
        tags={"poke_tune.status": "completed"},
    )
    outbox.put("set_terminated", trial, status="FINISHED")
    return [dict(write) for write in outbox.pending]


def _check_sent(client: MlflowClient, run_ids: dict[str, str], trial: str = "t1") -> None:
    parent = client.get_run(run_ids["parent"])
    child = client.get_run(run_ids[trial])
    assert parent.data.tags[EXPERIMENT_TAG] == SWEEP and TRIAL_TAG not in parent.data.tags
    assert parent.info.run_name == "tiny"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags[TRIAL_TAG] == trial
    assert child.data.tags["poke_tune.status"] == "completed"
    assert child.data.params == {"expectile": "0.7"}
    history = client.get_metric_history(child.info.run_id, "eval/win_rate")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(20, 0.25, 1000), (40, 0.5, 2000)]
    assert child.data.metrics == {"eval/win_rate": 0.5, "train/loss": 1.5}
    assert child.info.status == "FINISHED"
    assert parent.info.status == "RUNNING"


def test_the_experiment_is_created_once_with_its_artifacts_beside_the_store(store: str) -> None:
    client = MlflowClient(store)
    spec = _spec(store)
    created = experiment_id(client, spec)
    assert experiment_id(client, spec) == created
    assert len([e for e in client.search_experiments() if e.name == spec.name]) == 1
    folder = Path(store.removeprefix("sqlite:///")).parent / "mlartifacts" / spec.name
    assert client.get_experiment(created).artifact_location == folder.as_uri()


def test_writes_are_sent_in_order_children_under_their_parent(store: str) -> None:
    outbox = Outbox(store, _experiment(store))
    _sweep(outbox)
    assert outbox.flush() is True
    assert outbox.pending == [] and outbox.refused == [] and outbox.unsent() == []
    assert list(outbox.run_ids) == ["parent", "t1"]
    _check_sent(outbox.client, outbox.run_ids)
    # Nothing queued: a flush sends nothing and says so.
    assert outbox.flush() is True


def test_a_run_that_exists_on_the_server_is_reused_not_duplicated(store: str) -> None:
    experiment = _experiment(store)
    first = Outbox(store, experiment)
    _sweep(first)
    assert first.flush()
    # A resumed sweep whose saved state predates the runs: it queues them again.
    resumed = Outbox(store, experiment)
    _sweep(resumed)
    resumed.put(
        "create_run",
        "t2",
        parent="parent",
        name="iql t2",
        tags={EXPERIMENT_TAG: SWEEP, TRIAL_TAG: "t2"},
    )
    assert resumed.flush()
    assert resumed.run_ids["parent"] == first.run_ids["parent"]
    assert resumed.run_ids["t1"] == first.run_ids["t1"]
    # A trial the first never created gets its own run, under the same parent.
    assert resumed.run_ids["t2"] not in first.run_ids.values()
    runs = first.client.search_runs([experiment])
    assert len(runs) == 3
    t2 = first.client.get_run(resumed.run_ids["t2"])
    assert t2.data.tags["mlflow.parentRunId"] == first.run_ids["parent"]
    # Metrics logged twice with the same step and timestamp: MLflow keeps one history.
    history = first.client.get_metric_history(first.run_ids["t1"], "eval/win_rate")
    assert {(m.step, m.value) for m in history} == {(20, 0.25), (40, 0.5)}


def test_a_sweep_s_runs_are_found_again_whatever_quote_its_folder_has(store: str) -> None:
    client = MlflowClient(store)
    experiment = _experiment(store)
    locations = ["/runs/plain/tiny", "/home/o'brien/ray/tiny", '/runs/say "hi"/tiny']
    created = {
        location: client.create_run(experiment, tags={EXPERIMENT_TAG: location}).info.run_id
        for location in locations
    }
    for location, run_id in created.items():
        found = client.search_runs([experiment], filter_string=sweep_runs_filter(location))
        assert [run.info.run_id for run in found] == [run_id]
    with pytest.raises(ValueError, match="both kinds of quote"):
        sweep_runs_filter("""/runs/o'brien "x"/tiny""")


def test_a_write_the_server_refuses_is_kept_and_the_queue_goes_on(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(store, _experiment(store))
    outbox.put("create_run", "parent", name="tiny", tags={EXPERIMENT_TAG: SWEEP})
    outbox.put("log_batch", "parent", metrics=[], params={"lr": "0.1"})
    refused = [
        # A param logged again with another value.
        {"op": "log_batch", "key": "parent", "metrics": [], "params": {"lr": "0.2"}},
        # A metric name MLflow rejects.
        {"op": "log_batch", "key": "parent", "metrics": [["bad*name", 1.0, 1000, 0]]},
        # A run that was never created.
        {"op": "log_batch", "key": "nobody", "metrics": [["ok", 1.0, 1000, 0]]},
        # An op this outbox does not know.
        {"op": "rename_run", "key": "parent", "name": "x"},
    ]
    for write in refused:
        outbox.put(**write)
    outbox.put("log_batch", "parent", metrics=[["objective/best", 0.5, 1000, 3]])
    outbox.put("set_terminated", "parent", status="FINISHED")
    with caplog.at_level("ERROR", logger="poke_tune.tuning.track.store"):
        assert outbox.flush() is True
    assert outbox.pending == []
    assert outbox.refused == refused
    assert outbox.unsent() == refused
    assert len([r for r in caplog.records if "MLflow refused" in r.getMessage()]) == 4
    run = outbox.client.get_run(outbox.run_ids["parent"])
    assert run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"objective/best": 0.5}
    assert run.info.status == "FINISHED"


def test_a_down_server_keeps_every_write_in_order_for_a_later_flush(
    store: str, quick: None
) -> None:
    experiment = _experiment(store)
    down = Outbox(f"http://127.0.0.1:{free_port()}", experiment)
    queued = _sweep(down)
    started = time.monotonic()
    assert down.flush() is False
    assert time.monotonic() - started < 15
    assert down.pending == queued and down.refused == [] and down.run_ids == {}
    # While down, a flush does not try again before the retry interval.
    started = time.monotonic()
    assert down.flush() is False
    assert time.monotonic() - started < 0.5
    assert down.pending == queued
    # The saved queue, sent to a reachable store (as `send_unsent` does).
    up = Outbox(store, experiment)
    up.run_ids, up.pending = down.run_ids, down.pending
    assert up.flush(force=True) is True
    assert down.pending == [] and up.refused == []
    _check_sent(up.client, up.run_ids)


def test_an_outage_mid_sweep_delays_writes_until_the_server_is_back(
    store: str, quick: None
) -> None:
    outbox = Outbox(store, _experiment(store))
    outbox.put("create_run", "parent", name="tiny", tags={EXPERIMENT_TAG: SWEEP})
    assert outbox.flush()
    outbox.client = MlflowClient(f"http://127.0.0.1:{free_port()}")  # the server goes down
    queued = _sweep(outbox, "t7")[1:]  # the parent exists already
    assert outbox.flush(force=True) is False
    assert outbox.pending == queued and outbox.refused == []
    assert list(outbox.run_ids) == ["parent"]
    outbox.client = MlflowClient(store)  # and comes back
    assert outbox.flush() is False  # not before the retry interval ...
    assert outbox.flush(force=True) is True  # ... unless forced
    assert outbox.pending == [] and outbox.refused == []
    _check_sent(outbox.client, outbox.run_ids, "t7")


def test_check_reachable_sets_up_a_sqlite_store_under_its_lock(store: str) -> None:
    database = Path(store.removeprefix("sqlite:///"))
    assert database.parent.name == "nested" and database.exists()
    assert database.with_name("mlflow.db.lock").exists()
    check_reachable(store)  # and passes on it once set up


def test_an_unreachable_server_is_reported_without_its_password(quick: None) -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError) as raised:
        check_reachable(f"http://alice:pw-9f3k@127.0.0.1:{port}")
    assert time.monotonic() - started < 15
    message = str(raised.value)
    assert f"http://alice:***@127.0.0.1:{port} is unreachable" in message
    assert "9f3k" not in message
    # Nor in a traceback: the original error (which names the URI) is not chained.
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_track_sends_what_an_outage_kept_and_keeps_only_what_the_server_refuses(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from poke_tune.tuning.experiment import Experiment
    from poke_tune.tuning.track.tracking import send_unsent

    spec = _spec(store).model_copy(update={"storage_path": str(tmp_path)})
    experiment = Experiment(spec)
    outbox = Outbox(store, experiment_id(MlflowClient(store), spec))
    queued = _sweep(outbox)
    refused = {"op": "log_batch", "key": "t1", "metrics": [["bad*name", 1.0, 1000, 0]]}
    experiment.save_unsent({"run_ids": {}, "pending": [*queued, refused]})
    with caplog.at_level("ERROR", logger="poke_tune.tuning.track.tracking"):
        send_unsent(experiment)
    saved = experiment.read_unsent()
    assert saved is not None and saved["pending"] == [refused]
    _check_sent(MlflowClient(store), saved["run_ids"])
    assert any("1 writes were refused" in r.getMessage() for r in caplog.records)
    # Nothing is left once the refused write is dropped from the file by hand.
    experiment.save_unsent({"run_ids": saved["run_ids"], "pending": []})
    send_unsent(experiment)
    assert experiment.read_unsent() is None
