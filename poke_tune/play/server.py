"""A local Pokemon Showdown game server, run from the installed simulator package.

The `pokemon-showdown` npm package in the project cache ships the whole game server, not
only the simulator. The server writes its config, logs and databases inside its own
folder, so it runs from a private copy of the install (made once per package version,
beside the simulator install in the cache), never from the shared simulator install.
That copy gets the runtime folders the npm tarball lacks (`logs/repl` and friends: without
them the server stops with ENOENT) and a `config/config.js` that binds 127.0.0.1 unless
asked otherwise.

`LocalServer` starts `pokemon-showdown start --no-security --skip-build PORT` (the
settings poke-env's documentation uses for local bots: no login security, no throttling)
in a process group of its own, waits until the port accepts connections, and stops the
whole group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from poke_tune.sim.runtime import ShowdownRuntime, cache_dir, find_runtime, stop_process_group

__all__ = [
    "LocalServer",
    "ServerError",
    "ServerUnreachableError",
    "check_port_free",
    "check_server_reachable",
    "default_logs_dir",
    "free_port",
    "server_install",
    "websocket_url",
]

_logger = logging.getLogger(__name__)

_RUNTIME_FOLDERS = ("logs/repl", "logs/chat", "logs/modlog", "config/chat-plugins")
_STOP_TIMEOUT_S = 10.0
_CONFIG = """\
// Written by poke-tune: the package's defaults, bound to one address, no REPL sockets.
Object.assign(exports, require('./config-example.js'));
exports.bindaddress = process.env.POKE_TUNE_SERVER_HOST || '127.0.0.1';
exports.repl = false;
exports.reportbattles = false;
// Battle logs: every finished battle, challenges included (poke-env bots play unrated
// challenges, which the server writes only with logchallenges), in the folder poke-tune names.
exports.logchallenges = true;
if (process.env.POKE_TUNE_SERVER_LOGS) exports.logsdir = process.env.POKE_TUNE_SERVER_LOGS;
"""


class ServerError(RuntimeError):
    """The local server could not start (its output tail is in the message)."""


class ServerUnreachableError(ConnectionError):
    """Nothing accepts connections at a server address."""


def websocket_url(host: str, port: int) -> str:
    """The websocket URL of a Showdown server (the path poke-env's configurations use)."""
    return f"ws://{host}:{port}/showdown/websocket"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise ValueError when `host:port` cannot be bound (another server listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ValueError(
                f"port {port} on {host} is not free ({error.strerror}): another server "
                "listens there; choose another with --port"
            ) from None


def _accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_server_reachable(url: str) -> None:
    """Raise ServerUnreachableError when nothing accepts TCP connections at `url`'s host
    and port (a ws://, wss://, http:// or https:// URL)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError(f"--server {url!r}: expected a URL such as {websocket_url('HOST', 8000)}")
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    if not _accepts(parts.hostname, port, timeout_s=5.0):
        raise ServerUnreachableError(f"no Showdown server accepts connections at {url}")


def default_logs_dir() -> Path:
    """Where `LocalServer` keeps its logs unless told otherwise: battle logs land in
    `YYYY-MM/FORMAT/YYYY-MM-DD/ROOMID.log.json` below it (the server's own layout)."""
    return cache_dir() / "server-logs"


def server_install(runtime: ShowdownRuntime | None = None) -> Path:
    """The package folder of the server's private copy of the install (made on first use).

    The copy holds the whole install (the folder with `node_modules/`): out of its
    `node_modules` tree the server cannot resolve its dependencies.
    """
    runtime = runtime or find_runtime()
    package = runtime.package_dir
    in_npm_tree = package.parent.name == "node_modules"
    source = package.parent.parent if in_npm_tree else package
    target = cache_dir() / "showdown-server" / runtime.version
    copied_package = target / package.relative_to(source)
    config = copied_package / "config" / "config.js"
    if not config.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=target.parent))
        _logger.info("copying the Showdown install %s for the local server", source)
        shutil.copytree(source, staging, symlinks=True, dirs_exist_ok=True)
        staged_package = staging / package.relative_to(source)
        for folder in _RUNTIME_FOLDERS:
            (staged_package / folder).mkdir(parents=True, exist_ok=True)
        (staged_package / "config" / "config.js").write_text(_CONFIG)
        try:
            staging.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
    if config.read_text() != _CONFIG:  # a copy made by an older poke-tune
        config.write_text(_CONFIG)
    return copied_package


class LocalServer:
    """A Showdown server on `host:port` in its own process group; a context manager.

    Args:
        port: TCP port (check it with `check_port_free` first for a clean error).
        host: bind address; 127.0.0.1 unless asked.
        ready_timeout_s: how long to wait for the port to accept connections.
        logs_dir: the server's log folder (battle logs, challenges included); default
            `default_logs_dir()`.
    """

    def __init__(
        self,
        *,
        port: int = 8000,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 90.0,
        logs_dir: Path | None = None,
        runtime: ShowdownRuntime | None = None,
    ) -> None:
        self.port = port
        self.logs_dir = (logs_dir or default_logs_dir()).resolve()
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self.runtime = runtime
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        """The websocket URL poke-env connects to."""
        return websocket_url(self.host, self.port)

    @property
    def pid(self) -> int:
        """Process id of the server (the leader of its process group)."""
        if self.process is None:
            raise RuntimeError("the server is not started")
        return self.process.pid

    def start(self) -> LocalServer:
        """Start the server and return once its port accepts connections."""
        check_port_free(self.host, self.port)
        runtime = self.runtime or find_runtime()
        package = server_install(runtime)
        log_dir = package / "logs"
        for folder in _RUNTIME_FOLDERS:  # the server writes below logsdir as below logs/
            if folder.startswith("logs/"):
                (self.logs_dir / folder.removeprefix("logs/")).mkdir(parents=True, exist_ok=True)
        command = [runtime.node, "pokemon-showdown", "start", "--skip-build", "--no-security"]
        with tempfile.NamedTemporaryFile(
            prefix=f"server-{self.port}-", suffix=".log", dir=log_dir, delete=False
        ) as log_file:
            self._log_path = Path(log_file.name)
            self.process = subprocess.Popen(
                [*command, str(self.port)],
                cwd=package,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **os.environ,
                    "POKE_TUNE_SERVER_HOST": self.host,
                    "POKE_TUNE_SERVER_LOGS": str(self.logs_dir),
                },
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        _logger.debug("Showdown server %d listening at %s", self.pid, self.url)
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"the Showdown server exited with status {self.process.returncode} "
                    f"before accepting connections: {self.output_tail()}"
                )
            if _accepts(self.host, self.port, timeout_s=0.5):
                return
            time.sleep(0.2)
        raise ServerError(
            f"the Showdown server did not accept connections on {self.host}:{self.port} "
            f"within {self.ready_timeout_s:.0f} s: {self.output_tail()}"
        )

    def output_tail(self, lines: int = 5) -> str:
        """The last lines the server printed (for error messages)."""
        if self._log_path is None or not self._log_path.is_file():
            return "(no output)"
        text = self._log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the server's whole process group: TERM, then KILL after 10 s."""
        process = self.process
        if process is None:
            return
        stop_process_group(process, name="Showdown server", timeout_s=_STOP_TIMEOUT_S)
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
        self.process = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
