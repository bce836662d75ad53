"""The spec's dataset, compiled once on the driver before the search: a trajectory file, or
one built first (once, then cached by content) from the spec's sources: a `generate`
recipe, an `import` of logged battles (server logs, replays, and the logs of a `record`
recipe's bot battles), or both combined into one manifest of their shards. The sweep's
life cycle and the data flywheel (each round's new battles and its combined data) both
build their data here."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.data.generate import generate_shards
from poke_tune.data.importer import import_battles, sources_digest
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.cluster_battles import cluster_shards, on_cluster
from poke_tune.tuning.cluster_import import ImportSettings, import_on_cluster
from poke_tune.tuning.policies import resolve_policy
from poke_tune.tuning.spec_data import DatasetSpec, GenerateRecipe, ImportRecipe, RecordRecipe

__all__ = ["Recorder", "build_once", "prepare_dataset"]

_logger = logging.getLogger(__name__)

Recorder = Callable[[RecordRecipe, Path], None]
"""Plays a record recipe's battles on a local server whose logs go to the given folder.
The CLI hands down the play layer's one (`poke_tune.play.record`): tuning never loads
poke-env."""


def prepare_dataset(
    dataset: DatasetSpec, *, recorder: Recorder | None = None, tracking_uri: str | None = None
) -> OfflineDataset:
    """Compile the spec's dataset, building it first (once, cached) from its sources;
    `tracking_uri` is the MLflow store of `models:/` behaviour policies."""
    if dataset.path is not None:
        return load_dataset(dataset.path)
    parts = []
    if dataset.generate is not None:
        parts.append(_generated(dataset.generate, tracking_uri))
    if dataset.import_ is not None:
        parts.append(_imported(dataset.import_, recorder))
    if len(parts) == 1:
        return load_dataset(parts[0])
    key = hashlib.sha256(" ".join(part.name for part in parts).encode()).hexdigest()[:16]
    combined = cache_dir() / "combined" / f"{key}.json"  # a manifest: no shard is copied
    return load_dataset(build_once(combined, lambda out: combine_datasets(parts, out)))


def build_once(path: Path, build: Callable[[Path], object]) -> Path:
    """`path`, built by `build` unless it exists; written under another name and renamed, so
    a build cut short never passes for a finished file."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"partial-{os.getpid()}-{path.name}")
        try:
            build(partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    return path


def _generated(recipe: GenerateRecipe, tracking_uri: str | None) -> Path:
    # A manifest of shards, each built where its battles were played (Ray tasks on a
    # started multi-node Ray, whose cache must then be shared storage; else this machine).
    path = cache_dir() / "generated" / f"{recipe.key(registry=tracking_uri)}.json"
    if not path.is_file():
        _logger.info("generating the spec's dataset (%d battles) into %s", recipe.battles, path)
    return build_once(
        path,
        lambda out: generate_shards(
            out,
            store=cache_dir() / "datasets" / "shards",
            policies=recipe.policies,
            battles=recipe.battles,
            seed=recipe.seed,
            battle_format=recipe.battle_format,
            max_turns=recipe.max_turns,
            hp_shaping=recipe.hp_shaping,
            resolver=partial(resolve_policy, tracking_uri=tracking_uri),
            play_shards=cluster_shards(),
            league=recipe.to_league(),
            progress=path.with_name(f"{path.name}.progress.jsonl"),  # `out` is a partial name
        ),
    )


def _recorded(recipe: RecordRecipe, recorder: Recorder | None) -> Path:
    folder = cache_dir() / "recorded" / recipe.key()
    if folder.is_dir():
        return folder
    if recorder is None:
        raise ValueError(
            "dataset.import.record plays poke-env bots on a local Showdown server, which only "
            "`poke-tune run` can start; or record them first (`poke-tune data record FOLDER "
            f"--battles {recipe.battles}`) and name FOLDER in dataset.import.paths"
        )
    _logger.info("recording %d bot battles on a local server", recipe.battles)
    partial = folder.with_name(f"partial-{os.getpid()}-{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        recorder(recipe, partial)
        partial.rename(folder)
        _logger.info("the recorded logs are kept in %s", folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _imported(recipe: ImportRecipe, recorder: Recorder | None) -> Path:
    sources = [*recipe.paths]
    if recipe.record is not None:
        sources.append(_recorded(recipe.record, recorder))
    key = recipe.key(sources_digest(sources))
    settings = ImportSettings(
        battle_format=recipe.format,
        min_rating=recipe.min_rating,
        sides=recipe.sides,
        hp_shaping=recipe.hp_shaping,
    )
    if on_cluster():  # groups of files imported and compiled on the nodes
        folder = cache_dir() / "imported"
        return build_once(
            folder / f"{key}.json",
            lambda out: import_on_cluster(sources, out, folder / "parts" / key, settings),
        )
    path = cache_dir() / "imported" / f"{key}.jsonl.gz"

    def build(out: Path) -> None:
        summary = import_battles(
            sources,
            out,
            battle_format=settings.battle_format,
            min_rating=settings.min_rating,
            sides=settings.sides,
            hp_shaping=settings.hp_shaping,
        )
        refused = ", ".join(f"{n} {why}" for why, n in summary.refused_by_reason().items())
        _logger.info(
            "imported %d of %d logged battles into %s%s",
            summary.imported,
            summary.read,
            path,
            f" (refused: {refused})" if refused else "",
        )

    return build_once(path, build)
