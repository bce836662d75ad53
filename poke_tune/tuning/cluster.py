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

from poke_tune.tuning.experiment import is_local

if TYPE_CHECKING:
    from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "StorageNotSharedError",
    "TrialDoesNotFitError",
    "alive_nodes",
    "check_fits",
    "check_storage",
    "fit_problem",
    "storage_problem",
]


class StorageNotSharedError(ValueError):
    """A local-only storage path on a multi-node cluster; the message says what to use."""


class TrialDoesNotFitError(ValueError):
    """No node of the cluster can ever hold one trial's resources."""


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


def fit_problem(cpu: float, gpu: float, nodes: list[dict[str, float]]) -> str | None:
    """Why no node among `nodes` (each node's total resources) fits one trial, or None."""
    if any(n.get("CPU", 0.0) >= cpu and n.get("GPU", 0.0) >= gpu for n in nodes):
        return None
    have = (
        ", ".join(f"{n.get('CPU', 0.0):g} CPU / {n.get('GPU', 0.0):g} GPU" for n in nodes)
        or "no nodes"
    )
    hint = (
        "set resources.gpu: 0 (training falls back to the CPU)"
        if gpu > 0
        else (f"lower resources.cpu below {cpu:g}")
    )
    return (
        f"a trial asks for {cpu:g} CPU and {gpu:g} GPU (resources in the spec), but no node "
        f"of the Ray cluster has that much ({have}): its trials would wait forever. "
        f"{hint.capitalize()}, or run on a cluster that has the resources (--address)."
    )


def check_fits(spec: SearchSpec) -> None:
    """Raise `TrialDoesNotFitError` if no alive node can ever run one trial of the spec.

    Call on the driver after `ray.init` (an autoscaling cluster whose nodes are still to
    come is judged by the nodes it has now)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    problem = fit_problem(spec.resources.cpu, spec.resources.gpu, nodes)
    if problem is not None:
        raise TrialDoesNotFitError(problem)
