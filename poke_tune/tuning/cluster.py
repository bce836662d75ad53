"""Checks that a sweep can run on the Ray cluster it is about to use.

On a multi-node cluster every trial writes its checkpoints to `storage_path` from the node
it runs on, and the driver reads them back (best checkpoint, resume); Ray Tune has not
synced node-local folders since Ray 2.7. So a local folder is refused there unless the
spec declares it shared (`storage_shared: true`: the same mount, e.g. NFS, on every node).
URIs (s3://, gs://, ...) go through pyarrow and are shared by construction; MinIO is s3://
with an endpoint (AWS_ENDPOINT_URL, or `?endpoint_override=HOST:PORT&scheme=http`).

The check runs twice: on the client before `poke-tune submit` uploads anything (through
the dashboard's state API), and on the driver right after `ray.init` (`check_storage`),
which also covers `poke-tune run --address` and clusters that grew since submission.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ray

if TYPE_CHECKING:
    from poke_tune.tuning.spec import SearchSpec

__all__ = ["StorageNotSharedError", "alive_nodes", "check_storage", "storage_problem"]


class StorageNotSharedError(ValueError):
    """A local-only storage path on a multi-node cluster; the message says what to use."""


def is_local(storage_path: str) -> bool:
    """A plain folder or a file:// URI (anything else is a pyarrow/fsspec filesystem)."""
    return "://" not in storage_path or storage_path.startswith("file://")


def storage_problem(storage_path: str, *, shared: bool, nodes: int) -> str | None:
    """Why `storage_path` cannot serve a cluster of `nodes` alive nodes, or None."""
    if nodes <= 1 or shared or not is_local(storage_path):
        return None
    return (
        f"storage_path {storage_path!r} is a local folder, but the Ray cluster has {nodes} "
        "nodes: trials on other nodes would write their checkpoints to their own disks, "
        "where the driver cannot read them back (Ray Tune does not sync node-local folders). "
        "Use shared storage: s3://BUCKET/PREFIX (MinIO: set AWS_ENDPOINT_URL on the cluster, "
        "or append ?endpoint_override=HOST:PORT&scheme=http), gs://BUCKET/PREFIX, or a folder "
        "mounted at the same path on every node (NFS) declared with `storage_shared: true` "
        "(or --set storage_shared=true)."
    )


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this process is connected to."""
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_storage(spec: SearchSpec) -> None:
    """Raise `StorageNotSharedError` if the connected cluster cannot use the spec's storage.

    Call on the driver after `ray.init` and before the Tuner starts.
    """
    problem = storage_problem(spec.storage_path, shared=spec.storage_shared, nodes=alive_nodes())
    if problem is not None:
        raise StorageNotSharedError(problem)
