"""`poke-tune eval`: win rate of a policy in seeded real battles (one torch thread)."""

from __future__ import annotations

import json
from typing import Annotated

import torch
import typer

from poke_tune.cli.errors import stdout, user_errors
from poke_tune.cli.progress import battle_progress
from poke_tune.eval.winrate import EVAL_SEED, evaluate
from poke_tune.sim.battle_records import check_battle_format
from poke_tune.tuning.policies import resolve_policy

__all__ = ["eval_command", "resolve_policy"]


def eval_command(
    policy: Annotated[
        str,
        typer.Argument(
            help="Policy to evaluate: a built-in name, a checkpoint file, or a registered "
            "model such as models:/poke-tune-cql_alpha@champion."
        ),
    ],
    opponent: Annotated[str, typer.Option(help="Opponent policy.")] = "max-damage",
    battles: Annotated[int, typer.Option(min=1)] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation battle set.")] = EVAL_SEED,
    battle_format: Annotated[str, typer.Option("--format")] = "gen9randombattle",
    max_turns: Annotated[int, typer.Option(min=1)] = 200,
    workers: Annotated[int | None, typer.Option(min=1, help="Node workers.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI for models:/ policies.")
    ] = None,
) -> None:
    """Win rate of POLICY against --opponent in seeded battles, with a 95% interval."""
    # One torch thread: a policy scores one observation at a time, where intra-op threads
    # cost more than they give and would compete with the simulator's node workers.
    torch.set_num_threads(1)
    with user_errors():
        check_battle_format(battle_format)
        evaluated = resolve_policy(policy, tracking_uri)
        rival = resolve_policy(opponent, tracking_uri)
        with battle_progress(battles, f"{policy} vs {opponent}") as advance:
            result = evaluate(
                evaluated,
                rival,
                battles=battles,
                seed=seed,
                battle_format=battle_format,
                max_turns=max_turns,
                num_workers=workers,
                on_result=advance,
            )
    if as_json:
        stdout.print_json(json.dumps(result.to_dict()))
        return
    stdout.print(
        f"{result.policy} vs {result.opponent}: win rate {result.win_rate:.3f} "
        f"(95% CI {result.ci_low:.3f}-{result.ci_high:.3f}) over {result.battles} battles: "
        f"{result.wins} W / {result.losses} L / {result.ties} T, "
        f"{result.mean_turns:.1f} turns per battle, "
        f"{result.battles / result.seconds:.1f} battles/s"
    )
