"""poke-tune policies against poke-env's baseline bots on a real Showdown server.

Two parts, each through a local server started here (127.0.0.1, a free port, stopped
afterwards; a fresh server per policy, since the server's memory grows with battles):

1. The community table (`table`): each policy (random, max-damage, heuristic, a BC
   checkpoint, a learned model) as a poke-env `PolicyPlayer` against poke-env's
   `RandomPlayer`, `MaxBasePowerPlayer` and `SimpleHeuristicsPlayer`, `--battles` each,
   win rate with its Wilson 95% interval, failed battles and invalid choices, and the
   battles/s through the server next to the in-process evaluator's (`evaluate()` of the
   same policy against max-damage, `--inprocess-battles` battles, one node worker).
2. Parity (`parity`): the same pairing played through the server (poke-tune's policy on
   both sides, as two poke-env players) and in-process (`evaluate()`): max-damage vs
   random and the learned model vs max-damage. The server's random teams are not the
   evaluator's seeded ones, so the rates are compared, not battles: the two intervals
   should overlap and the difference should be within its 95% interval.

Rows print as they finish (markdown) and are appended to `--out` as JSON lines.

usage: python benchmarks/bench_server.py table --bc PATH --learned PATH_OR_URI
           [--label-learned TEXT] [--battles 500] [--policies random max-damage ...]
           [--bots poke-env:simple-heuristics ...]
       python benchmarks/bench_server.py parity --learned PATH_OR_URI [--battles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from poke_tune.eval.winrate import BENCHMARK_SEED, evaluate, wilson_interval
from poke_tune.play import LocalServer, free_port
from poke_tune.play.factory import make_player
from poke_tune.play.match import MatchResult, play_match
from poke_tune.play.player import PolicyPlayer
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.tuning.policies import resolve_policy

BOTS = ("poke-env:random", "poke-env:max-base-power", "poke-env:simple-heuristics")


def _server_match(
    policy: Policy, opponent: Policy | str, battles: int, concurrency: int
) -> MatchResult:
    with LocalServer(port=free_port()) as server:

        async def match() -> MatchResult:
            player = make_player(policy, server_url=server.url, concurrency=concurrency, seed=1)
            rival = make_player(opponent, server_url=server.url, concurrency=concurrency, seed=2)
            assert isinstance(player, PolicyPlayer)
            return await play_match(player, opponent=rival, battles=battles, server=server.url)

        return asyncio.run(match())


def _emit(row: dict[str, Any], out: Path) -> None:
    with out.open("a") as file:
        file.write(json.dumps(row) + "\n")


def table(args: argparse.Namespace) -> None:
    policies = {
        "random": "random",
        "max-damage": "max-damage",
        "heuristic": "heuristic",
        "BC": args.bc,
        args.label_learned: args.learned,
    }
    wanted = [p for p in policies if p in args.policies] if args.policies else policies
    bots = args.bots or BOTS
    print(
        f"| policy | {' | '.join(f'vs {b}' for b in bots)} "
        "| battles/s server | battles/s in-process (vs max-damage) | failed | invalid |"
    )
    print("|---|" + "---|" * (len(bots) + 4))
    for label in wanted:
        name = policies[label]
        if name is None:
            continue
        policy = resolve_policy(name)
        cells, rates, failed, invalid = [], [], 0, 0
        for bot in bots:
            result = _server_match(policy, bot, args.battles, args.concurrency)
            row = {"part": "table", "label": label, **result.to_dict()}
            _emit(row, args.out)
            low, high = result.interval
            cells.append(f"{result.win_rate:.3f} [{low:.3f}, {high:.3f}] (n={result.battles})")
            rates.append(result.battles_per_second)
            failed += result.failed
            invalid += result.invalid_choices
        local = evaluate(
            policy,
            make_policy("max-damage"),
            battles=args.inprocess_battles,
            seed=BENCHMARK_SEED,
            num_workers=1,
        )
        in_process = local.battles / local.seconds
        _emit({"part": "in-process", "label": label, "battles_per_second": in_process}, args.out)
        server_rate = sum(rates) / len(rates)
        print(
            f"| {label} | {' | '.join(cells)} | {server_rate:.1f} | {in_process:.1f} "
            f"| {failed} | {invalid} |",
            flush=True,
        )


def _difference(a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float, float]:
    """p_a - p_b with a normal 95% interval (independent samples)."""
    pa, pb = a[0] / a[1], b[0] / b[1]
    se = math.sqrt(pa * (1 - pa) / a[1] + pb * (1 - pb) / b[1])
    return pa - pb, pa - pb - 1.96 * se, pa - pb + 1.96 * se


def parity(args: argparse.Namespace) -> None:
    pairs = [("max-damage", "random"), (args.learned, "max-damage")]
    print(
        "| policy vs opponent | through the server | in-process (evaluate) "
        "| difference [95%] | invalid (server / in-process) | failed |"
    )
    print("|---|---|---|---|---|---|")
    for name, opponent in pairs:
        policy, rival = resolve_policy(name), make_policy(opponent)
        server = _server_match(policy, rival, args.battles, args.concurrency)
        local = evaluate(policy, rival, battles=args.battles, seed=BENCHMARK_SEED, num_workers=1)
        s_low, s_high = server.interval
        l_low, l_high = wilson_interval(local.wins, local.battles)
        diff, d_low, d_high = _difference(
            (server.wins, server.battles), (local.wins, local.battles)
        )
        _emit(
            {
                "part": "parity",
                "server": server.to_dict(),
                "in_process": {
                    "wins": local.wins,
                    "battles": local.battles,
                    "win_rate": local.win_rate,
                    "invalid_choices": local.invalid_choices,
                    "battles_per_second": local.battles / local.seconds,
                },
            },
            args.out,
        )
        label = args.label_learned if name == args.learned else name
        print(
            f"| {label} vs {opponent} | {server.win_rate:.3f} [{s_low:.3f}, {s_high:.3f}] "
            f"(n={server.battles}) | {local.win_rate:.3f} [{l_low:.3f}, {l_high:.3f}] "
            f"(n={local.battles}) | {diff:+.3f} [{d_low:+.3f}, {d_high:+.3f}] "
            f"| {server.invalid_choices} / {local.invalid_choices} | {server.failed} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["table", "parity"])
    parser.add_argument("--learned", required=True, help="checkpoint path or models:/ URI")
    parser.add_argument("--label-learned", default="learned")
    parser.add_argument("--bc", help="BC checkpoint path (table)")
    parser.add_argument("--battles", type=int, default=500)
    parser.add_argument("--inprocess-battles", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--policies", nargs="+", help="labels of the rows to run (default: all)")
    parser.add_argument("--bots", nargs="+", choices=BOTS, help="the columns (default: all)")
    parser.add_argument("--out", type=Path, default=Path("bench_server.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    (table if args.part == "table" else parity)(args)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
