"""`poke-tune play`: a policy against an opponent on a real Showdown server (poke-env).

Without --server a local server is started on a free port for the command and stopped
after it. Exit status: 0 when battles were played (failed ones are reported apart, never
as wins or losses); 1 when none could be played (the server died, the connection
dropped); 2 on bad input or when nothing listens at --server.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from typing import TYPE_CHECKING, Annotated, Literal

import torch
import typer

from poke_tune.cli.errors import console, print_error, stdout, user_errors
from poke_tune.cli.progress import battle_progress

if TYPE_CHECKING:
    from poke_tune.play.match import MatchResult
    from poke_tune.sim.policies import Policy

__all__ = ["play"]


def _mode(accept_challenges: int | None, ladder: int | None, battles: int) -> tuple[str, int]:
    if accept_challenges is not None and ladder is not None:
        raise ValueError("--accept-challenges and --ladder exclude each other")
    if accept_challenges is not None:
        return "accept", accept_challenges
    if ladder is not None:
        return "ladder", ladder
    return "against", battles


def play(
    policy: Annotated[
        str,
        typer.Argument(
            help="Policy to play: a built-in name, a checkpoint file, or a registered model "
            "such as models:/poke-tune-cql_alpha@champion."
        ),
    ],
    opponent: Annotated[
        str,
        typer.Option(
            help="poke-env:random, poke-env:max-base-power, poke-env:simple-heuristics, or "
            "any poke-tune policy."
        ),
    ] = "poke-env:max-base-power",
    battles: Annotated[int, typer.Option(min=1)] = 100,
    battle_format: Annotated[str, typer.Option("--format")] = "gen9randombattle",
    server: Annotated[
        str | None,
        typer.Option(
            help="Websocket URL of a running server (default: start a local one). The "
            "account comes from POKE_TUNE_SHOWDOWN_USER / POKE_TUNE_SHOWDOWN_PASSWORD."
        ),
    ] = None,
    accept_challenges: Annotated[
        int | None,
        typer.Option(min=1, help="Accept N challenges on --server instead of --opponent."),
    ] = None,
    challenger: Annotated[
        str | None, typer.Option(help="With --accept-challenges: only from this user.")
    ] = None,
    ladder: Annotated[
        int | None, typer.Option(min=1, help="Play N ladder battles on --server.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Battles at once per player.")] = 4,
    battle_timeout: Annotated[
        float,
        typer.Option(min=1, help="Seconds without a message before a battle is forfeited."),
    ] = 120.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the policy's random draws.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI for models:/ policies.")
    ] = None,
) -> None:
    """Win rate of POLICY against --opponent on a Showdown server, with a 95% interval."""
    torch.set_num_threads(1)  # one observation at a time: intra-op threads only compete
    from poke_tune.play.factory import check_player_name
    from poke_tune.play.server import LocalServer, check_server_reachable, free_port
    from poke_tune.sim.battle_records import check_battle_format
    from poke_tune.tuning.policies import resolve_policy

    with user_errors():
        check_battle_format(battle_format)
        mode, count = _mode(accept_challenges, ladder, battles)
        if mode != "against" and server is None:
            raise ValueError("--accept-challenges and --ladder play on a --server")
        if server is not None:
            check_server_reachable(server)
        check_player_name(opponent)
        evaluated = resolve_policy(policy, tracking_uri)
        rival = None if mode != "against" or opponent.startswith("poke-env:") else opponent
        rival_policy = resolve_policy(rival, tracking_uri) if rival is not None else None

    with ExitStack() as stack:
        if server is None:
            with user_errors():
                local = stack.enter_context(LocalServer(port=free_port()))
            url = local.url
        else:
            url = server
        with user_errors():
            result = _run(
                label=f"{policy} vs {opponent}",
                evaluated=evaluated,
                opponent=opponent if rival_policy is None else rival_policy,
                mode=mode,
                count=count,
                url=url,
                remote=server is not None,
                battle_format=battle_format,
                concurrency=concurrency,
                battle_timeout_s=battle_timeout,
                challenger=challenger,
                seed=seed,
                tracking_uri=tracking_uri,
            )
    _report(result, as_json)


def _run(
    *,
    label: str,
    evaluated: Policy,
    opponent: Policy | str,
    mode: str,
    count: int,
    url: str,
    remote: bool,
    battle_format: str,
    concurrency: int,
    battle_timeout_s: float,
    challenger: str | None,
    seed: int | None,
    tracking_uri: str | None,
) -> MatchResult:
    from poke_tune.play.factory import account_from_env, make_player
    from poke_tune.play.match import play_match
    from poke_tune.play.player import PolicyPlayer

    if mode != "against":
        label = f"{evaluated.name}: {mode} {count}"
    chosen_mode: Literal["against", "accept", "ladder"] = (
        "accept" if mode == "accept" else "ladder" if mode == "ladder" else "against"
    )

    async def match() -> MatchResult:
        player = make_player(
            evaluated,
            server_url=url,
            battle_format=battle_format,
            concurrency=concurrency,
            tracking_uri=tracking_uri,
            seed=seed,
            account=account_from_env() if remote else None,
        )
        assert isinstance(player, PolicyPlayer)
        rival = None
        if chosen_mode == "against":
            rival = make_player(
                opponent,
                server_url=url,
                battle_format=battle_format,
                concurrency=concurrency,
                tracking_uri=tracking_uri,
                seed=None if seed is None else seed + 1,
            )
        with battle_progress(count, label) as advance:
            return await play_match(
                player,
                opponent=rival,
                battles=count,
                mode=chosen_mode,
                challenger=challenger,
                battle_timeout_s=battle_timeout_s,
                start_timeout_s=60.0 if chosen_mode == "against" else None,
                on_result=advance,
                server=url,
            )

    return asyncio.run(match())


def _report(result: MatchResult, as_json: bool) -> None:
    if result.error is not None or result.failed:
        console.print(
            f"{result.failed} battle(s) failed"
            + (f": {result.error}" if result.error else "")
            + "; failed battles are not counted as wins or losses",
            highlight=False,
        )
    if as_json:
        stdout.print_json(json.dumps(result.to_dict()))
    else:
        low, high = result.interval
        stdout.print(
            f"{result.policy} vs {result.opponent}: win rate {result.win_rate:.3f} "
            f"(95% CI {low:.3f}-{high:.3f}) over {result.battles} battles: "
            f"{result.wins} W / {result.losses} L / {result.ties} T, "
            f"{result.failed} failed, {result.invalid_choices} invalid choices, "
            f"{result.mean_turns:.1f} turns per battle, "
            f"{result.battles_per_second:.1f} battles/s on the server"
        )
    if result.battles == 0:
        print_error(
            f"no battle could be played on {result.server}"
            + (f": {result.error}" if result.error else "")
        )
        raise typer.Exit(1)
