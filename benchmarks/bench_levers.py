"""What the flywheel's levers do to one round's winner, over training seeds (issue 34).

For round R of a `poke-tune iterate` loop folder, the round winner's hyperparameters are
trained again outside Ray, once per lever and training seed, and every policy plays the
same benchmark battles (`BENCHMARK_SEED`: apart from the sweep's selection, the
confirmation, the loop's curve and its promotion battles) against each `--opponents`:

- `baseline`: what the loop trains: all rounds' data, the spec's steps, from scratch;
- `window=W`: only the last W rounds' data (`rounds.window`);
- `steps=xK`: K times the spec's steps (steps that grow with the data);
- `fine-tune`: all rounds' data, the spec's steps, started from the networks of the
  champion the round began with (`Trainer.fine_tune_from`).

Beside them on the same battles: the sweep's own winner of round R (its checkpoint was
chosen at the best of the trial's evaluations, so it is a selected one) and the champion
the round began with. Printed per run: the win rate with its 95% interval and the paired
difference to the baseline of the first seed and to that champion; per lever, the mean
over seeds and their spread (max - min) beside the battle interval's half-width.

    python benchmarks/bench_levers.py runs/ray/LOOP --round 2 [--seeds 0 1 2]
        [--levers baseline window=2 steps=x2 fine-tune] [--battles 1000]
        [--opponents heuristic max-damage] [--work runs/levers] [--workers 2]

Trained checkpoints are kept in `--work` (a rerun skips them); rows append to
`--work/levers.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from poke_tune.algos import TrainConfig, Trainer, load_policy, run_training
from poke_tune.algos.table import parse_algo_config
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
from poke_tune.eval.paired import paired_difference
from poke_tune.eval.winrate import BENCHMARK_SEED, WinRate, evaluate
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.tuning.loop.folder import Loop
from poke_tune.tuning.loop.plan import round_parts
from poke_tune.tuning.policies import resolve_policy
from poke_tune.tuning.track.registry import CHECKPOINT_TAG


@dataclass(frozen=True)
class Run:
    """One training run of the study: a lever at a training seed."""

    lever: str
    seed: int
    data: Path
    train: TrainConfig
    fine_tune_from: Path | None
    checkpoint: Path


def _champion_checkpoint(name: str, tracking_uri: str | None) -> Path:
    """The training checkpoint behind a champion's name (a file, or a registered version's
    tagged checkpoint)."""
    if not name.startswith("models:/"):
        return Path(name)
    from mlflow import MlflowClient

    model, version = name.removeprefix("models:/").rsplit("/", 1)
    tags = MlflowClient(tracking_uri=tracking_uri).get_model_version(model, version).tags
    return Path(tags[CHECKPOINT_TAG])


def plan_runs(args: argparse.Namespace, loop: Loop) -> list[Run]:
    record = loop.read()
    current = record.rounds[args.round]
    champion = record.rounds[args.round - 1].champion
    files = [r.generated for r in record.rounds[: args.round + 1]]
    steps = args.steps or loop.spec.training.steps
    base = loop.spec.training.model_copy(
        update={"steps": steps, "fqe_steps": 0, "eval_interval": steps}
    )
    runs = []
    for lever in args.levers:
        data, train, start = Path(current.dataset), base, None
        if lever.startswith("window="):
            parts = [Path(p) for p in round_parts(files, int(lever.split("=")[1]))]
            data = args.work / f"round{args.round}-{lever}.json"
            if not data.is_file():
                combine_datasets(parts, data)
        elif lever.startswith("steps=x"):
            steps = base.steps * int(lever.removeprefix("steps=x"))
            train = base.model_copy(update={"steps": steps, "eval_interval": steps})
        elif lever == "fine-tune":
            assert champion is not None
            start = _champion_checkpoint(champion, loop.spec.mlflow.tracking_uri)
        elif lever != "baseline":
            raise SystemExit(f"unknown lever {lever!r}: baseline, window=W, steps=xK, fine-tune")
        for seed in args.seeds:
            name = f"round{args.round}-{lever}-seed{seed}.pt"
            runs.append(
                Run(
                    lever,
                    seed,
                    data,
                    train.model_copy(update={"seed": seed}),
                    start,
                    args.work / name,
                )
            )
    return runs


def train_run(run: Run, algo_json: str) -> float:
    """Train one run to its end (one torch thread: two run side by side); its seconds."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    trainer = Trainer(parse_algo_config(json.loads(algo_json)), run.train, load_dataset(run.data))
    if run.fine_tune_from is not None:
        trainer.fine_tune_from(run.fine_tune_from)
    for _ in run_training(trainer):
        pass
    trainer.save(run.checkpoint)
    return time.perf_counter() - started


def _row(rate: WinRate, baseline: WinRate, champion: WinRate, label: str) -> str:
    def paired(other: WinRate) -> str:
        d = paired_difference(rate.won, other.won)
        return f"{d.difference:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"

    return (
        f"| {label} | {rate.opponent} | {rate.win_rate:.3f} [{rate.ci_low:.3f}, "
        f"{rate.ci_high:.3f}] | {paired(baseline)} | {paired(champion)} |"
    )


def train_all(runs: list[Run], algo_json: str, workers: int) -> None:
    """Train the runs not yet in the work folder, `workers` at a time."""
    todo = [r for r in runs if not r.checkpoint.is_file()]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        seconds = pool.map(train_run, todo, [algo_json] * len(todo))
        for run, took in zip(todo, seconds, strict=True):
            print(f"trained {run.lever} seed {run.seed}: {took:.0f} s", flush=True)


def play_all(
    policies: list[tuple[str, Policy]], args: argparse.Namespace
) -> dict[tuple[str, str], WinRate]:
    """Every policy on the same benchmark battles against each opponent (rows logged)."""
    rates: dict[tuple[str, str], WinRate] = {}
    with (
        SimulatorPool(num_workers=args.workers) as sim,
        open(args.work / "levers.jsonl", "a") as log,
    ):
        for opponent in args.opponents:
            for label, policy in policies:
                rate = evaluate(
                    policy,
                    make_policy(opponent),
                    battles=args.battles,
                    seed=BENCHMARK_SEED,
                    pool=sim,
                )
                rates[label, opponent] = rate
                log.write(
                    json.dumps({"round": args.round, "label": label, **rate.to_dict()}) + "\n"
                )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("loop", type=Path, help="the loop folder (storage_path/NAME)")
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--levers", nargs="+", default=["baseline", "window=2", "steps=x2", "fine-tune"]
    )
    parser.add_argument("--steps", type=int, help="the baseline's steps (default: the spec's)")
    parser.add_argument("--battles", type=int, default=1000)
    parser.add_argument("--opponents", nargs="+", default=["heuristic"])
    parser.add_argument("--work", type=Path, default=Path("runs/levers"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.work = args.work.resolve() / args.loop.name
    args.work.mkdir(parents=True, exist_ok=True)
    loop = Loop.open(args.loop.resolve())
    record = loop.read()
    if not 1 <= args.round < len(record.rounds) or not record.rounds[args.round].winner:
        raise SystemExit(f"round {args.round} of {args.loop} has no winner yet")
    current, tracking_uri = record.rounds[args.round], loop.spec.mlflow.tracking_uri
    runs = plan_runs(args, loop)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"loop {args.loop}, round {args.round}: {current.transitions:,} transitions, "
        f"hyperparameters {current.best_params}, {runs[0].train.steps} steps"
    )
    algo_json = loop.spec.algorithm_config(current.best_params).model_dump_json()
    train_all(runs, algo_json, args.workers)

    champion = f"champion before round {args.round}"
    policies: list[tuple[str, Policy]] = [
        *((f"{r.lever} seed {r.seed}", load_policy(r.checkpoint)) for r in runs),
        (f"round {args.round} sweep winner", resolve_policy(current.winner or "", tracking_uri)),
        (champion, resolve_policy(record.rounds[args.round - 1].champion or "", tracking_uri)),
    ]
    rates = play_all(policies, args)
    baseline = f"{args.levers[0]} seed {args.seeds[0]}"
    print(f"\n{args.battles} battles each, seed {BENCHMARK_SEED}, paired\n")
    print(f"| policy | opponent | win rate [95% CI] | vs {baseline} | vs {champion} |")
    print("|---|---|---|---|---|")
    for opponent in args.opponents:
        for label, _ in policies:
            print(
                _row(
                    rates[label, opponent],
                    rates[baseline, opponent],
                    rates[champion, opponent],
                    label,
                )
            )
    print(
        "\n| lever | opponent | mean over seeds | seed spread (max - min) | battle CI half-width |"
    )
    print("|---|---|---|---|---|")
    for lever in args.levers:
        for opponent in args.opponents:
            per_seed = [rates[f"{lever} seed {s}", opponent] for s in args.seeds]
            values = [r.win_rate for r in per_seed]
            half = statistics.mean((r.ci_high - r.ci_low) / 2 for r in per_seed)
            print(
                f"| {lever} | {opponent} | {statistics.mean(values):.3f} | "
                f"{max(values) - min(values):.3f} | {half:.3f} |"
            )


if __name__ == "__main__":
    main()
