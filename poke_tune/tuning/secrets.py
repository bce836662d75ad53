"""Which environment variables hold credentials: the one list that a job submitted to a
cluster (`submit.withhold_secrets`) and a local Ray's trials (`cluster`) keep them out
of. No Ray here, so that anything may import it."""

from __future__ import annotations

import re

__all__ = ["SECRET_VARIABLES", "is_secret"]

SECRET_VARIABLES = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "DATABRICKS_TOKEN",
        "RAY_AUTH_TOKEN",
        "HF_TOKEN",
        "WANDB_API_KEY",
        "GITHUB_TOKEN",
        "PGPASSWORD",
    }
)
"""Never sent in a job's runtime environment: Ray shows job variables in the dashboard
and writes them to its runtime-env logs. Configure them on the nodes instead."""
_SECRET_NAME = re.compile(r"(^|_)(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|PRIVATE_KEY)(_|$)")


def is_secret(name: str) -> bool:
    """A variable named like a credential: `SECRET_VARIABLES`, or `*_SECRET*`,
    `*_PASSWORD`, `*_TOKEN`, `*_API_KEY`, ..."""
    return name.upper() in SECRET_VARIABLES or _SECRET_NAME.search(name.upper()) is not None
