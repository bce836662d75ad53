"""What a sweep does around Ray so that it leaks no credentials and ends without a traceback.

- Credentials: Ray Tune copies the driver's AWS credentials into every trial's runtime
  environment (for s3:// storage), and Ray's `runtime_env_agent.log` then records them in
  clear; a local Ray's processes also inherit the driver's whole environment. With local
  storage no trial needs them, so they are withheld from `ray.init` and `Tuner.fit`.
- Logs: Ray writes its logs with the driver's umask (644 under the usual 022) in a
  session folder it makes world-writable, and every worker it starts chmods that folder
  back to 777; so a local Ray the sweep starts is started under umask 077 instead, which
  its processes inherit: their logs are readable by this user only.
- Memory: Ray's memory monitor killing a trial's worker while Tune starts it surfaces as
  `RuntimeError: Caught unexpected exception: ...` out of `Tuner.fit()`; it becomes a
  `MemoryExhaustedError` whose message says what to lower.

No Ray import at module level: the CLI's error mapping looks this module up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from poke_tune.tuning.experiment import is_local
from poke_tune.tuning.secrets import is_secret

__all__ = [
    "MemoryExhaustedError",
    "inherited_secrets",
    "memory_exhausted",
    "out_of_memory",
    "private_files",
    "tune_forwarded_secrets",
    "withheld",
]

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
