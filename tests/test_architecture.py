"""Layers import downward only (sim -> data -> algos -> eval -> tuning -> cli) and Ray and
Optuna stay under tuning, checked by import-linter."""

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
    assert "tuning: life cycle over stages over records, no circles KEPT" in result.stdout
    assert "cli: main registers command modules" in result.stdout
