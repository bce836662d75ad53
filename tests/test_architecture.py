"""Layers import downward only (sim -> data -> algos -> eval -> tuning -> cli), Ray and
Optuna stay under tuning and MLflow under tuning/track, checked by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_downward_only() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "layers import downward only KEPT" in result.stdout
    assert "Ray, Optuna and MLflow only under poke_tune.tuning KEPT" in result.stdout
    # Inside tuning/ and cli/: stages and command modules in layers, so no circles.
    assert "tuning: life cycle over tracking over the stages over the spine KEPT" in result.stdout
    for package in ("search", "confirm", "track"):
        assert f"tuning.{package}: " in result.stdout
    assert "tuning.loop: run over stages over folder | report over plan KEPT" in result.stdout
    assert "cli: main registers command modules" in result.stdout
    # track/ is the one MLflow writer: the loop's runs are logged there too.
    assert "MLflow only in tuning.track and the policy resolver KEPT" in result.stdout


def test_stage_packages_load_no_ray_until_a_module_is_imported() -> None:
    # `tuning.search` names Ray's users but must not load Ray: reading a spec, `validate`
    # and `best` import the packages.
    code = (
        "import sys, poke_tune.tuning.search, poke_tune.tuning.confirm, poke_tune.tuning.track"
        ", poke_tune.tuning.loop, poke_tune.tuning.spec_file"
        "; print(sorted({'ray', 'mlflow'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
