"""The tuning service on a real local Ray instance: a whole sweep with Optuna and ASHA,
fractional GPU packing, trial crash recovery, and driver interrupt + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from poke_tune.algos import load_policy
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.search.search import trial_rows
from poke_tune.tuning.search.trainable import CHECKPOINT_FILE
from poke_tune.tuning.search.tuner import checkpoint_config
from poke_tune.tuning.spec import OBJECTIVE_KEY, SCORE_KEY, SearchSpec
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.sweep import run_sweep

TINY = Path(__file__).with_name("tiny.yaml")
POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # One logical GPU on a CPU machine: Tune packs gpu: 0.25 trials as on a real one.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def _spec(tmp_path: Path, **overrides: Any) -> SearchSpec:
    # MLflow has its own tests (test_tracking.py); these sweeps test Tune's side.
    defaults = {
        "storage_path": str(tmp_path / "ray"),
        "mlflow": {"enabled": False},
        "confirm": {"enabled": False},
    }
    return load_spec(TINY, {**defaults, **overrides})


def test_sweep_with_optuna_and_asha_finds_a_loadable_winner(
    local_ray: None, tmp_path: Path
) -> None:
    optuna_db = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = _spec(
        tmp_path,
        searcher={
            "algorithm": "tpe",
            "seed": 0,
            "warm_start": [{"expectile": 0.7, "temperature": 3.0}],
            "storage": optuna_db,
        },
        confirm={"enabled": True, "battles": 12, "rounds": 1, "top_k": 2},
    )

    class CountResults(tune.Callback):
        def __init__(self) -> None:
            self.results = 0

        def on_trial_result(self, *args: Any, **kwargs: Any) -> None:
            self.results += 1

    counter = CountResults()
    outcome = run_sweep(spec, callbacks=[counter])
    rows = outcome.rows
    assert len(rows) == 4
    # Extra callbacks see every result: here each trial's results reach the same count.
    assert counter.results == sum(r.metrics["training_iteration"] for r in outcome.results)
    # The study lives in the RDB storage too, where optuna-dashboard can watch it.
    study = optuna.load_study(study_name="tiny", storage=optuna_db)
    assert len(study.trials) == 4
    assert {r.status for r in rows} <= {"completed", "early-stopped"}
    # Optuna's warm start (the official IQL defaults) was tried, the rest were sampled.
    points = {(r.params["expectile"], r.params["temperature"]) for r in rows}
    assert (0.7, 3.0) in points and len(points) == 4
    best = outcome.selected
    assert best is not None and best.checkpoint is not None and best.checkpoint.is_file()
    # MLflow is off, yet stage 4 left the whole report in the experiment folder.
    assert outcome.confirmation is not None and outcome.tracking is None
    report = tmp_path / "ray" / "tiny" / "report"
    assert outcome.report == report
    assert (report / "trials.csv").read_text().count("\n") == 1 + len(rows)
    assert {"optimization_history.png", "objective_vs_params.png"} <= {
        p.name for p in (report / "plots").iterdir()
    }
    tables = report / "confirmation"
    assert {"confirmation.md", "confirmation.csv", "win_rates.png"} <= {
        p.name for p in tables.iterdir()
    }
    assert (tables / "expected_best_vs_trials.png").stat().st_size > 0
    assert "fresh battles" in (tables / "confirmation.md").read_text()
    result = evaluate(load_policy(best.checkpoint), make_policy("random"), battles=4)
    assert result.battles == 4 and result.invalid_choices == 0


def test_quarter_gpus_pack_four_trials_at_once(local_ray: None, tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        name="packing",
        objective={"metric": "offline/action_match", "mode": "max"},
        training={"steps": 1500, "eval_interval": 1500, "batch_size": 64, "fqe_steps": 0},
        resources={"cpu": 0.25, "gpu": 0.25},
        max_concurrent_trials=4,
        scheduler={"type": "fifo"},
    )
    before = signal.getsignal(signal.SIGINT)
    results = run_sweep(spec).results
    # Tune's SIGINT handler is gone after the sweep: the next Ctrl-C is the caller's again.
    assert signal.getsignal(signal.SIGINT) is before
    assert results is not None
    frame = results.get_dataframe()
    assert len(frame) == 4
    assert set(frame["device"]) == {"cpu"}  # no CUDA here: the trials fall back to CPU
    ends = frame["timestamp"]
    starts = ends - frame["time_total_s"]
    assert starts.max() < ends.min(), "the four trials did not all run at the same time"


def _running_trial_pid(experiment: Path) -> int | None:
    """The worker pid of a trial that has saved a checkpoint and is still training.

    Trials report their own pid: picking any `ray::ImplicitFunc` process could hit a
    worker whose trial has already finished."""
    for checkpoint in experiment.glob("*/checkpoint_000001"):
        try:
            last = json.loads((checkpoint.parent / "result.json").read_text().splitlines()[-1])
        except (OSError, IndexError, json.JSONDecodeError):  # not written yet, or mid-write
            continue
        if last["status"] == "running" and last["restored_from_step"] == 0:
            return int(last["worker_pid"])
    return None


def test_killed_trial_resumes_from_its_checkpoint(local_ray: None, tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        name="crash",
        num_samples=2,
        objective={"metric": "offline/action_match", "mode": "max"},
        training={"steps": 1200, "eval_interval": 200, "batch_size": 64, "fqe_steps": 0},
        scheduler={"type": "fifo"},
    )
    experiment = Path(spec.storage_path) / spec.name

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pid = _running_trial_pid(experiment)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    outcome = run_sweep(spec)
    killer.join()
    rows, results = outcome.rows, outcome.results
    assert [r.status for r in rows] == ["completed", "completed"]
    assert results is not None
    frame = results.get_dataframe()
    assert (frame["restored_from_step"] > 0).any(), "no trial was restored from a checkpoint"
    assert (frame["step"] == 1200).all()


def test_interrupted_driver_resumes_with_the_optuna_history(tmp_path: Path) -> None:
    storage = tmp_path / "ray"
    run = [
        POKE_TUNE,
        "run",
        str(TINY),
        "--set",
        f"storage_path={storage}",
        "--set",
        "num_samples=6",
        "--set",
        "name=resumable",
    ]
    experiment = storage / "resumable"
    driver = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(experiment.glob("*/result.json"))) < 2:
        time.sleep(0.5)
    time.sleep(2)
    driver.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
    interrupted = driver.communicate(timeout=120)[0].decode()
    # An interrupted sweep says so, exits as Ctrl-C does, and publishes nothing.
    assert driver.returncode == 130, interrupted[-3000:]
    assert f"poke-tune resume {experiment}" in interrupted
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_registered_models() == []
    parent = client.search_runs(
        [client.get_experiment_by_name("resumable").experiment_id],
        filter_string="tags.sweep_status = 'interrupted'",
    )
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    # Its name is taken: a second `run` points at `resume` instead of merging into it.
    again = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "poke-tune resume" in again.stderr

    resumed = subprocess.run(
        [POKE_TUNE, "resume", str(experiment)], capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumable: 6 trials" in resumed.stdout
    assert "confirmation: 24 fresh battles" in resumed.stdout
    invocation = json.loads((experiment / "poke_tune_run.json").read_text())
    assert "num_samples=6" in invocation["overrides"]  # overrides are recorded with the run
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(experiment))
    trials = searcher._ot_study.trials
    assert len(trials) == 6
    assert all(t.state.name == "COMPLETE" for t in trials)
    # MLflow logging continued in the same parent run: one child per trial, no duplicates.
    runs = client.search_runs([client.get_experiment_by_name("resumable").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["status"] for r in children} <= {"completed", "early-stopped"}
    # The finished sweep registered its champion once; `track` does not register it again.
    versions = client.search_model_versions("name = 'poke-tune-resumable'")
    assert len(versions) == 1
    tracked = subprocess.run(
        [POKE_TUNE, "track", str(experiment)], capture_output=True, text=True, timeout=300
    )
    assert tracked.returncode == 0, tracked.stdout + tracked.stderr
    assert len(client.search_model_versions("name = 'poke-tune-resumable'")) == 1
    # `best` reads the folder back (no Ray instance) and prints the saved confirmation.
    best = subprocess.run(
        [POKE_TUNE, "best", str(experiment)], capture_output=True, text=True, timeout=120
    )
    assert best.returncode == 0, best.stdout + best.stderr
    assert "confirmation: 24 fresh battles" in best.stdout
    assert "budget: expected confirmation win rate" in best.stdout
    assert "Ray instance" not in best.stdout + best.stderr
    # `confirm` plays the stage again on more battles: a new report, the champion's version
    # found again, the registered numbers those of the new confirmation.
    again = subprocess.run(
        [POKE_TUNE, "confirm", str(experiment), "--battles", "40", "--top-k", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "confirmation: 40 fresh battles" in again.stdout
    saved = json.loads((experiment / "poke_tune_confirmation.json").read_text())
    assert saved["battles"] == 40
    assert len([s for s in saved["standings"] if s["role"] == "candidate"]) == 2
    versions = client.search_model_versions("name = 'poke-tune-resumable'")
    winner = next(s for s in saved["standings"] if s["name"] == saved["champion"])
    registered = [v for v in versions if v.tags.get("confirm.battles") == "40"]
    assert len(registered) == 1 and registered[0].tags["poke_tune.trial_id"] == winner["trial_id"]


def test_a_diverged_trial_is_marked_and_the_sweep_goes_on(local_ray: None, tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw |= {
        "name": "diverging",
        "storage_path": str(tmp_path / "ray"),
        "algorithm": {"algo": "cql", "network": {"hidden_sizes": [32]}},
        "search_space": {"learning_rate": {"type": "categorical", "choices": [3e-4, 1e9]}},
        "searcher": {"algorithm": "grid", "seed": 0},
        "objective": {"metric": "offline/action_match", "mode": "max"},
        "scheduler": {"type": "fifo"},
        "num_samples": 2,
    }
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    rows = {r.params["learning_rate"]: r for r in run_sweep(spec).rows}
    assert rows[1e9].status == "diverged"  # a learning rate of 1e9 makes Q NaN
    assert rows[1e9].score == -1e6
    assert rows[3e-4].status == "completed"


def test_the_peak_checkpoint_is_kept(local_ray: None, tmp_path: Path) -> None:
    # Defined here so that cloudpickle ships it to the trial (test modules do not import).
    def _peaking_trial(config: dict[str, Any]) -> None:
        """Reports like the real trainable: a win rate that peaks at evaluation 2, then falls."""
        best = 0.0
        for evaluation, value in enumerate([0.3, 0.6, 0.4, 0.35], 1):
            best = max(best, value)
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / CHECKPOINT_FILE).write_text(str(evaluation))
                tune.report(
                    {OBJECTIVE_KEY: best, SCORE_KEY: value},
                    checkpoint=tune.Checkpoint.from_directory(folder),
                )

    spec = _spec(tmp_path, checkpoint={"every": 1, "keep": 1})
    tuner = tune.Tuner(
        _peaking_trial,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            name="peak",
            storage_path=str(tmp_path),
            checkpoint_config=checkpoint_config(spec.checkpoint, spec.objective),
        ),
    )
    [row] = trial_rows(tuner.fit(), spec.objective)
    assert row.score == 0.6
    assert row.checkpoint is not None and row.checkpoint.read_text() == "2"


def test_a_sweep_without_any_objective_exits_nonzero(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw |= {
        "name": "all-diverge",
        "storage_path": str(tmp_path / "ray"),
        "algorithm": {"algo": "cql", "network": {"hidden_sizes": [32]}},
        "search_space": {"learning_rate": {"type": "categorical", "choices": [1e9]}},
        "searcher": {"algorithm": "grid", "seed": 0},
        "objective": {"metric": "offline/action_match", "mode": "max"},
        "scheduler": {"type": "fifo"},
        "num_samples": 1,
        "mlflow": {"enabled": False},
    }
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [POKE_TUNE, "run", str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no trial produced an objective" in done.stderr


_LISTENING = """
import os, socket, struct, ray
from pathlib import Path
from poke_tune.tuning.search.cluster import init_ray
init_ray(None)
ray.get(ray.remote(lambda: 1).remote())  # a worker is up too
group = os.getpgrp()  # Ray's processes are in this session's process group
inodes = set()
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != group:
            continue
        for fd in (stat.parent / "fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        continue
found = set()
for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
    for line in Path("/proc/net", table).read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            hexed = fields[1].split(":")[0]  # 32-bit words, each printed in host order
            words = [int(hexed[i : i + 8], 16) for i in range(0, len(hexed), 8)]
            packed = b"".join(struct.pack("<I", w) for w in words)
            found.add(socket.inet_ntop(family, packed))
print(sorted(found))
ray.shutdown()
"""


def test_a_local_ray_instance_listens_on_loopback_only() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LISTENING],
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    addresses = set(json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert addresses, "no listening sockets found"
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses


def test_a_trial_the_machine_can_never_fit_is_refused_before_the_tuner(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            POKE_TUNE,
            "run",
            str(TINY),
            "--set",
            f"storage_path={tmp_path}",
            "--set",
            "resources.gpu=0.3",
            "--set",
            "mlflow.enabled=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # Ray sees no GPU
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "resources.gpu: 0" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("tiny/train_trial_*"))  # no trial was created
