"""`poke-tune submit` and `poke-tune jobs`: sweeps as Ray Jobs on an existing cluster.

Exit status: 0 on success; 1 when a followed job ends FAILED or STOPPED (the message has
its status and last log lines); 2 on bad input, an unreachable or refusing cluster, or a
spec the cluster cannot run (e.g. local storage on a multi-node cluster), mapped in
`poke_tune.cli.errors`; 130 when following is interrupted (the job keeps running).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from poke_tune.cli.errors import console, stdout, user_errors

__all__ = ["jobs_app", "submit"]

jobs_app = typer.Typer(help="List, inspect, follow and stop Ray Jobs.", no_args_is_help=True)

Address = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="RAY_API_SERVER_ADDRESS",
        help="Ray dashboard of the cluster, http(s)://HOST:PORT (port 8265 by default).",
    ),
]


def _write(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--env {pair!r}: expected NAME=VALUE, e.g. --env AWS_REGION=eu-1")
        env[key] = value
    return env


def _follow(client: Any, job_id: str) -> None:
    from poke_tune.tuning.submit import follow

    try:
        status = follow(client, job_id, _write)
    except KeyboardInterrupt:
        console.print(
            f"stopped following; job {job_id} keeps running "
            f"(poke-tune jobs stop {job_id} stops it)"
        )
        raise typer.Exit(130) from None
    console.print(f"job {job_id} {status.value}")


def submit(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML (inside the project folder).")],
    address: Address,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the logs; exit with the job's status.")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE spec override, repeatable.")
    ] = None,
    num_samples: Annotated[int | None, typer.Option(min=1)] = None,
    steps: Annotated[int | None, typer.Option(min=1)] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="NAME=VALUE for the job, repeatable.")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow server the cluster reports to (MLFLOW_TRACKING_URI)."),
    ] = None,
    working_dir: Annotated[
        Path | None,
        typer.Option(help="Folder uploaded as the job's working directory (default: project)."),
    ] = None,
    package: Annotated[
        str | None,
        typer.Option(
            help="Install this pip requirement on the cluster instead of uploading "
            "the project, e.g. poke-tune==0.1.0."
        ),
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            help="Validate the spec here first (--no-validate when its dataset "
            "exists only on the cluster)."
        ),
    ] = True,
) -> None:
    """Submit a sweep to a Ray cluster as a Ray Job running `poke-tune run SPEC`."""
    from poke_tune.tuning.spec_file import load_spec, parse_overrides
    from poke_tune.tuning.submit import (
        alive_nodes,
        check_submission,
        connect,
        dashboard_url,
        declared_storage,
        job_request,
        temporary_staging,
    )
    from poke_tune.tuning.submit import submit as submit_job

    with user_errors(), temporary_staging() as staging:
        url = dashboard_url(address)
        variables = _env_pairs(env or [])
        if tracking_uri is not None:
            variables["MLFLOW_TRACKING_URI"] = tracking_uri
        values = parse_overrides(overrides or [], num_samples=num_samples, training__steps=steps)
        if validate:
            loaded = load_spec(spec, values)
            name = loaded.name
        else:
            raw = yaml.safe_load(spec.read_text()) if spec.is_file() else None
            if not isinstance(raw, dict):
                raise FileNotFoundError(f"{spec}: not a spec file")
            name = str(raw.get("name", spec.stem))
        client = connect(url)
        if validate:
            check_submission(
                loaded, declared=declared_storage(spec, values), nodes=alive_nodes(url)
            )
        request = job_request(
            spec,
            name=name,
            sets=overrides or [],
            num_samples=num_samples,
            steps=steps,
            env=variables,
            working_dir=working_dir,
            package=package,
            staging=Path(staging),
        )
        job_id = submit_job(client, request)
        stdout.print(job_id)
        console.print(
            f"submitted {name} as job {job_id}: {request.entrypoint}\n"
            f"  logs:   poke-tune jobs logs {job_id} --address {url} --follow\n"
            f"  web:    {url}/#/jobs/{job_id}"
        )
        if follow:
            _follow(client, job_id)


@jobs_app.command("list")
def jobs_list(address: Address) -> None:
    """All jobs of the cluster with their status."""
    from poke_tune.tuning.submit import connect, list_jobs

    with user_errors():
        jobs = list_jobs(connect(address))
    table = Table(title=f"{len(jobs)} jobs")
    table.add_column("job", no_wrap=True, min_width=len("raysubmit_") + 16)
    for column in ("status", "sweep", "started", "entrypoint"):
        table.add_column(column)
    for job in jobs:
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000))
            if job.start_time
            else ""
        )
        table.add_row(
            job.submission_id or job.job_id or "",
            str(job.status),
            (job.metadata or {}).get("poke_tune_sweep", ""),
            started,
            job.entrypoint,
        )
    stdout.print(table)


@jobs_app.command("status")
def jobs_status(
    job_id: Annotated[str, typer.Argument(help="Submission id (raysubmit_...).")],
    address: Address,
) -> None:
    """Status of one job, with Ray's message about it."""
    from poke_tune.tuning.submit import connect, job_info

    with user_errors():
        info = job_info(connect(address), job_id)
    stdout.print(f"{job_id}: {info.status}", highlight=False)
    if info.message:
        stdout.print(info.message, markup=False, highlight=False)


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(help="Submission id (raysubmit_...).")],
    address: Address,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends; exit by status.")
    ] = False,
) -> None:
    """The job's driver output so far (or streamed to the end with --follow)."""
    from poke_tune.tuning.submit import connect, job_logs

    with user_errors():
        client = connect(address)
        if follow:
            _follow(client, job_id)
        else:
            _write(job_logs(client, job_id))


@jobs_app.command("stop")
def jobs_stop(
    job_id: Annotated[str, typer.Argument(help="Submission id (raysubmit_...).")],
    address: Address,
) -> None:
    """Stop a running job (its trials are stopped; finished results stay in storage)."""
    from poke_tune.tuning.submit import connect, stop_job

    with user_errors():
        stopped = stop_job(connect(address), job_id)
    stdout.print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")
