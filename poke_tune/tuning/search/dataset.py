"""The spec's dataset, compiled once on the driver before Ray starts: a trajectory file, or
one generated first (once, then cached) from the spec's recipe."""

from __future__ import annotations

import logging

from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.spec import DatasetSpec

__all__ = ["prepare_dataset"]

_logger = logging.getLogger(__name__)


def prepare_dataset(dataset: DatasetSpec) -> OfflineDataset:
    """Compile the spec's dataset, generating it first (once, cached) from a recipe."""
    if dataset.path is not None:
        return load_dataset(dataset.path)
    recipe = dataset.generate
    assert recipe is not None
    path = cache_dir() / "generated" / f"{recipe.key()}.jsonl.gz"
    if not path.is_file():
        _logger.info("generating the spec's dataset (%d battles) into %s", recipe.battles, path)
        generate_dataset(
            path,
            policies=recipe.policies,
            battles=recipe.battles,
            seed=recipe.seed,
            battle_format=recipe.battle_format,
            max_turns=recipe.max_turns,
            hp_shaping=recipe.hp_shaping,
        )
    return load_dataset(path)
