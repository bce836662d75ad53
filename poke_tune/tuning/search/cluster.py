"""The Ray a sweep runs on: connecting to it (or starting a local one), checking that it
can run the sweep, and fitting the Tuner on it without leaking credentials or tracebacks.

- Storage: on a multi-node cluster every trial writes its checkpoints to `storage_path`
  from the node it runs on, and the driver reads them back (best checkpoint, resume); Ray
  Tune has not synced node-local folders since Ray 2.7. So a local folder is refused there
  unless the spec declares it shared (`storage_shared: true`: the same mount, e.g. NFS, on
  every node). URIs (s3://, gs://, ...) go through pyarrow and are shared by construction;
  MinIO is s3:// with an endpoint (AWS_ENDPOINT_URL, or
  `?endpoint_override=HOST:PORT&scheme=http`). The check runs twice: on the client before
  `poke-tune submit` uploads anything (through the dashboard's state API), and on the
  driver right after `ray.init`, which also covers `poke-tune run --address` and clusters
  that grew since submission.
- Credentials: Ray Tune copies the driver's AWS credentials into every trial's runtime
  environment (for s3:// storage), and Ray's `runtime_env_agent.log` then records them in
  clear; a local Ray's processes also inherit the driver's whole environment. With local
  storage no trial needs them, so they are withheld from `ray.init` and `Tuner.fit`.
- Logs: Ray writes its logs with the driver's umask (644 under the usual 022) in a
  session folder it makes world-writable, and every worker it starts chmods that folder
  back to 777; so a local Ray the sweep starts is started under umask 077 instead, which
  its processes inherit: their logs are readable by this user only.
- Signals: Tune installs its own SIGINT handler in `Tuner.fit()` and leaves it there, so
  after a sweep the next Ctrl-C (a flywheel's generation, a confirmation) would only be
  swallowed; `fit` puts the caller's handlers back when the search ends.
- Memory: Ray's memory monitor killing a trial's worker while Tune starts it surfaces as
  `RuntimeError: Caught unexpected exception: ...` out of `Tuner.fit()`; it becomes a
  `MemoryExhaustedError` whose message says what to lower.

The CLI's error mapping looks this module up in `sys.modules` (it raises only once a
search ran), so importing the CLI loads no Ray.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import ray

from poke_tune.tuning.experiment import Experiment, is_local, storage_problem
from poke_tune.tuning.redaction import redacted
from poke_tune.tuning.search.tuner import build_tuner
from poke_tune.tuning.secrets import is_secret

if TYPE_CHECKING:
    from ray import tune

    from poke_tune.data.compiled import OfflineDataset
    from poke_tune.tuning.spec import ResourcesSpec, SearchSpec

__all__ = [
    "LOCAL_ONLY_ENV",
    "MemoryExhaustedError",
    "StorageNotSharedError",
    "TrialDoesNotFitError",
    "alive_nodes",
    "check_fits",
    "check_storage",
    "fit",
    "fit_on_cluster",
    "fit_problem",
    "inherited_secrets",
    "init_ray",
    "memory_exhausted",
    "out_of_memory",
    "private_files",
    "signal_handlers_kept",
    "tune_forwarded_secrets",
    "withheld",
]


class StorageNotSharedError(ValueError):
    """A local-only storage path on a multi-node cluster; the message says what to use."""


class TrialDoesNotFitError(ValueError):
    """No node of the cluster can ever hold one trial's resources."""


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this process is connected to."""
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_storage(storage_path: str, *, shared: bool) -> None:
    """Raise `StorageNotSharedError` if the connected cluster cannot use the spec's storage.

    Call on the driver after `ray.init` and before the Tuner starts.
    """
    problem = storage_problem(storage_path, shared=shared, nodes=alive_nodes())
    if problem is not None:
        raise StorageNotSharedError(problem)


def fit_problem(cpu: float, gpu: float, nodes: list[dict[str, float]]) -> str | None:
    """Why no node among `nodes` (each node's total resources) fits one trial, or None."""
    if any(n.get("CPU", 0.0) >= cpu and n.get("GPU", 0.0) >= gpu for n in nodes):
        return None
    have = (
        ", ".join(f"{n.get('CPU', 0.0):g} CPU / {n.get('GPU', 0.0):g} GPU" for n in nodes)
        or "no nodes"
    )
    hint = (
        "set resources.gpu: 0 (training falls back to the CPU)"
        if gpu > 0
        else (f"lower resources.cpu below {cpu:g}")
    )
    return (
        f"a trial asks for {cpu:g} CPU and {gpu:g} GPU (resources in the spec), but no node "
        f"of the Ray cluster has that much ({have}): its trials would wait forever. "
        f"{hint.capitalize()}, or run on a cluster that has the resources (--address)."
    )


def check_fits(resources: ResourcesSpec) -> None:
    """Raise `TrialDoesNotFitError` if no alive node can ever run one trial of the spec.

    Call on the driver after `ray.init` (an autoscaling cluster whose nodes are still to
    come is judged by the nodes it has now)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    problem = fit_problem(resources.cpu, resources.gpu, nodes)
    if problem is not None:
        raise TrialDoesNotFitError(problem)


LOCAL_ONLY_ENV = "POKE_TUNE_RAY_LOCAL_ONLY"
"""Set to 0 to let a local Ray instance listen on all interfaces (Ray's default)."""


def fit_on_cluster(
    spec: SearchSpec,
    dataset: OfflineDataset,
    address: str | None,
    *,
    callbacks: Sequence[tune.Callback] = (),
    restore: Path | None = None,
) -> tune.ResultGrid:
    """Connect to `address` / RAY_ADDRESS (or start a local Ray), check that the cluster
    can run the spec's trials, then build the Tuner (`restore`: of an interrupted search)
    and fit it there."""
    init_ray(address, storage_path=spec.storage_path)
    # A multi-node cluster needs shared storage; a trial that no node can place would stay
    # PENDING forever.
    check_storage(spec.storage_path, shared=spec.storage_shared)
    check_fits(spec.resources)
    return fit(build_tuner(redacted(spec), dataset, callbacks, restore=restore), spec)


def init_ray(address: str | None, *, storage_path: str | None = None) -> None:
    """Connect to `address` / RAY_ADDRESS, else start a local Ray on this machine that
    listens on 127.0.0.1 only (Ray's own default is every interface), writes logs only
    this user can read, and, when `storage_path` is local, does not inherit the driver's
    credentials (its workers are the trials, which need none)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address is not None:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
        return
    if os.environ.get(LOCAL_ONLY_ENV, "1") != "0":
        _loopback_only()
    secrets = [] if storage_path is None else inherited_secrets(storage_path)
    with withheld(secrets), private_files():
        ray.init(include_dashboard=False, log_to_driver=True)


def _loopback_only() -> None:
    # Ray's single-machine mode (its default on macOS and Windows): the node's address is
    # 127.0.0.1, and Ray then binds its GCS, raylet, workers and agents to loopback. The
    # environment variable reaches Ray's processes; the constant was read at import.
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def fit(tuner: tune.Tuner, spec: SearchSpec) -> tune.ResultGrid:
    """`tuner.fit()` without the credentials Tune would copy into the trials (and Ray into
    its logs) when the storage needs none; memory running out ends in a one-line
    `MemoryExhaustedError`, not Tune's traceback."""
    try:
        with withheld(tune_forwarded_secrets(spec.storage_path)), signal_handlers_kept():
            return tuner.fit()
    except Exception as error:
        if not out_of_memory(error):
            raise
        raise memory_exhausted(Experiment(spec).location) from error


@contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """The SIGINT and SIGUSR1 handlers as they were before the block, put back after it
    (Tune's stay installed after `Tuner.fit()` returns, ray-project/ray tune.py)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread sets handlers, Tune's included
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


_TUNE_FORWARDS = ("AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")
"""The credentials Ray 2.60's Tune copies into its trials' runtime environment (its
`ENV_VARS_TO_PROPAGATE`, a private constant: the version pin keeps this list current)."""
_OOM_TEXT = "running low on memory"
"""In the message of a worker killed by Ray's memory monitor, however it is wrapped."""


class MemoryExhaustedError(RuntimeError):
    """The machine ran out of memory during the search; the message says what to lower."""


def inherited_secrets(storage_path: str, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Credentials a local Ray's processes need not inherit: every secret when the storage
    is local (remote storage, e.g. gs://, may need GOOGLE_APPLICATION_CREDENTIALS in the
    trials), except Ray's own (RAY_AUTH_TOKEN: the driver and the GCS must agree on it)."""
    if not is_local(storage_path):
        return []
    return [name for name in environ if is_secret(name) and not name.upper().startswith("RAY_")]


def tune_forwarded_secrets(
    storage_path: str, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """The credentials Tune would copy into the trials' runtime environment (and so into
    Ray's logs), when the storage is local. Only those: the driver's own callbacks (MLflow,
    an Optuna database) still need theirs during `fit()`."""
    if not is_local(storage_path):
        return []
    return sorted(name for name in _TUNE_FORWARDS if name in environ and is_secret(name))


@contextmanager
def withheld(names: Iterable[str]) -> Iterator[None]:
    """`os.environ` without `names` inside the block (they are back after it). Processes
    started, and Tune's trials created, inside the block do not get them."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextmanager
def private_files() -> Iterator[None]:
    """umask 077 inside the block: Ray's processes started in it (GCS, raylet, agents, and
    the workers they start) inherit it, so the logs they write are theirs alone."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is, or was caused by, a worker killed for lack of memory
    (`ray.exceptions.OutOfMemoryError`, or Tune's RuntimeError that wraps it)."""
    from ray.exceptions import OutOfMemoryError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OutOfMemoryError) or _OOM_TEXT in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def memory_exhausted(location: str) -> MemoryExhaustedError:
    """The one-line error for a search that ran out of memory in `location`."""
    return MemoryExhaustedError(
        "the machine ran out of memory during the search (Ray's memory monitor killed trial "
        "workers); the trials so far are saved. Run fewer trials at once (lower "
        "max_concurrent_trials, or give each trial more resources.cpu) or lower "
        f"training.batch_size in a new sweep, or free memory and continue this one: "
        f"poke-tune resume {location}"
    )
