"""`poke-tune server`: a local Pokemon Showdown server for poke-env bots.

Exit status: 0 when stopped (Ctrl-C, SIGTERM, SIGHUP: the server's whole process group
stops with it); 2 when the port is taken or the simulator is not installed, before
anything starts; 1 when the server fails to start or exits by itself.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from poke_tune.cli.errors import console, print_error, stdout, user_errors

__all__ = ["server"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    logs: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the server's battle logs (every finished battle, challenges "
            "included; `poke-tune data import` reads them). Default: server-logs/ in the cache.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Run a local Showdown server (no login security) from the installed simulator and
    print its websocket URL; Ctrl-C stops it."""
    from poke_tune.play.server import LocalServer, ServerError, check_port_free
    from poke_tune.sim.runtime import find_runtime

    with user_errors():
        check_port_free(host, port)
        runtime = find_runtime()
    local = LocalServer(port=port, host=host, logs_dir=logs, runtime=runtime)
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    status = 0
    try:
        local.start()
        stdout.print(local.url)
        console.print(f"battle logs: {local.logs_dir}", highlight=False)
        assert local.process is not None
        code = local.process.wait()
        print_error(f"the Showdown server exited with status {code}: {local.output_tail()}")
        status = 1
    except ServerError as error:
        print_error(error)
        status = 1
    except (KeyboardInterrupt, _Stop):
        status = 0
    finally:
        for sig in (signal.SIGINT, *_STOP_SIGNALS):  # a second Ctrl-C must not cut the stop
            signal.signal(sig, signal.SIG_IGN)
        local.stop()
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if status:
        raise typer.Exit(status)
