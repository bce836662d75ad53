"""Policy quality: does offline RL beat the data it learned from?

For each distinct dataset recipe of the given specs (default: every checked-in
`search_spaces/*.yaml`), on battles seeded by `BENCHMARK_SEED` (never used for selection or
confirmation), against each opponent (default: max-damage and heuristic):
1. the recipe's behaviour policies (the built-in policies that generated the data);
2. BC, IQL and CQL at their default hyperparameters, trained on the recipe's data with the
   spec's training settings (`--steps` overrides the length);
3. each spec's own settings: its fixed `algorithm:` values with its first warm-start point
   (the configuration the sweep tries first), labelled `<algo> (<spec name>)`, when they
   differ from the defaults;
4. any `--champion`: a training checkpoint (`.pt`), an experiment folder (its registered
   `@champion` model) or a `models:/NAME@ALIAS` URI.
Every policy plays the same battles, so each row also gives the paired difference to BC
(`poke_tune.eval.paired.paired_difference` on the per-battle outcomes), with 95% intervals.
It prints the table and the machine (CPU model, cores, torch threads).

usage: python benchmarks/bench_quality.py [SPEC ...] [--battles 1000] [--steps N]
       [--opponents max-damage,heuristic] [--champion PATH_OR_URI ...] [--workers 1]
       [--train-seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from poke_tune.algos import LearnedPolicy, Trainer, load_policy, parse_algo_config, run_training
from poke_tune.data.dataset import OfflineDataset
from poke_tune.eval.paired import paired_difference
from poke_tune.eval.winrate import BENCHMARK_SEED, WinRate, evaluate
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.tuning.search import prepare_dataset
from poke_tune.tuning.spec import SearchSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    recipe: str
    policy: str
    opponent: str
    result: WinRate
    vs_bc: str = ""


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


def _train(spec: SearchSpec, values: dict[str, Any], dataset: OfflineDataset, args: Any) -> Any:
    config = parse_algo_config(values)
    updates: dict[str, Any] = {"fqe_steps": 0, "seed": args.train_seed, "device": "cpu"}
    if args.steps:
        updates["steps"] = args.steps
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
        from poke_tune.tuning.registry import load_registered_policy

        return load_registered_policy(source)
    path = Path(source)
    if path.is_dir():
        from poke_tune.tuning.experiment import spec_of
        from poke_tune.tuning.registry import load_registered_policy, registered_name
        from poke_tune.tuning.spec import resolve_tracking_uri

        spec = spec_of(path)
        uri = resolve_tracking_uri(spec.mlflow.tracking_uri, spec.storage_path)
        policy = load_registered_policy(f"models:/{registered_name(spec)}@champion", uri)
        policy.name = f"champion {spec.name}"
        return policy
    return load_policy(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", type=Path)
    parser.add_argument("--battles", type=int, default=1000, help="battles per number")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: the spec's)")
    parser.add_argument("--opponents", default="max-damage,heuristic")
    parser.add_argument("--champion", action="append", default=[], help="checkpoint, folder, URI")
    parser.add_argument("--workers", type=int, default=1, help="simulator workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED, help="battle-set seed")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = args.specs or sorted((ROOT / "search_spaces").glob("*.yaml"))
    opponents = [make_policy(name) for name in args.opponents.split(",")]

    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, {args.workers} simulator worker(s)"
    )
    print(f"battles: {args.battles} per number, seed {args.seed} (BENCHMARK_SEED by default)")
    rows: list[Row] = []
    by_recipe: dict[str, list[SearchSpec]] = {}
    for path in specs:
        spec = load_spec(path)
        by_recipe.setdefault(_recipe_label(spec), []).append(spec)

    with SimulatorPool(num_workers=args.workers) as pool:

        def play(policy: Policy, recipe: str, label: str) -> list[Row]:
            played = []
            for opponent in opponents:
                result = evaluate(
                    policy, opponent, battles=args.battles, seed=args.seed, pool=pool
                )
                played.append(Row(recipe, label, opponent.name, result))
                print(f"  {label:<28} vs {opponent.name:<11} {result.win_rate:.3f}")
            return played

        for recipe, group in by_recipe.items():
            print(f"recipe: {recipe} ({', '.join(s.name for s in group)})")
            dataset = prepare_dataset(group[0])
            recipe_rows: list[Row] = []
            generate = group[0].dataset.generate
            behaviour = list(dict.fromkeys(generate.policies)) if generate else []
            for name in behaviour:
                recipe_rows += play(make_policy(name), recipe, name)
            learned: dict[str, dict[str, Any]] = {a: {"algo": a} for a in ("bc", "iql", "cql")}
            for spec in group:
                point = spec.searcher.warm_start[0] if spec.searcher.warm_start else {}
                fixed = spec.algorithm_config(point).model_dump(mode="json")
                default = parse_algo_config({"algo": fixed["algo"]}).model_dump(mode="json")
                if fixed != default and fixed not in learned.values():
                    learned[f"{fixed['algo']} ({spec.name})"] = fixed
            for label, values in learned.items():
                algorithm = _train(group[0], values, dataset, args)
                policy = LearnedPolicy(label, algorithm.action_scores)
                recipe_rows += play(policy, recipe, label if "(" in label else f"{label} default")
            for source in args.champion:
                recipe_rows += play(_champion(source), recipe, f"champion {Path(source).name}")
            bc = {r.opponent: r.result for r in recipe_rows if r.policy == "bc default"}
            for row in recipe_rows:
                if row.opponent in bc and row.policy != "bc default":
                    d = paired_difference(row.result.won, bc[row.opponent].won)
                    row.vs_bc = f"{d.difference:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
            rows += recipe_rows

    print()
    print("| recipe | policy | opponent | win rate | 95% CI | paired vs BC [95% CI] |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        r = row.result
        print(
            f"| {row.recipe} | {row.policy} | {row.opponent} | {r.win_rate:.3f} | "
            f"{r.ci_low:.3f}-{r.ci_high:.3f} | {row.vs_bc or '-'} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "recipe": row.recipe,
                        "policy": row.policy,
                        "opponent": row.opponent,
                        "win_rate": row.result.win_rate,
                        "ci": [row.result.ci_low, row.result.ci_high],
                        "battles": row.result.battles,
                        "vs_bc": row.vs_bc,
                    }
                    for row in rows
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
