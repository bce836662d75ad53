"""The sequential confirmation rule by simulation: how often it promotes, and at what cost.

No battles: each repetition draws paired outcomes of a candidate and a champion over the
budget's battles (the champion wins `--base` of them, the two disagree on `discordance` of
them, and the candidate wins `gain` more), and runs `eval.sequential.sequential_decision`,
the rule `confirm_sequentially` applies after each chunk. Prints, per rule, true gain and
chunk: P(promote) (the candidate stopped better), P(champion better), and the battles used
(each of the two plays them). At gain 0, P(promote) is the false-promotion rate.

Rules: `pocock` (the default: z = pocock_z(looks) for the budget's most looks), `95% each
look` (z = 1.96 at every look: the error the Pocock width prevents), `race 99%` (the race's
ELIMINATION_Z), and `fixed` (one look at the whole budget at 95%: the power of not looking).

    python benchmarks/bench_sequential.py [--reps 4000] [--budget 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np

from poke_tune.eval.race import ELIMINATION_Z
from poke_tune.eval.sequential import max_looks, pocock_z, sequential_decision


@dataclass(frozen=True)
class Scenario:
    rule: str
    gain: float
    chunk: int
    discordance: float = 0.25


def _z(rule: str, chunk: int, budget: int) -> float:
    if rule == "pocock":
        return pocock_z(max_looks(chunk, budget))
    return {"95% each look": 1.96, "race 99%": ELIMINATION_Z, "fixed": 1.96}[rule]


def _outcomes(
    rng: np.random.Generator, scenario: Scenario, base: float, budget: int, reps: int
) -> tuple[np.ndarray, np.ndarray]:
    """(reps, budget) wins of the candidate and the champion: categories both / only the
    candidate / only the champion / neither, drawn independently per battle."""
    only_a = (scenario.discordance + scenario.gain) / 2
    only_b = (scenario.discordance - scenario.gain) / 2
    both = base - only_b
    cells = np.array([both, only_a, only_b, 1.0 - both - only_a - only_b])
    if (cells < 0).any():
        raise ValueError(f"{scenario} with base {base} gives negative cells {cells}")
    kind = rng.choice(4, size=(reps, budget), p=cells)
    return (kind == 0) | (kind == 1), (kind == 0) | (kind == 2)


def _row(scenario: Scenario, *, base: float, budget: int, reps: int, seed: int) -> str:
    rng = np.random.default_rng([seed, round(scenario.gain * 1000), scenario.chunk])
    chunk = budget if scenario.rule == "fixed" else scenario.chunk
    z = _z(scenario.rule, chunk, budget)
    a_won, b_won = _outcomes(rng, scenario, base, budget, reps)
    stops, battles = [], []
    for a, b in zip(a_won, b_won, strict=True):
        decision = sequential_decision(a.tolist(), b.tolist(), chunk=chunk, budget=budget, z=z)
        stops.append(decision.stop)
        battles.append(decision.battles)
    promote = stops.count("candidate better") / reps
    reject = stops.count("champion better") / reps
    return (
        f"| {scenario.rule} | {z:.3f} | {scenario.discordance:.2f} | {scenario.gain:+.2f} | "
        f"{chunk} | {promote:.3f} | {reject:.3f} | {statistics.fmean(battles):,.0f} | "
        f"{statistics.median(battles):,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4000)
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--base", type=float, default=0.6, help="the champion's win rate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gains = (0.0, 0.02, 0.03, 0.05)
    scenarios = [
        *(Scenario("pocock", gain, chunk) for chunk in (250, 500) for gain in gains),
        *(Scenario("pocock", 0.0, 250, discordance) for discordance in (0.15, 0.35)),
        *(
            Scenario(rule, 0.0, chunk)
            for rule in ("95% each look", "race 99%")
            for chunk in (250, 500)
        ),
        *(Scenario("fixed", gain, args.budget) for gain in gains),
    ]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.reps} repetitions a row, champion win rate {args.base}, budget {args.budget}"
    )
    print(
        "| rule | z per look | discordance | true gain | chunk | P(promote) "
        "| P(champion better) | mean battles | median battles |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    started = time.perf_counter()
    for scenario in scenarios:
        row = _row(scenario, base=args.base, budget=args.budget, reps=args.reps, seed=args.seed)
        print(row, flush=True)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
