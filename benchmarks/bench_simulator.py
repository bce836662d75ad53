"""Simulator throughput: raw Showdown vs the Python bridge vs the evaluation path.

Runs, in one process on this machine:
1. raw: Showdown's own RandomPlayerAI on both sides, in N node processes, no Python;
2. bridge: random play with the choices made in Python through `SimulatorPool` (random
   legal move as RandomPlayerAI plays, and uniform random over all legal actions);
3. evaluation: `evaluate()` of the heuristic policy against max-damage (full observation
   encoding on every decision);
4. dataset: generation, compile rate and cached load time.
Battles differ in length between policies, so each bridge/evaluation row is also compared
with a replay of exactly the same battles (Showdown's input logs, N node processes, no
Python): "vs replay" is the share of raw simulator speed that path keeps.

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
from typing import Any

import numpy as np

from poke_tune.data.dataset import load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.actions import NUM_MOVES
from poke_tune.sim.battles import BattleResult, BattleSpec, SimulatorPool
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


Row = tuple[int, int, float, float | None]  # battles, turns, seconds, replay seconds


def run_node_workers(script: str, args: list[str], workers: int) -> tuple[list[Any], float]:
    """Run `workers` copies of a benchmark JS script (each gets its index and the worker
    count after `args`); returns their JSON reports and the wall time."""
    runtime = find_runtime()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                runtime.node,
                str(HERE / script),
                str(runtime.package_dir),
                *args,
                str(k),
                str(workers),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(workers)
    ]
    reports = [json.loads(p.communicate()[0]) for p in procs]
    return reports, time.perf_counter() - start


def raw_showdown(battles: int, workers: int) -> Row:
    reports, seconds = run_node_workers("raw_showdown.js", [str(battles // workers)], workers)
    return sum(r["battles"] for r in reports), sum(r["turns"] for r in reports), seconds, None


def replay(results: list[BattleResult], workers: int) -> float:
    """Wall time of replaying exactly these battles in node; checks the winners agree."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as logs:
        json.dump([r.input_log for r in results], logs)
        logs.flush()
        reports, seconds = run_node_workers("replay_showdown.js", [logs.name], workers)
    for k, report in enumerate(reports):
        expected = [r.winner for r in results[k::workers]]
        assert report["winners"] == expected, "a replay diverged from the original battle"
    return seconds


def bridge(policy: object, battles: int, workers: int) -> Row:
    with SimulatorPool(num_workers=workers) as pool:
        list(pool.play([BattleSpec(index=i, p1=policy, p2=policy, seed=99) for i in range(4)]))
        start = time.perf_counter()
        specs = [BattleSpec(index=i, p1=policy, p2=policy, seed=1) for i in range(battles)]  # type: ignore[arg-type]
        results = list(pool.play(specs))
        seconds = time.perf_counter() - start
    return len(results), sum(r.turns for r in results), seconds, replay(results, workers)


def evaluation(battles: int, workers: int) -> Row:
    results: list[BattleResult] = []
    with SimulatorPool(num_workers=workers) as pool:
        result = evaluate(
            make_policy("heuristic"),
            make_policy("max-damage"),
            battles=battles,
            pool=pool,
            on_result=results.append,
        )
    turns = sum(r.turns for r in results)
    return result.battles, turns, result.seconds, replay(results, workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    rows = [
        ("raw Showdown, RandomPlayerAI x2 (node only)", raw_showdown(args.battles, args.workers)),
        (
            "bridge, random move x2 (Python choices)",
            bridge(RandomMovePolicy(), args.battles, args.workers),
        ),
        ("bridge, uniform random x2", bridge(make_policy("random"), args.battles, args.workers)),
        (
            "evaluation, heuristic vs max-damage (encoded obs)",
            evaluation(args.battles, args.workers),
        ),
    ]
    print(
        f"machine: {platform.node()} | {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} CPUs | python {platform.python_version()} | "
        f"pokemon-showdown {find_runtime().version} | {args.workers} node workers"
    )
    print(
        f"{'path':52} {'battles':>7} {'turns/b':>7} {'battles/s':>9} {'turns/s':>8} "
        f"{'replay b/s':>10} {'vs replay':>9}"
    )
    for name, (battles, turns, seconds, replay_seconds) in rows:
        replayed = (
            f"{battles / replay_seconds:10.1f} {replay_seconds / seconds:9.2f}"
            if (replay_seconds)
            else f"{'-':>10} {'-':>9}"
        )
        print(
            f"{name:52} {battles:7d} {turns / battles:7.1f} {battles / seconds:9.1f} "
            f"{turns / seconds:8.0f} {replayed}"
        )

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.jsonl.gz"
        start = time.perf_counter()
        summary = generate_dataset(
            path, policies=["random", "max-damage"], battles=args.battles, num_workers=args.workers
        )
        gen_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        np.asarray(dataset.observations).sum()  # touch every page
        load_seconds = time.perf_counter() - start
    print(
        f"dataset: {summary.battles} battles -> {summary.transitions} transitions, "
        f"{path.name} {summary.battles / gen_seconds:.1f} battles/s generated; "
        f"compile {summary.transitions / compile_seconds:,.0f} transitions/s; "
        f"cached load (all pages read) {load_seconds * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
