"""Memory running out during a search ends in one `error: ...` line and exit 1, never Ray's
traceback (issue 18): Tune's controller dies with `RuntimeError: Caught unexpected
exception: ...` when Ray's memory monitor kills a trial's worker in the middle of one of
Tune's actor tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from ray import tune
from ray.exceptions import OutOfMemoryError
from typer.testing import CliRunner

from poke_tune.cli.main import app
from poke_tune.tuning.search import cluster
from poke_tune.tuning.search.cluster import MemoryExhaustedError
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).parents[1] / "tuning" / "tiny.yaml"
POKE_TUNE = str(Path(sys.executable).with_name("poke-tune"))
RAY_OOM = (
    "1 worker(s) were killed due to the node running low on memory. Memory on the node "
    "(IP: 127.0.0.1, ID: 9dbf0e49) was 2.45GB used / 23.54GB limit (0.104289)\n"
    "OOM kill reason: Memory usage 2635882496B exceeded threshold of 252760720B"
)


def _ray_oom() -> OutOfMemoryError:
    return OutOfMemoryError(RAY_OOM)  # type: ignore[no-untyped-call]  # Ray's own type


def _tune_runtime_error() -> None:
    # What Tune's actor manager raises for an actor task that failed with neither a
    # RayActorError nor a RayTaskError (ray/air/execution/_internal/actor_manager.py).
    oom = _ray_oom()
    raise RuntimeError(f"Caught unexpected exception: {oom}") from oom


class _Tuner:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def fit(self) -> tune.ResultGrid:
        if self.error is not None:
            raise self.error
        _tune_runtime_error()
        raise AssertionError("unreachable")


def _fit(tuner: _Tuner, spec: SearchSpec) -> tune.ResultGrid:
    return cluster.fit(cast(tune.Tuner, tuner), spec)


def _spec(tmp_path: Path) -> SearchSpec:
    return load_spec(TINY, {"storage_path": str(tmp_path / "ray"), "mlflow": {"enabled": False}})


@pytest.mark.parametrize(
    "error",
    [None, _ray_oom(), RuntimeError(f"Caught unexpected exception: {RAY_OOM}")],
    ids=["tune-wrapped", "ray-oom", "text-only"],
)
def test_fit_turns_memory_running_out_into_one_typed_error(
    tmp_path: Path, error: BaseException | None
) -> None:
    with pytest.raises(MemoryExhaustedError) as raised:
        _fit(_Tuner(error), _spec(tmp_path))
    message = str(raised.value)
    assert "\n" not in message
    for hint in ("max_concurrent_trials", "resources.cpu", "training.batch_size"):
        assert hint in message
    assert f"poke-tune resume {tmp_path / 'ray' / 'tiny'}" in message


def test_other_failures_of_fit_are_left_alone(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="something else") as raised:
        _fit(_Tuner(RuntimeError("Caught unexpected exception: something else")), _spec(tmp_path))
    assert not isinstance(raised.value, MemoryExhaustedError)


def test_run_prints_one_line_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The boundary: the search's own `_fit` with a Tuner that fails as Ray's does.
    def run_sweep(spec: SearchSpec, **_: Any) -> None:
        _fit(_Tuner(), spec)

    monkeypatch.setattr("poke_tune.tuning.sweep.run_sweep", run_sweep)
    result = CliRunner().invoke(
        app,
        ["run", str(TINY), "--set", f"storage_path={tmp_path / 'ray'}", "--set", "name=oom"],
    )
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the machine ran out of memory")
    assert "Traceback" not in result.stderr and "Caught unexpected" not in result.stderr
    assert f"poke-tune resume {tmp_path / 'ray' / 'oom'}" in lines[0]


@pytest.mark.slow
def test_a_sweep_under_a_memory_monitor_that_kills_every_worker_ends_cleanly(
    tmp_path: Path,
) -> None:
    # Ray's memory monitor kills any worker above 1% of memory: every trial fails.
    env = {
        **os.environ,
        "RAY_memory_usage_threshold": "0.01",
        "RAY_memory_monitor_refresh_ms": "50",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    storage = tmp_path / "ray"
    command = [POKE_TUNE, "run", str(TINY), "--num-samples", "1", "--steps", "20"]
    for pair in (f"storage_path={storage}", "name=oom", "mlflow.enabled=false"):
        command += ["--set", pair]
    command += ["--set", "confirm.enabled=false"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    # Tune logs each failed trial's traceback as it goes; what must not happen is the
    # driver dying with one: the sweep's last word is one of its own lines.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("no trial produced an objective", "error: the machine ran out")), (
        result.stderr[-3000:]
    )
    assert tune.Tuner.can_restore(str(storage / "oom"))  # `poke-tune resume` has its state
