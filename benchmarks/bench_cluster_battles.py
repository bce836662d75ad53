"""Battles on the whole cluster: data generation as Ray tasks on one node against two.

Generates the same seeded dataset (`generate_dataset`, random / max-damage:softmax=0.3 /
heuristic:eps=0.2, every ordered pair in turn) four ways and prints battles/s for each:

- local pool, 1 node worker, and local pool, 2 node workers (no Ray: today's path);
- Ray tasks (`poke_tune.tuning.cluster_battles`) on a local Ray cluster of 1 node, then 2
  nodes (tests/cluster/conftest.py's `local_cluster`: `ray start` processes on 127.0.0.1,
  1 CPU per node, so 1 or 2 chunks play at a time).

Each row also says whether its file is byte-identical (decompressed) to the first row's.
Cluster start-up is outside the timing; each Ray row's time includes its tasks' worker
start (a node worker per chunk) and the driver's reassembly. On a single machine the two
"nodes" share its cores: on a 2-core machine the 2-node row measures the overhead of the
Ray tasks at the same parallelism as the 2-worker local pool, not a speed-up from more
hardware. On a real cluster each node adds its own cores.

usage: PYTHONPATH=. python benchmarks/bench_cluster_battles.py [--battles 40] [--seed 7]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.cluster.conftest

from poke_tune.data.generate import generate_dataset
from poke_tune.sim.battle_records import PlayBattles
from poke_tune.sim.runtime import find_runtime
from poke_tune.tuning.cluster_battles import CLUSTER_BATTLES_ENV, cluster_play
from tests.cluster.conftest import driver_of, local_cluster

POLICIES = ["random", "max-damage:softmax=0.3", "heuristic:eps=0.2"]


def _generate(
    out: Path, battles: int, seed: int, *, play: PlayBattles | None, workers: int
) -> float:
    start = time.perf_counter()
    generate_dataset(
        out, policies=POLICIES, battles=battles, seed=seed, play=play, num_workers=workers
    )
    return time.perf_counter() - start


def _on_cluster(nodes: int, run: Callable[[PlayBattles], float]) -> tuple[float, str]:
    os.environ[CLUSTER_BATTLES_ENV] = "1"  # Ray tasks on the 1-node cluster too
    with local_cluster(nodes) as cluster, driver_of(cluster):
        play = cluster_play()
        assert play is not None
        seconds = run(play)
        placed = getattr(play, "played_on", {})
        return seconds, " + ".join(str(n) for n in sorted(placed.values(), reverse=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n, seed = args.battles, args.seed
    rows: list[tuple[str, float, str, Path]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        for workers in (1, 2):
            out = folder / f"local{workers}.jsonl.gz"
            seconds = _generate(out, n, seed, play=None, workers=workers)
            rows.append((f"local pool, {workers} node worker(s), no Ray", seconds, "-", out))
        for nodes in (1, 2):
            out = folder / f"ray{nodes}.jsonl.gz"
            seconds, placed = _on_cluster(
                nodes, lambda play, out=out: _generate(out, n, seed, play=play, workers=1)
            )
            rows.append(
                (f"Ray tasks, {nodes}-node local cluster (1 CPU/node)", seconds, placed, out)
            )
        reference = gzip.decompress(rows[0][3].read_bytes())
        print(
            f"machine: {platform.node()} | {platform.processor() or platform.machine()} | "
            f"{os.cpu_count()} CPUs | load average {os.getloadavg()[0]:.1f} | "
            f"python {platform.python_version()} | ray {ray.__version__} | "
            f"pokemon-showdown {find_runtime().version} | {n} battles, seed {seed}"
        )
        print("| how | seconds | battles/s | battles per node | same bytes as row 1 |")
        print("|---|---|---|---|---|")
        for name, seconds, placed, out in rows:
            same = gzip.decompress(out.read_bytes()) == reference
            print(f"| {name} | {seconds:.1f} | {n / seconds:.2f} | {placed} | {same} |")


if __name__ == "__main__":
    main()
