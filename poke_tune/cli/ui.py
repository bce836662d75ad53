"""`poke-tune ui`: the MLflow UI on a sweep's tracking store."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from poke_tune.cli.errors import stdout, user_errors

__all__ = ["ui"]


def ui(
    target: Annotated[
        str | None,
        typer.Argument(help="Experiment folder or spec file (default: the local SQLite store)."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Start the MLflow UI on the sweep's tracking store and print its runs page."""
    from poke_tune.tuning.tracking import experiment_url, mlflow_ui_command, ui_target

    with user_errors():
        uri, experiment = ui_target(target, tracking_uri)
    if uri.startswith(("http://", "https://")):  # a server already serves its own UI
        stdout.print(experiment_url(uri, experiment) if experiment else uri)
        return
    server = f"http://{host}:{port}"
    stdout.print(
        f"MLflow UI for {uri}: {experiment_url(server, experiment) if experiment else server}"
    )
    with subprocess.Popen(mlflow_ui_command(uri, host=host, port=port)) as process:
        try:
            process.wait()
        except KeyboardInterrupt:
            process.terminate()
