"""Policy quality: does offline RL beat the data it learned from, and does tuning matter?

On one dataset recipe (default: the quick start's, from `search_spaces/cql_alpha.yaml`),
every policy below plays the same battles seeded by `BENCHMARK_SEED` (never used for
selection or confirmation) against each opponent (default: max-damage and heuristic):
1. the recipe's behaviour policies (the built-in policies that generated the data);
2. BC, IQL and CQL, each with flat and with action-centric networks (`network.kind`), at
   their defaults and at their tuned settings (`TUNED`: what the sweeps and issue 19's
   measurements found), plus IQL at the paper's setting (raw advantage, beta 3) as the
   before-row of the advantage normalisation; trained with the spec's training settings
   (`--steps` overrides the length);
3. the headline rows (`HEADLINE`) once per training seed of `--seeds`, then their mean
   and spread;
4. any `--champion`: a training checkpoint (`.pt`), an experiment folder (its registered
   `@champion` model) or a `models:/NAME@ALIAS` URI.
Each row gives the paired difference to flat BC, training seed 0 (`paired_difference` on
the per-battle outcomes), with 95% intervals, and the share of the policy's decisions that
terastallize and that switch. It prints the table and the machine.

usage: python benchmarks/bench_quality.py [--spec SPEC] [--battles 1000] [--steps N]
       [--opponents max-damage,heuristic] [--seeds 0,1,2] [--champion PATH_OR_URI ...]
       [--only LABEL_SUBSTRING ...] [--workers 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poke_tune.algos import LearnedPolicy, Trainer, load_policy, parse_algo_config, run_training
from poke_tune.data.compiled import OfflineDataset
from poke_tune.eval.paired import paired_difference
from poke_tune.eval.winrate import BENCHMARK_SEED, WinRate, evaluate
from poke_tune.sim.actions import action_parts
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import PlayerView, Policy, make_policy
from poke_tune.tuning.datasets import prepare_dataset
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.spec_file import load_spec

ROOT = Path(__file__).resolve().parents[1]
BC_REFERENCE = "BC default, flat"
TUNED: dict[str, dict[str, Any]] = {
    # IQL: the paper's setting (beta 3 on the raw advantage) is a row of its own.
    "IQL paper (raw advantage, beta 3)": {
        "algo": "iql",
        "normalize_advantage": False,
        "temperature": 3.0,
    },
    "CQL tuned (alpha 0.33)": {"algo": "cql", "alpha": 0.33},  # the quick start sweep's pick
}
HEADLINE = ("IQL default, action", "CQL tuned (alpha 0.33), action")


@dataclass
class Row:
    policy: str
    opponent: str
    result: WinRate
    tera: float
    switch: float
    vs_bc: str = ""


@dataclass
class CountingPolicy:
    """Plays `policy`; counts the kinds of action it takes (move, switch, tera move)."""

    policy: Policy
    kinds: list[int] = field(default_factory=lambda: [0, 0, 0])

    @property
    def name(self) -> str:
        return self.policy.name

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        action = self.policy.act(view, rng)
        self.kinds[action_parts(action)[0]] += 1
        return action


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def _recipe_label(spec: SearchSpec) -> str:
    recipe = spec.dataset.generate
    if recipe is None:
        return str(spec.dataset.path)
    shaping = f", hp_shaping {recipe.hp_shaping:g}" if recipe.hp_shaping else ""
    return f"{recipe.battles} battles {'+'.join(recipe.policies)}{shaping}"


def _learners() -> dict[str, dict[str, Any]]:
    """Label -> algorithm config values, flat and action-centric."""
    settings = {
        "BC default": {"algo": "bc"},
        "IQL default": {"algo": "iql"},
        "CQL default (alpha 1)": {"algo": "cql"},
        **TUNED,
    }
    learners = {
        f"{label}, {kind}": values | {"network": {"kind": kind}}
        for label, values in settings.items()
        for kind in ("flat", "action")
    }
    # Issue 19's speed aim: smaller slot encoders and heads (about 1.6x the flat step
    # time instead of 1.7-2.1x): what do they cost in play?
    small = {"kind": "action", "slot_embedding": 32, "head_sizes": [32]}
    learners["IQL default, action small (slot 32, head 32)"] = {"algo": "iql", "network": small}
    return learners


def _train(
    spec: SearchSpec, values: dict[str, Any], dataset: OfflineDataset, seed: int, steps: int
) -> Any:
    config = parse_algo_config(values)
    updates: dict[str, Any] = {"fqe_steps": 0, "seed": seed, "device": "cpu"}
    if steps:
        updates["steps"] = steps
    training = spec.training.model_copy(update=updates)
    trainer = Trainer(config, training, dataset)
    start = time.perf_counter()
    for _ in run_training(trainer):
        pass
    trainer.algorithm.train(False)
    print(f"  trained {config.algo} {training.steps} steps in {time.perf_counter() - start:.0f} s")
    return trainer.algorithm


def _champion(source: str) -> Policy:
    if source.startswith("models:/"):
        from poke_tune.tuning.policies import load_registered_policy

        return load_registered_policy(source)
    path = Path(source)
    if path.is_dir():
        from poke_tune.tuning.experiment import Experiment
        from poke_tune.tuning.locations import resolve_tracking_uri
        from poke_tune.tuning.policies import load_registered_policy
        from poke_tune.tuning.track.registry import registered_name

        spec = Experiment.open(path).spec
        uri = resolve_tracking_uri(spec.mlflow.tracking_uri, spec.storage_path)
        policy = load_registered_policy(f"models:/{registered_name(spec)}@champion", uri)
        policy.name = f"champion {spec.name}"
        return policy
    return load_policy(path.resolve())


def _seed_summary(rows: list[Row], label: str, seeds: list[int]) -> list[str]:
    """Mean and spread over the training seeds of a headline row, per opponent."""
    lines = []
    for opponent in dict.fromkeys(r.opponent for r in rows):
        rates = [
            r.result.win_rate
            for r in rows
            if r.opponent == opponent and r.policy.startswith(label + " seed ")
        ]
        if len(rates) > 1:
            lines.append(
                f"{label} vs {opponent}: mean {statistics.mean(rates):.3f}, sd "
                f"{statistics.stdev(rates):.3f}, range {min(rates):.3f}-{max(rates):.3f} "
                f"over training seeds {seeds}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "search_spaces" / "cql_alpha.yaml")
    parser.add_argument("--battles", type=int, default=1000, help="battles per number")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: the spec's)")
    parser.add_argument("--opponents", default="max-damage,heuristic")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the headline rows")
    parser.add_argument("--champion", action="append", default=[], help="checkpoint, folder, URI")
    parser.add_argument("--only", action="append", default=[], help="rows whose label has this")
    parser.add_argument("--workers", type=int, default=1, help="simulator workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED, help="battle-set seed")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    opponents = [make_policy(name) for name in args.opponents.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, {args.workers} simulator worker(s)"
    )
    print(f"battles: {args.battles} per number, seed {args.seed} (BENCHMARK_SEED by default)")
    print(f"recipe: {_recipe_label(spec)} ({args.spec.name}); training {spec.training}")
    dataset = prepare_dataset(spec.dataset)
    rows: list[Row] = []

    with SimulatorPool(num_workers=args.workers) as pool:

        def play(policy: Policy, label: str) -> None:
            for opponent in opponents:
                counting = CountingPolicy(policy)
                result = evaluate(
                    counting, opponent, battles=args.battles, seed=args.seed, pool=pool
                )
                decisions = max(1, sum(counting.kinds))
                row = Row(
                    label,
                    opponent.name,
                    result,
                    tera=counting.kinds[2] / decisions,
                    switch=counting.kinds[1] / decisions,
                )
                rows.append(row)
                print(f"  {label:<44} vs {opponent.name:<11} {result.win_rate:.3f}", flush=True)

        generate = spec.dataset.generate
        for name in dict.fromkeys(generate.policies) if generate else []:
            play(make_policy(name), f"{name} (behaviour)")
        for label, values in _learners().items():
            label_seeds = seeds if label in HEADLINE else [seeds[0]]
            for seed in label_seeds:
                shown = f"{label} seed {seed}" if label in HEADLINE else label
                if args.only and label != BC_REFERENCE and not any(s in shown for s in args.only):
                    continue
                algorithm = _train(spec, dict(values), dataset, seed, args.steps)
                play(LearnedPolicy(shown, algorithm.action_scores), shown)
        for source in args.champion:
            play(_champion(source), f"champion {Path(source).name}")

    bc = {r.opponent: r.result for r in rows if r.policy == BC_REFERENCE}
    for row in rows:
        if row.opponent in bc and row.policy != BC_REFERENCE:
            d = paired_difference(row.result.won, bc[row.opponent].won)
            row.vs_bc = f"{d.difference:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"

    print()
    print(f"| policy | opponent | win rate [95% CI] | paired vs {BC_REFERENCE} | tera | switch |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        r = row.result
        print(
            f"| {row.policy} | {row.opponent} | {r.win_rate:.3f} [{r.ci_low:.3f}, "
            f"{r.ci_high:.3f}] | {row.vs_bc or '-'} | {row.tera:.1%} | {row.switch:.1%} |"
        )
    for label in HEADLINE:
        for line in _seed_summary(rows, label, seeds):
            print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "policy": row.policy,
                        "opponent": row.opponent,
                        "win_rate": row.result.win_rate,
                        "ci": [row.result.ci_low, row.result.ci_high],
                        "battles": row.result.battles,
                        "vs_bc": row.vs_bc,
                        "tera": row.tera,
                        "switch": row.switch,
                        "won": list(row.result.won),
                    }
                    for row in rows
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
