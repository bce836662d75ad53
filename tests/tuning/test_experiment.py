"""The experiment folder's records, locks and refusals, and the cluster fit check (no Ray,
no battles: the fast lane)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poke_tune.tuning.experiment import Experiment, SweepLockedError
from poke_tune.tuning.records import SweepRecord
from poke_tune.tuning.redaction import redact
from poke_tune.tuning.search.cluster import fit_problem
from poke_tune.tuning.spec_file import load_spec
from poke_tune.tuning.sweep import SweepExistsError, run_sweep

TINY = Path(__file__).with_name("tiny.yaml")


def test_credentials_are_redacted_from_uris_and_command_lines() -> None:
    assert redact("http://alice:pw@host:5000") == "http://alice:***@host:5000"
    assert redact("poke-tune run x.yaml --tracking-uri https://bob:s%40cret@mlflow.io/") == (
        "poke-tune run x.yaml --tracking-uri https://bob:***@mlflow.io/"
    )
    assert redact("s3://bucket/p?access_key=AKIA123&scheme=http") == (
        "s3://bucket/p?access_key=***&scheme=http"
    )
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_the_experiment_folder_keeps_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "http://alice:hunter2@127.0.0.1:5999"
    spec = load_spec(TINY, {"storage_path": str(tmp_path), "mlflow": {"tracking_uri": secret}})
    Experiment(spec).start(SweepRecord(argv=["poke-tune", "run", "--tracking-uri", secret]))
    for path in (tmp_path / "tiny").iterdir():
        assert "hunter2" not in path.read_text()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="set MLFLOW_TRACKING_URI"):
        Experiment.open(tmp_path / "tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret)
    assert Experiment.open(tmp_path / "tiny").spec.mlflow.tracking_uri == secret


def test_one_process_at_a_time_works_on_a_sweep(tmp_path: Path) -> None:
    experiment = Experiment(load_spec(TINY, {"storage_path": str(tmp_path)}))
    with (
        experiment.lock(),
        pytest.raises(SweepLockedError, match="is in use by another process"),
        experiment.lock(),
    ):
        pass
    with experiment.lock():  # released on exit
        pass


def test_a_second_run_of_a_name_points_at_resume(tmp_path: Path) -> None:
    spec = load_spec(TINY, {"storage_path": str(tmp_path), "mlflow": {"enabled": False}})
    Experiment(spec).start(SweepRecord(stage="interrupted"))
    with pytest.raises(SweepExistsError, match=r"poke-tune resume .*tiny.*--set name="):
        run_sweep(spec)
    assert json.loads((tmp_path / "tiny" / "poke_tune_run.json").read_text())["stage"] == (
        "interrupted"
    )


def test_a_trial_no_node_can_hold_is_refused_with_what_to_change() -> None:
    laptop = [{"CPU": 2.0}]
    assert fit_problem(1, 0, laptop) is None
    problem = fit_problem(1, 0.3, laptop)
    assert problem is not None and "resources.gpu: 0" in problem and "0 GPU" in problem
    assert fit_problem(4, 0, laptop) is not None
    assert fit_problem(1, 0.25, [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}]) is None


@pytest.mark.slow  # two MLflow imports and schema creations: about a minute
def test_two_processes_can_set_up_one_new_sqlite_store_together(tmp_path: Path) -> None:
    import subprocess
    import sys

    for attempt in range(2):
        uri = f"sqlite:///{tmp_path / f'mlflow{attempt}.db'}"
        script = (
            "from poke_tune.tuning.track.store import check_reachable; "
            f"check_reachable({uri!r}); print('ok')"
        )
        starts = [
            subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=120)[0] for p in starts]
        assert [p.returncode for p in starts] == [0, 0] and outputs == ["ok\n", "ok\n"]
