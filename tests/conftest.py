"""Shared fixtures: one simulator pool per test session (node workers are persistent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poke_tune.data.dataset import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset
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


@pytest.fixture(scope="session")
def battle_dataset(tmp_path_factory: pytest.TempPathFactory) -> OfflineDataset:
    """A real dataset: 160 battles of mixed random / max-damage behaviour."""
    folder = tmp_path_factory.mktemp("battles")
    path = folder / "mixed.jsonl.gz"
    generate_dataset(path, policies=["random", "max-damage"], battles=160, seed=0)
    return load_dataset(path, cache_root=folder / "cache")
