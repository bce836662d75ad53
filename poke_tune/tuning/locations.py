"""Where a sweep's files and records live, made absolute once where the spec is read:
Ray trials run in their own working directories, and MLflow's and SQLite's defaults are
relative to the current folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["absolute_sqlite", "resolve_tracking_uri"]


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///relative.db` against the current folder (trials chdir)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def resolve_tracking_uri(uri: str | None, storage_path: str) -> str:
    """The absolute MLflow tracking URI of a sweep.

    `uri`, else MLFLOW_TRACKING_URI, else `sqlite:///<storage_path's parent>/mlflow.db`
    (`./runs/mlflow.db` for remote storage). Relative SQLite paths are made absolute:
    trials chdir, and MLflow's own default is relative to the current folder.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        base = Path(storage_path).parent if "://" not in storage_path else Path("runs")
        return f"sqlite:///{(Path.cwd() / base / 'mlflow.db').resolve()}"
    if "://" not in uri:  # a plain folder: MLflow's file store
        return str((Path.cwd() / uri).resolve())
    return absolute_sqlite(uri)
