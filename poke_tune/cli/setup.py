"""`poke-tune setup`: install the simulator and extract its Dex."""

from __future__ import annotations

from poke_tune.cli.errors import stdout, user_errors
from poke_tune.sim.dex import load_dex
from poke_tune.sim.runtime import install_showdown

__all__ = ["setup"]


def setup() -> None:
    """Install the pokemon-showdown simulator into the project cache and extract its Dex."""
    with user_errors():
        runtime = install_showdown()
        dex = load_dex()
    stdout.print(
        f"node: {runtime.node}\npokemon-showdown {runtime.version}: {runtime.package_dir}\n"
        f"Dex: gen {dex.gen}, {len(dex.types)} types"
    )
