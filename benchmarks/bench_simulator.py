"""Simulator throughput: raw Showdown vs the Python bridge vs the evaluation path.

Runs, in one process on this machine:
1. raw: Showdown's own RandomPlayerAI on both sides, in N node processes, no Python;
2. bridge: the same kind of play (random legal move, switch only when forced) with the
   choices made in Python through `SimulatorPool`, and uniform random over all actions;
3. evaluation: `evaluate()` of the heuristic policy against max-damage (full observation
   encoding on every decision);
4. dataset: generation, compile rate and cached load time.
Battles differ in length between policies, so the fair speed ratio is turns/s.

usage: python benchmarks/bench_simulator.py [--battles 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poke_tune.data.dataset import load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.actions import NUM_MOVES
from poke_tune.sim.battles import BattleSpec, SimulatorPool
from poke_tune.sim.policies import PlayerView, make_policy
from poke_tune.sim.runtime import find_runtime

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RandomMovePolicy:
    """Python twin of Showdown's RandomPlayerAI: a random legal move; switch if forced."""

    name: str = "random-move"

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        moves = np.flatnonzero(view.mask[:NUM_MOVES])
        legal = moves if len(moves) else np.flatnonzero(view.mask)
        return int(legal[rng.integers(len(legal))])


def raw_showdown(battles: int, workers: int) -> tuple[int, int, float]:
    runtime = find_runtime()
    per_worker = battles // workers
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [runtime.node, str(HERE / "raw_showdown.js"), str(runtime.package_dir),
             str(per_worker), str(k)],
            stdout=subprocess.PIPE, text=True,
        )
        for k in range(workers)
    ]
    reports = [json.loads(p.communicate()[0]) for p in procs]
    seconds = time.perf_counter() - start
    return sum(r["battles"] for r in reports), sum(r["turns"] for r in reports), seconds


def bridge(policy: object, battles: int, workers: int) -> tuple[int, int, float]:
    with SimulatorPool(num_workers=workers) as pool:
        list(pool.play([BattleSpec(index=i, p1=policy, p2=policy, seed=99) for i in range(4)]))
        start = time.perf_counter()
        specs = [BattleSpec(index=i, p1=policy, p2=policy, seed=1) for i in range(battles)]  # type: ignore[arg-type]
        results = list(pool.play(specs))
        seconds = time.perf_counter() - start
    return len(results), sum(r.turns for r in results), seconds


def evaluation(battles: int, workers: int) -> tuple[int, int, float]:
    with SimulatorPool(num_workers=workers) as pool:
        result = evaluate(
            make_policy("heuristic"), make_policy("max-damage"), battles=battles, pool=pool
        )
    return result.battles, round(result.mean_turns * result.battles), result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    rows = [
        ("raw Showdown, RandomPlayerAI x2 (node only)", raw_showdown(args.battles, args.workers)),
        ("bridge, random move x2 (Python choices)",
         bridge(RandomMovePolicy(), args.battles, args.workers)),
        ("bridge, uniform random x2", bridge(make_policy("random"), args.battles, args.workers)),
        ("evaluation, heuristic vs max-damage (encoded obs)",
         evaluation(args.battles, args.workers)),
    ]
    print(f"machine: {platform.node()} | {platform.processor() or platform.machine()} | "
          f"{os.cpu_count()} CPUs | python {platform.python_version()} | "
          f"pokemon-showdown {find_runtime().version} | {args.workers} node workers")
    raw_tps = rows[0][1][1] / rows[0][1][2]
    print(f"{'path':52} {'battles':>7} {'turns/b':>7} {'battles/s':>9} {'turns/s':>8} "
          f"{'vs raw':>6}")
    for name, (battles, turns, seconds) in rows:
        tps = turns / seconds
        print(f"{name:52} {battles:7d} {turns / battles:7.1f} {battles / seconds:9.1f} "
              f"{tps:8.0f} {tps / raw_tps:6.2f}")

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.jsonl.gz"
        start = time.perf_counter()
        summary = generate_dataset(path, policies=["random", "max-damage"],
                                   battles=args.battles, num_workers=args.workers)
        gen_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        np.asarray(dataset.observations).sum()  # touch every page
        load_seconds = time.perf_counter() - start
    print(f"dataset: {summary.battles} battles -> {summary.transitions} transitions, "
          f"{path.name} {summary.battles / gen_seconds:.1f} battles/s generated; "
          f"compile {summary.transitions / compile_seconds:,.0f} transitions/s; "
          f"cached load (all pages read) {load_seconds * 1000:.0f} ms")


if __name__ == "__main__":
    main()
