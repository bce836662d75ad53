"""Locate Node.js and the `pokemon-showdown` npm package, or install the package.

Lookup order for the package directory (the folder holding its `package.json`):
1. the `POKE_TUNE_SHOWDOWN_DIR` environment variable;
2. the project cache, `$POKE_TUNE_CACHE/showdown/node_modules/pokemon-showdown`
   (`POKE_TUNE_CACHE` defaults to `$XDG_CACHE_HOME/poke-tune`, i.e. `~/.cache/poke-tune`).
Node is `POKE_TUNE_NODE` if set, else `node` on PATH. `poke-tune setup` fills the cache.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SHOWDOWN_VERSION",
    "ShowdownRuntime",
    "SimulatorNotFoundError",
    "cache_dir",
    "find_runtime",
    "install_showdown",
    "stop_process_group",
    "usable_cpus",
]

_logger = logging.getLogger(__name__)

SHOWDOWN_VERSION = "0.11.11"
"""The simulator release poke-tune is tested against (pinned: the protocol is not frozen)."""

MIN_NODE_MAJOR = 20
WORKER_SCRIPT = Path(__file__).with_name("js") / "worker.js"


class SimulatorNotFoundError(RuntimeError):
    """Node or the pokemon-showdown package is missing; the message says how to install it."""


def cache_dir() -> Path:
    """The project cache folder (simulator install, Dex extract, compiled datasets, the
    local server's raw battle logs and the import name key). Created mode 0700 when it does
    not exist yet: it holds players' clear names; an existing folder is left as it is."""
    if "POKE_TUNE_CACHE" in os.environ:
        folder = Path(os.environ["POKE_TUNE_CACHE"]).expanduser().resolve()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = Path(xdg).expanduser().resolve() / "poke-tune"
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class ShowdownRuntime:
    """A usable Node binary and simulator package."""

    node: str
    package_dir: Path
    version: str


def _install_hint() -> str:
    return (
        "Install it with `poke-tune setup` (runs `npm install pokemon-showdown@"
        f"{SHOWDOWN_VERSION}` into {cache_dir() / 'showdown'}), or point "
        "POKE_TUNE_SHOWDOWN_DIR at an existing node_modules/pokemon-showdown folder."
    )


def _find_node() -> str:
    node = os.environ.get("POKE_TUNE_NODE") or shutil.which("node")
    if not node:
        raise SimulatorNotFoundError(
            f"Node.js >= {MIN_NODE_MAJOR} not found: install it (https://nodejs.org or your "
            "package manager) or set POKE_TUNE_NODE to the node binary."
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < MIN_NODE_MAJOR:
        raise SimulatorNotFoundError(
            f"{node} is Node {version}; pokemon-showdown needs Node >= {MIN_NODE_MAJOR}."
        )
    return node


def _default_package_dir() -> Path:
    return cache_dir() / "showdown" / "node_modules" / "pokemon-showdown"


def find_runtime() -> ShowdownRuntime:
    """Find Node and the simulator package, or raise `SimulatorNotFoundError` with a fix."""
    node = _find_node()
    env_dir = os.environ.get("POKE_TUNE_SHOWDOWN_DIR")
    package_dir = Path(env_dir).expanduser().resolve() if env_dir else _default_package_dir()
    manifest = package_dir / "package.json"
    if not manifest.is_file():
        where = "POKE_TUNE_SHOWDOWN_DIR" if env_dir else "the project cache"
        raise SimulatorNotFoundError(
            f"pokemon-showdown not found in {where} ({package_dir}). {_install_hint()}"
        )
    version = json.loads(manifest.read_text())["version"]
    if not (package_dir / "dist" / "sim" / "index.js").is_file():
        raise SimulatorNotFoundError(
            f"{package_dir} has no prebuilt dist/sim/index.js. {_install_hint()}"
        )
    return ShowdownRuntime(node=node, package_dir=package_dir, version=version)


def install_showdown(version: str = SHOWDOWN_VERSION) -> ShowdownRuntime:
    """Install the simulator package into the project cache (no-op if already there)."""
    target = cache_dir() / "showdown"
    manifest = target / "node_modules" / "pokemon-showdown" / "package.json"
    if manifest.is_file() and json.loads(manifest.read_text())["version"] == version:
        _logger.info("pokemon-showdown %s already installed in %s", version, target)
        return find_runtime()
    npm = shutil.which("npm")
    if not npm:
        raise SimulatorNotFoundError("npm not found: install Node.js >= 20 (it ships npm).")
    target.mkdir(parents=True, exist_ok=True)
    _logger.info("installing pokemon-showdown %s into %s", version, target)
    # The package ships a prebuilt dist/: its install scripts are not needed.
    subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            f"pokemon-showdown@{version}",
        ],
        cwd=target,
        check=True,
    )
    return find_runtime()


def stop_process_group(
    process: subprocess.Popen[bytes], *, name: str, timeout_s: float = 10.0
) -> None:
    """Stop the process group led by `process` (started with `start_new_session`): TERM,
    then KILL after `timeout_s`, waiting until every member is gone."""
    group = process.pid  # start_new_session: the leader's pid is the group id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(group):
                return
            time.sleep(0.05)
        _logger.warning("%s group %d did not stop on %s", name, group, sig.name)
    process.poll()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
