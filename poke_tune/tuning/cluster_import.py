"""A spec's import on the whole cluster: each Ray task imports a group of the source files
on its node (re-simulating and verifying them there, `import_battles`) and compiles them
into shards in the shared cache; the driver only concatenates the parts' manifests.

The sources and the poke-tune cache must be storage every node sees (the README's cluster
section): the tasks read the files where they lie and write shards where every trial maps
them, so no battle log and no shard travels through the driver. The name key is the
cache's (or `POKE_TUNE_NAME_KEY`, which Ray passes to the tasks), so a player's hash is the
same on every node.

A battle held by two groups is imported by both and left out of the second part by
`combine_datasets` (the same decisions: its digest), so the dataset holds it once, as a
local import would; the summary counts it among the repeats. Which files go to which group
is fixed by their order (`chunk_plan`), so the same sources give the same shards.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
from poke_tune.data.importer import ImportSummary, NothingImportedError, Sides, import_battles
from poke_tune.data.sources import source_files
from poke_tune.sim.battles import SimulatorPool
from poke_tune.tuning.cluster_battles import CHUNKS_PER_CPU, chunk_plan, in_completion_order

__all__ = ["ClusterImport", "ImportSettings", "import_on_cluster"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportSettings:
    """`import_battles`' settings, the same for every group."""

    battle_format: str | None = None
    min_rating: float | None = None
    sides: Sides = "both"
    hp_shaping: float = 0.0


@dataclass(frozen=True)
class ClusterImport:
    """What the groups imported, summed, and the nodes they ran on."""

    path: Path
    """The manifest."""
    read: int
    imported: int
    refused: Counter[str]
    repeats_dropped: int
    """Battles' trajectories imported by two groups and kept once."""
    nodes: Counter[str]
    """Groups imported per node (by node id)."""


def import_on_cluster(
    sources: Sequence[Path],
    manifest: Path,
    work: Path,
    settings: ImportSettings,
    *,
    groups: int | None = None,
) -> ClusterImport:
    """Import `sources` as Ray tasks, one per group of their files, into the manifest
    `manifest` (`*.json`); `work` holds the groups' trajectory files (kept: the
    interchange form of each part). Raises ValueError, with the refusals counted by
    reason, when no group imported a battle."""
    import ray

    files: list[Path] = []
    for _, found in source_files(sources):
        # A folder that cannot be listed: the groups cannot name it, the local import can.
        files.append(found[0] if isinstance(found, tuple) else found)
    count = groups or CHUNKS_PER_CPU * max(1, int(ray.cluster_resources().get("CPU", 1)))
    plan = chunk_plan(len(files), count)
    work.mkdir(parents=True, exist_ok=True)
    pending = {
        _remote_group().remote(
            [str(files[i]) for i in positions], str(work / f"part-{number}.jsonl.gz"), settings
        ): number
        for number, positions in enumerate(plan)
    }
    _logger.info("importing %d files as %d Ray tasks", len(files), len(pending))
    parts: dict[int, Path] = {}
    read, imported, refused, nodes = 0, 0, Counter[str](), Counter[str]()
    for number, (node, summary, part) in in_completion_order(pending):
        nodes[node] += 1
        read += summary.read
        imported += summary.imported
        refused.update(summary.refused_by_reason())
        if part is not None:
            parts[number] = Path(part)
        _logger.info("import group %d: %d of %d battles", number, summary.imported, summary.read)
    if not parts:
        reasons = ", ".join(f"{n} {why}" for why, n in refused.items())
        raise ValueError(f"no battle imported from {read} read ({reasons or 'none found'})")
    combined = combine_datasets([parts[n] for n in sorted(parts)], manifest)
    return ClusterImport(manifest, read, imported, refused, combined.repeats_dropped, nodes)


@functools.cache
def _remote_group() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_import_group)


def _import_group(
    files: list[str], out: str, settings: ImportSettings
) -> tuple[str, ImportSummary, str | None]:
    """Import one group on this node and compile it into the shared shard store; the
    part's manifest path (None when the group held no importable battle)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    with SimulatorPool(num_workers=1) as pool:
        try:
            summary = import_battles(
                [Path(f) for f in files],
                Path(out),
                battle_format=settings.battle_format,
                min_rating=settings.min_rating,
                sides=settings.sides,
                hp_shaping=settings.hp_shaping,
                overwrite=True,
                pool=pool,
            )
        except NothingImportedError as nothing:
            return node, nothing.summary, None
    return node, summary, str(load_dataset(Path(out)).manifest)
