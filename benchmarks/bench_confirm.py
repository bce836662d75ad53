"""Racing against a fixed battle budget in the confirmation stage, on a finished sweep.

Replays the shortlist of an experiment folder twice on the same confirmation battles: once
with every candidate playing every battle (fixed budget), once racing (rounds; a candidate
whose 99% paired interval against the leader is below zero stops). Prints, for both, the
battles the candidates played, the champion, and each candidate's win rate [95% CI], with
the machine. The decision is the same when both name the same champion.

    python benchmarks/bench_confirm.py runs/ray/cql-alpha [--top-k 5] [--battles 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from poke_tune.tuning.confirm.confirm import Confirmation, confirm
from poke_tune.tuning.confirm.contenders import Contender, candidates
from poke_tune.tuning.experiment import Experiment
from poke_tune.tuning.search.search import searched


def _row(label: str, result: Confirmation, seconds: float) -> str:
    rates = ", ".join(
        f"{s.name.split(' (')[0]}: {s.result.win_rate:.3f} [{s.result.ci_low:.3f}, "
        f"{s.result.ci_high:.3f}] n={s.result.battles}{' (stopped)' if s.stopped_early else ''}"
        for s in result.standings
    )
    return f"| {label} | {result.battles_played} | {result.champion} | {seconds:.0f} s | {rates} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--battles", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spec = Experiment.open(args.experiment.resolve()).spec
    settings = spec.confirm.model_copy(
        update={"rounds": args.rounds, "top_k": args.top_k, "battles": args.battles}
    )
    spec = spec.model_copy(update={"confirm": settings})
    rows = searched(args.experiment.resolve(), spec).ranked[: args.top_k]
    contenders: list[Contender] = candidates(rows, spec)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{len(contenders)} candidates, {args.battles} battles vs {spec.objective.opponent}, "
        f"seed {spec.confirm.seed}"
    )
    print("| budget | candidate battles | champion | wall | candidates |")
    print("|---|---|---|---|---|")
    for label, race in (("fixed", False), ("racing", True)):
        started = time.perf_counter()
        raced = settings.model_copy(update={"race": race})
        result = confirm(raced, spec.objective, contenders)
        print(_row(label, result, time.perf_counter() - started), flush=True)


if __name__ == "__main__":
    main()
