"""One dataset from several: an import and a `generate` recipe, two imports, or a flywheel's
rounds. Combining concatenates the parts' manifests: no shard is copied or recompiled, so
adding a round costs its own battles alone. The header lists every part's own header
provenance (`generator.parts`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from poke_tune.data.compiled import load_dataset, write_manifest
from poke_tune.data.records import DatasetError, DatasetHeader
from poke_tune.data.shards import Shard

__all__ = ["CombinedDataset", "combine_datasets"]


@dataclass(frozen=True)
class CombinedDataset:
    """What `combine_datasets` wrote."""

    path: Path
    """The manifest (load it with `load_dataset`)."""
    header: DatasetHeader
    trajectories: int
    repeats_dropped: int
    """Trajectories already in an earlier part (the same decisions, whatever their ids)."""


_MUST_AGREE = ("encoder_version", "observation_size", "action_layout", "num_actions")


def combine_datasets(
    parts: Sequence[Path], out: Path, *, cache_root: Path | None = None
) -> CombinedDataset:
    """Write a manifest `out` (`.json`) listing the shards of `parts`, in order.

    Each part is a trajectory file (compiled first if it is not yet) or a manifest. The
    parts must agree on encoder, action layout, sizes and battle format (a `DatasetError`
    names the first part that does not). Replay ids read with their part's index as a
    prefix (`0/...`, `1/...`): two sources may number battles alike. A trajectory already
    in an earlier part is excluded and counted (overlapping imports would otherwise weigh a
    battle twice and could put it on both sides of the split).
    """
    if not parts:
        raise ValueError("combine_datasets needs at least one part")
    if out.suffix != ".json":
        raise ValueError(f"{out}: a combined dataset is a manifest, name it *.json")
    datasets = [load_dataset(part, cache_root=cache_root) for part in parts]
    first = datasets[0].header
    for part, dataset in zip(parts, datasets, strict=True):
        for name in (*_MUST_AGREE, "battle_format"):
            if getattr(dataset.header, name) != getattr(first, name):
                raise DatasetError(
                    part,
                    1,
                    f"header.{name}",
                    f"{getattr(dataset.header, name)!r}, but {parts[0]} has "
                    f"{getattr(first, name)!r}: combined parts must agree",
                )
    header = first.model_copy(
        update={
            "generator": {
                "parts": [
                    {"path": str(part), "generator": dataset.header.generator}
                    for part, dataset in zip(parts, datasets, strict=True)
                ]
            }
        }
    )
    seen: set[str] = set()
    excluded: list[int] = []
    shards: list[tuple[Shard, int]] = []
    index = 0
    for part_index, dataset in enumerate(datasets):
        for shard in dataset.shards:
            shards.append((shard, part_index))
            for trajectory in shard.labels():
                if trajectory["digest"] in seen:
                    excluded.append(index)
                seen.add(trajectory["digest"])
                index += 1
    key = hashlib.sha256(
        " ".join([*(s.key for s, _ in shards), *map(str, excluded)]).encode()
    ).hexdigest()[:16]
    write_manifest(
        out,
        key=key,
        header=header,
        size_bytes=sum(dataset.size_bytes for dataset in datasets),
        shards=shards,
        excluded=excluded,
    )
    return CombinedDataset(out, header, index - len(excluded), len(excluded))
