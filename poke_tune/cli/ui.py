"""`poke-tune ui`: the MLflow UI on a sweep's tracking store.

Exit status: 0 when the server is stopped (Ctrl-C, SIGTERM, SIGHUP: the server and its
workers stop with it); 2 when the port is taken or the target is unknown, before any URL
is printed; 1 when the MLflow server itself fails.
"""

from __future__ import annotations

from typing import Annotated

import typer

from poke_tune.cli.errors import print_error, stdout, user_errors

__all__ = ["ui"]


def ui(
    target: Annotated[
        str | None,
        typer.Argument(help="Experiment folder or spec file (default: the local SQLite store)."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="MLflow server workers (default: 1 on up to 4 CPUs, else 2)."),
    ] = None,
) -> None:
    """Start the MLflow UI on the sweep's tracking store and print its runs page and the
    comparison of the sweep's trials."""
    from poke_tune.tuning.track.ui import (
        check_port_free,
        compare_url,
        default_workers,
        experiment_url,
        mlflow_ui_command,
        serve,
        ui_target,
    )

    with user_errors():
        found = ui_target(target, tracking_uri)
        remote = found.tracking_uri.startswith(("http://", "https://"))
        if not remote:
            check_port_free(host, port)
    server = found.tracking_uri if remote else f"http://{host}:{port}"
    if found.experiment_id is None:
        stdout.print(server if remote else f"MLflow UI for {found.tracking_uri}: {server}")
    else:
        runs = experiment_url(server, found.experiment_id)
        stdout.print(runs if remote else f"MLflow UI for {found.tracking_uri}: {runs}")
        if found.child_run_ids:
            compare = compare_url(server, found.experiment_id, found.child_run_ids)
            stdout.print(f"compare the {len(found.child_run_ids)} trials: {compare}")
    if remote:  # a server already serves its own UI
        return
    status = serve(
        mlflow_ui_command(
            found.tracking_uri, host=host, port=port, workers=workers or default_workers()
        )
    )
    if status != 0:
        print_error(f"the MLflow server exited with status {status}")
        raise typer.Exit(1)
