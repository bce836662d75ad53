"""Shared fixtures: one simulator pool per test session (node workers are persistent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import Dex, load_dex
from poke_tune.sim.encoding import ObservationEncoder


@pytest.fixture(scope="session")
def pool() -> Iterator[SimulatorPool]:
    with SimulatorPool(num_workers=2, timeout_s=60) as shared:
        yield shared


@pytest.fixture(scope="session")
def dex() -> Dex:
    return load_dex("gen9randombattle")


@pytest.fixture(scope="session")
def encoder(dex: Dex) -> ObservationEncoder:
    return ObservationEncoder(dex)
