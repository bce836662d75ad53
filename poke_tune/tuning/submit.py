"""Run a sweep on an existing Ray cluster as a Ray Job, through the dashboard's Jobs API.

The job's entrypoint is `poke-tune run SPEC ...` on the cluster. Its runtime environment
carries the code either as a working directory (the project folder, uploaded without
virtual environments, caches and experiment outputs; the default) or as a pinned pip
package (`package`, e.g. `poke-tune==0.1.0`; then only the spec file is uploaded), plus
environment variables such as MLFLOW_TRACKING_URI. A cluster with token authentication
gets the token from RAY_AUTH_TOKEN as an `Authorization: Bearer` header.

Everything here goes through `ray.job_submission.JobSubmissionClient` and Ray's state API;
errors that a user can fix (bad address, unreachable cluster, failed job) are
`ClusterError`s whose message says what happened and what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient
from ray.util.state import StateApiClient
from ray.util.state.common import ListApiOptions, StateResource

from poke_tune.tuning.experiment import storage_problem
from poke_tune.tuning.secrets import SECRET_VARIABLES, is_secret
from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "EXCLUDES",
    "SECRET_VARIABLES",
    "ClusterError",
    "JobFailedError",
    "JobRequest",
    "alive_nodes",
    "auth_headers",
    "check_submission",
    "connect",
    "dashboard_url",
    "declared_storage",
    "follow",
    "job_info",
    "job_logs",
    "job_request",
    "list_jobs",
    "outcome",
    "stop_job",
    "submit",
    "withhold_secrets",
]

DASHBOARD_PORT = 8265
CONNECT_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 30
EXCLUDES = [
    ".git/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".pytest_cache/",
    ".import_linter_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
    "/runs/",
    "/mlruns/",
    "mlflow.db",
    "/test-artifacts/",
]
"""Never uploaded with the working directory (on top of .gitignore and .rayignore)."""
_T = TypeVar("_T")
_logger = logging.getLogger(__name__)
for _name in ("ray.dashboard.modules.job.sdk", "ray._private.runtime_env.packaging"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # per-file upload and socket chatter
_ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


class ClusterError(RuntimeError):
    """The cluster cannot be used as asked; the message says why and what to do."""


class JobFailedError(ClusterError):
    """A job ended FAILED or STOPPED; the message has its status and last log lines."""

    def __init__(self, job_id: str, status: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status


def dashboard_url(address: str) -> str:
    """Validate a dashboard address `http(s)://HOST:PORT` and return it without a slash."""
    hint = (
        f"expected the Ray dashboard address http(s)://HOST:PORT, e.g. "
        f"http://head-node:{DASHBOARD_PORT} (Ray Jobs are submitted through the dashboard, "
        f"port {DASHBOARD_PORT} by default)"
    )
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError as error:
        raise ClusterError(f"address {address!r}: {error}; {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClusterError(f"address {address!r}: {hint}")
    if port is None:
        raise ClusterError(f"address {address!r} has no port; {hint}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ClusterError(f"address {address!r} has a path; {hint}")
    return f"{parts.scheme}://{parts.netloc}"


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer $RAY_AUTH_TOKEN` when the variable is set (token auth)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def _explicit_address() -> Iterator[None]:
    """Ray's clients let RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address they are
    given; hide them so the address the user passed is the one used."""
    saved = {name: os.environ.pop(name) for name in _ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _probe(url: str, timeout_s: float) -> None:
    """Fail fast (refused, unknown host, timeout) before Ray's client, which has no timeout."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else str(error)
        raise ClusterError(
            f"cannot reach the Ray dashboard at {url} ({reason}). Is the cluster up, and "
            "was its head started with --dashboard-host set to an address you can reach "
            f"(and --dashboard-port {parts.port})?"
        ) from None


def connect(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> JobSubmissionClient:
    """A Jobs API client for the cluster whose dashboard is at `address`."""
    url = dashboard_url(address)
    _probe(url, timeout_s)
    try:
        with _explicit_address():
            return JobSubmissionClient(url, headers=auth_headers() or None)
    except ConnectionError as error:
        raise ClusterError(f"cannot connect to the Ray Jobs API at {url}: {error}") from None
    except Exception as error:  # Ray's AuthenticationError, a version mismatch, HTTP errors
        raise ClusterError(_explain(url, error)) from None


def _explain(url: str, error: Exception) -> str:
    text = str(error)
    if type(error).__name__ == "AuthenticationError" or "Authentication" in text:
        return (
            f"the Ray cluster at {url} refused the request: {text.splitlines()[0]}. Set "
            "RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node)."
        )
    if "404" in text:
        return (
            f"something answers at {url}, but not a Ray dashboard (HTTP 404 on its version "
            "endpoint): is this the dashboard port (8265 by default), not the GCS port (6379)?"
        )
    return f"the Ray Jobs API at {url} failed: {text}"


def alive_nodes(address: str) -> int:
    """Alive nodes of the cluster, read through the dashboard's state API."""
    url = dashboard_url(address)
    try:
        with _explicit_address():
            client = StateApiClient(url, headers=auth_headers() or None)
            nodes = client.list(
                StateResource.NODES,
                options=ListApiOptions(filters=[("state", "=", "ALIVE")]),
                raise_on_missing_output=False,
            )
    except Exception as error:
        raise ClusterError(_explain(url, error)) from None
    return len(nodes)


@dataclass(frozen=True)
class JobRequest:
    """What `submit` sends: entrypoint, runtime environment and metadata."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    working_dir: Path | None = None
    """The local folder uploaded as the job's working directory."""
    withheld: tuple[str, ...] = ()
    """Environment variables (or credentials inside their URLs) kept out of the job."""


def withhold_secrets(env: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """`env` without secrets, and what was withheld: variables named like credentials
    (`SECRET_VARIABLES`, or `*_SECRET*`, `*_PASSWORD`, `*_TOKEN`, `*_API_KEY`, ...) are
    dropped; `user:password@` is cut out of URL values (MLflow reads
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from the nodes instead)."""
    kept: dict[str, str] = {}
    withheld: list[str] = []
    for name, value in env.items():
        if is_secret(name):
            withheld.append(name)
            continue
        cleaned = _URL_CREDENTIALS.sub(r"\g<scheme>", value)
        if cleaned != value:
            withheld.append(f"{name} (the credentials in its URL)")
        kept[name] = cleaned
    return kept, tuple(withheld)


def project_root(start: Path) -> Path:
    """The nearest folder above `start` holding a pyproject.toml (else `start`'s folder)."""
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else start.parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return start if start.is_dir() else start.parent


def job_request(
    spec_path: Path,
    *,
    name: str,
    sets: Sequence[str] = (),
    num_samples: int | None = None,
    steps: int | None = None,
    env: Mapping[str, str] | None = None,
    working_dir: Path | None = None,
    package: str | None = None,
    staging: Path | None = None,
) -> JobRequest:
    """The Ray Job that runs `poke-tune run SPEC` on the cluster.

    Args:
        spec_path: the spec file; inside `working_dir` unless `package` is given.
        name: the sweep's name (job metadata, shown by `poke-tune jobs list`).
        sets: `KEY=VALUE` overrides, passed on as `--set`.
        env: environment variables of the job (e.g. MLFLOW_TRACKING_URI); secrets are
            withheld (`withhold_secrets`).
        working_dir: folder to upload (default: the project folder above the spec).
        package: a pip requirement (`poke-tune==0.1.0`) installed on the cluster instead of
            uploading the project; only the spec file is uploaded (copied to `staging`).
    """
    spec_path = spec_path.resolve()
    if package is not None:
        if staging is None:
            raise ValueError("job_request(package=...) needs a staging folder for the spec")
        shutil.copyfile(spec_path, staging / spec_path.name)
        root, relative = staging, Path(spec_path.name)
    else:
        root = (working_dir or project_root(spec_path)).resolve()
        try:
            relative = spec_path.relative_to(root)
        except ValueError:
            raise ClusterError(
                f"spec {spec_path} is outside the uploaded folder {root}: move it into the "
                "project, or pass --working-dir"
            ) from None
    command = ["poke-tune", "run", relative.as_posix()]
    for pair in sets:
        command += ["--set", pair]
    if num_samples is not None:
        command += ["--num-samples", str(num_samples)]
    if steps is not None:
        command += ["--steps", str(steps)]
    runtime_env: dict[str, Any] = {"working_dir": str(root)}
    if package is None:
        runtime_env["excludes"] = list(EXCLUDES)
    else:
        runtime_env["pip"] = [package]
    withheld: tuple[str, ...] = ()
    if env:
        env_vars, withheld = withhold_secrets(env)
        if withheld:
            _logger.warning(
                "not sent to the cluster (job variables are visible in its dashboard and "
                "logs): %s; configure credentials on the nodes",
                ", ".join(withheld),
            )
        if env_vars:
            runtime_env["env_vars"] = env_vars
    return JobRequest(
        entrypoint=shlex.join(command),
        runtime_env=runtime_env,
        metadata={"poke_tune_sweep": name},
        working_dir=root,
        withheld=withheld,
    )


def declared_storage(spec_path: Path, overrides: Mapping[str, Any]) -> str:
    """`storage_path` as written in the spec file or its overrides (before it is made
    absolute against this machine's current folder)."""
    if "storage_path" in overrides:
        return str(overrides["storage_path"])
    raw = yaml.safe_load(spec_path.read_text())
    declared = raw.get("storage_path") if isinstance(raw, dict) else None
    return str(declared or SearchSpec.model_fields["storage_path"].default)


def check_submission(spec: SearchSpec, *, declared: str, nodes: int) -> None:
    """Refuse a spec whose results would be lost or unreadable on the cluster.

    `declared` is the storage path as written (see `declared_storage`), `nodes` the
    cluster's number of alive nodes.
    """
    if "://" not in declared and not Path(declared).is_absolute():
        raise ClusterError(
            f"storage_path {declared!r} is relative: on the cluster it would land in the "
            "job's temporary copy of the project and be deleted later. Give shared storage: "
            "--set storage_path=s3://BUCKET/PREFIX, or an absolute path mounted on every node "
            "with --set storage_shared=true."
        )
    problem = storage_problem(spec.storage_path, shared=spec.storage_shared, nodes=nodes)
    if problem is not None:
        raise ClusterError(problem)


def submit(client: JobSubmissionClient, request: JobRequest) -> str:
    """Submit the job; returns its submission id (`raysubmit_...`)."""
    try:
        return str(
            client.submit_job(
                entrypoint=request.entrypoint,
                runtime_env=request.runtime_env,
                metadata=request.metadata,
            )
        )
    except Exception as error:
        raise ClusterError(f"submitting the job failed: {error}") from None


def _last_lines(text: str, count: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def outcome(client: JobSubmissionClient, job_id: str) -> JobStatus:
    """The final status of a finished job; raise `JobFailedError` unless it succeeded."""
    info = job_info(client, job_id)
    status = JobStatus(info.status)
    if status == JobStatus.SUCCEEDED:
        return status
    logs = _last_lines(job_logs(client, job_id))
    # Ray's message repeats the last logs after this first line; they are shown below.
    reason = (info.message or "").split(", last available logs")[0].strip().splitlines()
    exit_code = getattr(info, "driver_exit_code", None)
    message = f"job {job_id} {status.value}"
    if exit_code is not None:
        message += f" (exit code {exit_code})"
    if reason:
        message += f": {reason[0]}"
    if logs:
        message += f"\nlast log lines:\n{logs}"
    raise JobFailedError(job_id, status.value, message)


def follow(client: JobSubmissionClient, job_id: str, write: Callable[[str], None]) -> JobStatus:
    """Stream the job's logs to `write` until it ends; return SUCCEEDED or raise
    `JobFailedError` (FAILED / STOPPED, with the last log lines)."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    with suppress(RuntimeError):  # the log stream broke off: the status below decides
        asyncio.run(tail())
    while not JobStatus(client.get_job_status(job_id)).is_terminal():
        time.sleep(1.0)
    return outcome(client, job_id)


def list_jobs(client: JobSubmissionClient) -> list[JobDetails]:
    """All jobs of the cluster, oldest first."""
    jobs = _job_call("listing jobs", None, client.list_jobs)
    return sorted(jobs, key=lambda job: job.start_time or 0)


def job_info(client: JobSubmissionClient, job_id: str) -> JobDetails:
    """Status, entrypoint, message and times of one job."""
    return _job_call("reading", job_id, lambda: client.get_job_info(job_id))


def job_logs(client: JobSubmissionClient, job_id: str) -> str:
    """Everything the job's driver has printed so far."""
    return str(_job_call("reading the logs of", job_id, lambda: client.get_job_logs(job_id)))


def stop_job(client: JobSubmissionClient, job_id: str) -> bool:
    """Ask the cluster to stop a job; False if it had already ended."""
    return bool(_job_call("stopping", job_id, lambda: client.stop_job(job_id)))


def _job_call(action: str, job_id: str | None, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except Exception as error:
        text = str(error)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise ClusterError(
                f"no job {job_id!r} on this cluster (`poke-tune jobs list` shows the ids)"
            ) from None
        target = f"job {job_id}" if job_id is not None else "the cluster"
        raise ClusterError(f"{action} {target} failed: {text}") from None


def temporary_staging() -> tempfile.TemporaryDirectory[str]:
    """A folder for the spec file uploaded alongside a pip package (see `job_request`)."""
    return tempfile.TemporaryDirectory(prefix="poke-tune-submit-")
