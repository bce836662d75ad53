"""Simulator throughput: raw Showdown vs the Python bridge vs the evaluation path.

Runs, in one process on this machine:
1. raw: Showdown's own RandomPlayerAI on both sides, in N node processes, no Python;
2. bridge: random play with the choices made in Python through `SimulatorPool` (random
   legal move as RandomPlayerAI plays, and uniform random over all legal actions);
3. evaluation: `evaluate()` of the heuristic policy against max-damage (rule-based, no
   observation encoding), and of a linear policy on the obs-v1 observation against
   max-damage (stands in for a learned policy: every decision is encoded);
4. dataset: generation, import (the same battles written as server logs, re-simulated,
   verified and written: `poke-tune data import`), compile rate and cached load time.

Battles differ in length between policies, so each bridge/evaluation row is also compared
with node-only replays of exactly the same battles (Showdown's input logs, N node
processes, no Python), in two modes (see replay_showdown.js):
- "choice": one write per choice, so the simulator produces every request and log update
  as in a played battle: the raw cost of an interactive battle, the fair baseline;
- "batch": the whole log in one write: the simulator then skips serialising the requests
  in between, a pure re-simulation that no player-driven battle can match.
"vs" columns are the share of that replay's speed the path keeps (1.00 = as fast).

Every measured part starts warm (node workers started and past their first battles).
The machine is shared, so wall-clock speed depends on what else runs; CPU ms/battle
(the Python process plus its node workers, or the node replay processes) does not, and
"CPU vs choice" (choice-replay CPU / path CPU) is the load-independent efficiency share.

usage: python benchmarks/bench_simulator.py [--battles 300] [--workers 2] [--dataset-only]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poke_tune.data.compiled import load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.data.importer import import_battles
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.actions import NUM_ACTIONS, NUM_MOVES
from poke_tune.sim.battle_records import BattleResult, BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import load_dex
from poke_tune.sim.encoding import ObservationEncoder
from poke_tune.sim.policies import PlayerView, Policy, make_policy
from poke_tune.sim.replay import spectator_log
from poke_tune.sim.runtime import find_runtime

HERE = Path(__file__).resolve().parent
REPLAY_MODES = ("choice", "batch")


@dataclass(frozen=True)
class RandomMovePolicy:
    """Python twin of Showdown's RandomPlayerAI: a random legal move; switch if forced."""

    name: str = "random-move"

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        moves = np.flatnonzero(view.mask[:NUM_MOVES])
        legal = moves if len(moves) else np.flatnonzero(view.mask)
        return int(legal[rng.integers(len(legal))])


@dataclass(frozen=True)
class LinearObservationPolicy:
    """Stands in for a learned policy: masked argmax of fixed random linear scores of the
    obs-v1 observation, so every decision pays for the encoding as a network would."""

    weights: np.ndarray = field(repr=False)
    name: str = "linear-obs"

    @classmethod
    def random(cls, observation_size: int, seed: int = 0) -> LinearObservationPolicy:
        rng = np.random.default_rng(seed)
        return cls(rng.standard_normal((NUM_ACTIONS, observation_size)).astype(np.float32))

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        scores = self.weights @ view.observation
        scores[~view.mask] = -np.inf
        return int(scores.argmax())


@dataclass
class Row:
    """One measured path."""

    name: str
    battles: int
    turns: int
    seconds: float
    cpu_seconds: float  # nan where it could not be read
    replays: dict[str, Row] = field(default_factory=dict)  # by replay mode


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a live process (Linux /proc; else nan)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_node_workers(script: str, args: list[str], workers: int) -> tuple[list[Any], float]:
    """Run `workers` copies of a benchmark JS script (each gets its index and the worker
    count after `args`), release them together once all are warm (see node_bench.js);
    returns their JSON reports and the wall time of the measured part."""
    runtime = find_runtime()
    command = [runtime.node, str(HERE / script), str(runtime.package_dir), *args]
    procs = [
        subprocess.Popen(
            [*command, str(k), str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(workers)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = [json.loads(proc.communicate()[0]) for proc in procs]
    return reports, time.perf_counter() - start


def raw_showdown(battles: int, workers: int) -> Row:
    reports, seconds = run_node_workers("raw_showdown.js", [str(battles // workers)], workers)
    return Row(
        "raw Showdown, RandomPlayerAI x2 (node only)",
        sum(r["battles"] for r in reports),
        sum(r["turns"] for r in reports),
        seconds,
        sum(r["cpu_seconds"] for r in reports),
    )


def replay(results: list[BattleResult], workers: int, mode: str) -> Row:
    """Replay exactly these battles in node (`mode`: choice or batch); checks the winners."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as logs:
        json.dump([r.input_log for r in results], logs)
        logs.flush()
        reports, seconds = run_node_workers("replay_showdown.js", [logs.name, mode], workers)
    for k, report in enumerate(reports):
        expected = [r.winner for r in results[k::workers]]
        assert report["winners"] == expected, "a replay diverged from the original battle"
    turns = sum(r.turns for r in results)
    cpu = sum(r["cpu_seconds"] for r in reports)
    return Row(f"replay ({mode})", len(results), turns, seconds, cpu)


def measured_play(
    name: str, pool: SimulatorPool, play: Any, workers: int
) -> tuple[Row, list[BattleResult]]:
    """Time `play()` (which returns its battle results) on a warm pool: wall and CPU."""
    pids = pool.worker_pids()
    node_before = sum(cpu_seconds(pid) for pid in pids)
    python_before = time.process_time()
    start = time.perf_counter()
    results: list[BattleResult] = play()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - python_before + sum(cpu_seconds(p) for p in pids) - node_before
    assert pool.worker_pids() == pids, "a worker was restarted: its CPU time is lost"
    row = Row(name, len(results), sum(r.turns for r in results), seconds, cpu)
    results.sort(key=lambda r: r.spec.index)
    row.replays = {mode: replay(results, workers, mode) for mode in REPLAY_MODES}
    return row, results


def bridge(name: str, policy: Policy, battles: int, workers: int) -> Row:
    with SimulatorPool(num_workers=workers) as pool:
        list(pool.play([BattleSpec(index=i, p1=policy, p2=policy, seed=99) for i in range(4)]))
        specs = [BattleSpec(index=i, p1=policy, p2=policy, seed=1) for i in range(battles)]
        return measured_play(name, pool, lambda: list(pool.play(specs)), workers)[0]


def evaluation(name: str, policy: Policy, battles: int, workers: int) -> Row:
    opponent = make_policy("max-damage")
    with SimulatorPool(num_workers=workers) as pool:
        evaluate(policy, opponent, battles=4, seed=99, pool=pool)  # warm-up

        def play() -> list[BattleResult]:
            results: list[BattleResult] = []
            evaluate(policy, opponent, battles=battles, pool=pool, on_result=results.append)
            return results

        return measured_play(name, pool, play, workers)[0]


def _versus(row: Row, mode: str) -> str:
    """A replay's battles/s and the share of it that `row` keeps (its speed / replay's)."""
    replayed = row.replays.get(mode)
    if replayed is None:
        return f"{'-':>10} {'-':>5}"
    return f"{replayed.battles / replayed.seconds:10.1f} {replayed.seconds / row.seconds:5.2f}"


def print_table(rows: list[Row]) -> None:
    print(
        f"{'path':52} {'battles':>7} {'turns/b':>7} {'battles/s':>9} {'CPU ms/b':>8} "
        f"{'choice b/s':>10} {'vs':>5} {'batch b/s':>10} {'vs':>5} {'CPU vs choice':>13}"
    )
    for row in rows:
        choice = row.replays.get("choice")
        cpu_share = f"{choice.cpu_seconds / row.cpu_seconds:13.2f}" if choice else f"{'-':>13}"
        print(
            f"{row.name:52} {row.battles:7d} {row.turns / row.battles:7.1f} "
            f"{row.battles / row.seconds:9.1f} {1000 * row.cpu_seconds / row.battles:8.1f} "
            f"{_versus(row, 'choice')} {_versus(row, 'batch')} {cpu_share}"
        )


def write_server_log(folder: Path, result: BattleResult) -> None:
    """A generated battle as a server writes it (exact-HP log, input log, room id)."""
    log = {
        "inputLog": result.input_log,
        "log": spectator_log(result.log, "omniscient"),
        "roomid": f"battle-gen9randombattle-{result.spec.index}",
        "format": result.spec.battle_format,
    }
    (folder / f"{result.spec.index}.log.json").write_bytes(json.dumps(log).encode())


def dataset_rates(battles: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.jsonl.gz"
        logs = Path(scratch) / "logs"
        logs.mkdir()
        start = time.perf_counter()
        summary = generate_dataset(
            path,
            policies=["random", "max-damage"],
            battles=battles,
            num_workers=workers,
            on_result=lambda result: write_server_log(logs, result),
            keep_logs=True,  # costs generate the log copy and one file write per battle
        )
        gen_seconds = time.perf_counter() - start
        start = time.perf_counter()
        imported = import_battles([logs], Path(scratch) / "imported.jsonl.gz", num_workers=workers)
        import_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        dataset = load_dataset(path, cache_root=Path(scratch) / "cache")
        np.asarray(dataset.observations).sum()  # touch every page
        load_seconds = time.perf_counter() - start
    gen_rate, import_rate = summary.battles / gen_seconds, imported.imported / import_seconds
    print(
        f"dataset: {summary.battles} battles -> {summary.transitions} transitions, "
        f"{path.name} {gen_rate:.1f} battles/s generated; "
        f"imported {imported.imported} ({imported.refused} refused) {import_rate:.1f} battles/s "
        f"({import_rate / gen_rate:.2f}x generate); "
        f"compile {summary.transitions / compile_seconds:,.0f} transitions/s; "
        f"cached load (all pages read) {load_seconds * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dataset-only", action="store_true", help="Only part 4.")
    args = parser.parse_args()
    n, workers = args.battles, args.workers
    if args.dataset_only:
        dataset_rates(n, workers)
        return

    linear = LinearObservationPolicy.random(ObservationEncoder(load_dex()).size)
    rows = [
        raw_showdown(n, workers),
        bridge("bridge, random move x2 (Python choices)", RandomMovePolicy(), n, workers),
        bridge("bridge, uniform random x2", make_policy("random"), n, workers),
        evaluation("evaluation, heuristic vs max-damage", make_policy("heuristic"), n, workers),
        evaluation("evaluation, linear on obs-v1 vs max-damage", linear, n, workers),
    ]
    print(
        f"machine: {platform.node()} | {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} CPUs | load average {os.getloadavg()[0]:.1f} | "
        f"python {platform.python_version()} | pokemon-showdown {find_runtime().version} | "
        f"{workers} node workers"
    )
    print_table(rows)
    dataset_rates(n, workers)


if __name__ == "__main__":
    main()
