"""Ray overhead of a sweep: a Tune sweep vs the same trials run without Ray.

Issue targets: the sweep's wall time at most 10% above the same trials run back to back
with the same concurrency, and the first reported result within 20 s.

(a) Ray: `run_sweep(spec)`: OptunaSearch (random sampler), FIFO scheduler, 2 concurrent
    1-CPU trials, a checkpoint at every evaluation as in the checked-in specs. Timed from
    before `ray.init` (and separately without it). The first result is the moment the
    driver receives a trial's first report (a Tune callback). Not result.json: Tune writes
    it in a staging folder and copies it to the experiment folder only at its periodic
    experiment snapshots, seconds later.
(b) Baseline: the configurations Ray ran (read back from the ResultGrid), each trained by
    `Trainer` + `run_training` in a ProcessPoolExecutor(max_workers=2) (spawned workers,
    one torch thread each, as Ray gives a 1-CPU trial OMP_NUM_THREADS=1); no checkpoints.
    Worker start-up is inside the timing, as Ray's is.

Rounds (`--rounds`, default 2): each round runs both paths, in ABBA order (Ray first, then
the baseline; next round the baseline first), because this VM's speed drifts by +-20% over
minutes and a single pair, minutes apart, measured anything from -0.1% to +14.7%. The
overhead is the sum of the Ray walls over the sum of the baseline walls.

Objective: `offline/action_match`, the held-out agreement with the data's actions. Every
evaluation computes it without battles (and FQE is off), so a trial's time is training
time and the difference isolates Ray. The dataset (60 generated battles, cached) is
prepared before either timer starts. MLflow is off in both paths.

Trial shape: by default IQL with the checked-in specs' 2x256 networks and batch 256, 1,000
steps (half of theirs) with an evaluation and a checkpoint every 250 steps: about 25 s a
trial on one core here. (A checked-in spec's trial trains 2,000 steps, about 50 s, and
plays 120 battles per evaluation.) ray.init and each trial's start are fixed costs, so
short trials show them most: `--steps 300 --hidden 64` (about 3 s a trial) is the worst
case; `--steps 2000` is a checked-in trial's training.

usage: python benchmarks/bench_ray_overhead.py [--trials 16] [--steps 1000] [--hidden 256]
       [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from poke_tune.algos import Trainer, run_training
from poke_tune.data.compiled import OfflineDataset
from poke_tune.tuning.datasets import prepare_dataset
from poke_tune.tuning.search.search import search
from poke_tune.tuning.spec import SearchSpec

CONCURRENCY = 2
TARGETS = "targets (issue): overhead <= 10%, first result <= 20 s"


def make_spec(storage: Path, trials: int, steps: int, hidden: int = 256) -> SearchSpec:
    return SearchSpec.model_validate(
        {
            "name": "ray-overhead",
            "algorithm": {"algo": "iql", "network": {"hidden_sizes": [hidden, hidden]}},
            "dataset": {"generate": {"battles": 60, "seed": 0}},
            "training": {"steps": steps, "eval_interval": max(steps // 4, 1), "fqe_steps": 0},
            "objective": {"metric": "offline/action_match", "mode": "max"},
            "search_space": {
                "expectile": {"type": "float", "low": 0.6, "high": 0.9},
                "temperature": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
            },
            "searcher": {"algorithm": "random", "seed": 0},
            "scheduler": {"type": "fifo"},
            "num_samples": trials,
            "max_concurrent_trials": CONCURRENCY,
            "resources": {"cpu": 1, "gpu": 0},
            "storage_path": str(storage),
            # Ray's overhead only: the baseline logs nothing either.
            "mlflow": {"enabled": False},
        }
    )


class FirstResult(tune.Callback):
    """Records when the driver receives the sweep's first trial result."""

    def __init__(self) -> None:
        self.time: float | None = None

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.time = self.time or time.time()


def run_ray(spec: SearchSpec, log: Path) -> dict[str, Any]:
    """The sweep under Ray; returns timings and the configurations it ran."""
    first = FirstResult()
    start = time.time()
    with log.open("w") as sink, contextlib.redirect_stdout(sink):
        ray.init(include_dashboard=False, log_to_driver=True)  # as the search would
        ready = time.time()
        grid = search(spec, prepare_dataset(spec), callbacks=[first]).results  # cached
        end = time.time()
        ray.shutdown()
    results = [grid[i] for i in range(len(grid))]  # a ResultGrid is not typed iterable
    errors = [r.error for r in results if r.error is not None]
    if errors or len(results) != spec.num_samples:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"sweep failed ({len(errors)} errors): {errors[:1]}\n{tail}")
    return {
        "start": start,
        "init_s": ready - start,
        "wall_s": end - start,
        "first": first.time or float("nan"),
        "trial_s": sum((r.metrics or {})["time_total_s"] for r in results) / len(results),
        "configs": [dict(r.config or {}) for r in results],
    }


def _train_one(
    spec_json: str, config: dict[str, Any], dataset: OfflineDataset
) -> tuple[float, float, float]:
    """One trial without Ray: start, first evaluation and end times."""
    torch.set_num_threads(1)
    start = time.time()
    spec = SearchSpec.model_validate_json(spec_json)
    trainer = Trainer(spec.algorithm_config(config), spec.training, dataset)
    first = 0.0
    for _ in run_training(trainer):
        first = first or time.time()
    return start, first, time.time()


def run_baseline(
    spec: SearchSpec, dataset: OfflineDataset, configs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The same configurations, CONCURRENCY at a time in plain worker processes."""
    start = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=CONCURRENCY, mp_context=context) as pool:
        spec_json = spec.model_dump_json()
        futures = [pool.submit(_train_one, spec_json, c, dataset) for c in configs]
        times = [f.result() for f in futures]
    return {
        "start": start,
        "init_s": 0.0,
        "wall_s": time.time() - start,
        "first": min(first for _, first, _ in times),
        "trial_s": sum(end - begin for begin, _, end in times) / len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=256, help="units of both hidden layers")
    parser.add_argument("--rounds", type=int, default=2, help="Ray/baseline pairs, ABBA order")
    args = parser.parse_args()

    runs: list[tuple[int, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        specs = [
            make_spec(Path(scratch) / f"ray{round_}", args.trials, args.steps, args.hidden)
            for round_ in range(args.rounds)  # the same sweep, a fresh storage folder each
        ]
        dataset = prepare_dataset(specs[0])  # generated once, then cached: outside the timings
        configs: list[dict[str, Any]] = []
        for round_, spec in enumerate(specs):
            # The seeded sampler proposes the same configurations every round, so a round
            # may run the baseline first (round 1 runs Ray first to learn them): ABBA order
            # cancels a linear drift of the VM's speed.
            order = ["ray", "base"] if round_ % 2 == 0 else ["base", "ray"]
            for path in order:
                if path == "ray":
                    run = run_ray(spec, Path(scratch) / "tune.log")
                    configs = run["configs"]
                else:
                    run = run_baseline(spec, dataset, configs)
                runs.append((round_, path, run))

    print(
        f"machine: {platform.node()} | {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} CPUs | python {platform.python_version()} | torch {torch.__version__}"
        f" | ray {ray.__version__}"
    )
    print(
        f"sweep: {args.trials} IQL trials x {args.steps} steps ({args.hidden}x{args.hidden}, "
        f"batch 256, 4 evaluations), {len(dataset.rewards)} transitions, {CONCURRENCY} "
        f"concurrent, 1 CPU each; {args.rounds} rounds; {TARGETS}"
    )
    print(
        f"{'round':>5} {'path':32} {'wall s':>7} {'ray.init s':>10} {'in-trial s':>10} "
        f"{'first result s':>14}"
    )
    names = {"ray": "Ray Tune (incl. ray.init)", "base": f"ProcessPoolExecutor({CONCURRENCY})"}
    for round_, path, run in runs:
        print(
            f"{round_ + 1:5d} {names[path]:32} {run['wall_s']:7.1f} {run['init_s']:10.1f} "
            f"{run['trial_s']:10.2f} {run['first'] - run['start']:14.1f}"
        )
    ray_runs = [run for _, path, run in runs if path == "ray"]
    base_wall = sum(run["wall_s"] for _, path, run in runs if path == "base")
    ray_wall = sum(run["wall_s"] for run in ray_runs)
    init = sum(run["init_s"] for run in ray_runs)
    worst_first = max(run["first"] - run["start"] for run in ray_runs)
    print(
        f"overhead over all rounds: {100 * (ray_wall / base_wall - 1):.1f}% including ray.init, "
        f"{100 * ((ray_wall - init) / base_wall - 1):.1f}% excluding it; slowest first "
        f"result under Ray: {worst_first:.1f} s (from before ray.init)"
    )
    print("in-trial = a trial's own time (Tune's time_total_s or the worker's clock), averaged")


if __name__ == "__main__":
    main()
