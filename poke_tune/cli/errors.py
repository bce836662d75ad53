"""The CLI's one mapping from failures to exit codes, and its two consoles.

Exit status: 0 on success; 1 when the work ran and failed (a diverged training, a followed
Ray Job that ended FAILED or STOPPED, a search that ran out of memory); 2 on anything the
user can fix: bad input (a spec, a dataset, a checkpoint, an option), a missing install, an
unreachable tracking server or cluster. Expected failures print `error: MESSAGE` on
stderr, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text

from poke_tune.data.records import DatasetError
from poke_tune.eval.winrate import EvaluationError
from poke_tune.sim.battles import SimulatorError
from poke_tune.sim.runtime import SimulatorNotFoundError

__all__ = ["console", "exit_code", "print_error", "stdout", "user_errors"]

console = Console(stderr=True, soft_wrap=True)
"""Progress, notices and errors (stderr), so stdout carries only results."""
stdout = Console(soft_wrap=True)
"""Results: tables, JSON, the lines scripts read."""

_USER_ERRORS: tuple[type[BaseException], ...] = (
    SimulatorNotFoundError,
    SimulatorError,
    DatasetError,
    EvaluationError,
    ValueError,  # SpecError, StorageNotSharedError, pydantic's ValidationError, bad options
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ConnectionError,  # an unreachable tracking server or cluster
)


def _job_errors() -> tuple[type[BaseException], type[BaseException]] | None:
    """(JobFailedError, ClusterError) once `tuning.submit` is loaded: only code that
    imported it can raise them, and importing it here would load Ray on every command."""
    submit = sys.modules.get("poke_tune.tuning.submit")
    return None if submit is None else (submit.JobFailedError, submit.ClusterError)


def _memory_error() -> type[BaseException] | None:
    """`MemoryExhaustedError` once `tuning.cluster` is loaded (a search ran), for the
    same reason as `_job_errors`."""
    runtime = sys.modules.get("poke_tune.tuning.search.cluster")
    return None if runtime is None else runtime.MemoryExhaustedError


def exit_code(error: BaseException) -> int | None:
    """The exit status for an expected failure; None for a bug (let it raise)."""
    memory = _memory_error()
    if memory is not None and isinstance(error, memory):
        return 1  # the trials ran; the message says what to lower and how to resume
    job_errors = _job_errors()
    if job_errors is not None:
        failed, cluster = job_errors
        if isinstance(error, failed):
            return 1
        if isinstance(error, cluster):
            return 2
    return 2 if isinstance(error, _USER_ERRORS) else None


def print_error(error: BaseException | str) -> None:
    """`error: MESSAGE` on stderr, the message printed as is (no markup)."""
    console.print(Text("error: ", style="bold red") + Text(str(error)), highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into `error: MESSAGE` and their exit status (see module)."""
    try:
        yield
    except Exception as error:
        code = exit_code(error)
        if code is None:
            raise
        print_error(error)
        raise typer.Exit(code) from None
