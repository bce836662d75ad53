"""`poke-tune`: tune offline-RL Pokemon Showdown policies.

Every command validates its input before starting work, shows progress on long work,
and exits with status 2 and a one-paragraph message on bad input or a missing install.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from poke_tune.data.dataset import DatasetError, dataset_info, load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.eval.winrate import EVAL_SEED, EvaluationError, evaluate
from poke_tune.sim.battles import BattleResult, SimulatorError
from poke_tune.sim.dex import load_dex
from poke_tune.sim.policies import make_policy
from poke_tune.sim.runtime import SimulatorNotFoundError, install_showdown

__all__ = ["app"]

app = typer.Typer(
    help="Tune offline-RL Pokemon Showdown policies with Ray Tune, Optuna and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate and inspect offline datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
stdout = Console(soft_wrap=True)
_USER_ERRORS = (
    SimulatorNotFoundError,
    SimulatorError,
    DatasetError,
    EvaluationError,
    ValueError,
    FileNotFoundError,
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn expected failures (bad input, missing install) into a message and exit 2."""
    try:
        yield
    except _USER_ERRORS as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(2) from None


@contextmanager
def _battle_progress(total: int, what: str) -> Iterator[Callable[[BattleResult], None]]:
    columns = (
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(what, total=total, rate="")

        def advance(_: BattleResult) -> None:
            progress.advance(task)
            elapsed = progress.tasks[task].elapsed or 0.0
            done = progress.tasks[task].completed
            progress.update(task, rate=f"{done / elapsed:.1f} battles/s" if elapsed else "")

        yield advance


@app.command()
def setup() -> None:
    """Install the pokemon-showdown simulator into the project cache and extract its Dex."""
    with _user_errors():
        runtime = install_showdown()
        dex = load_dex()
    stdout.print(
        f"node: {runtime.node}\npokemon-showdown {runtime.version}: {runtime.package_dir}\n"
        f"Dex: gen {dex.gen}, {len(dex.types)} types"
    )


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Argument(help="Output file (.jsonl or .jsonl.gz).")],
    battles: Annotated[int, typer.Option(min=1, help="Battles to play.")] = 1000,
    policies: Annotated[
        str, typer.Option(help="Comma-separated behaviour policies; every ordered pair plays.")
    ] = "random,max-damage",
    seed: Annotated[int, typer.Option(help="Seed of teams, battles and policies.")] = 0,
    battle_format: Annotated[str, typer.Option("--format")] = "gen9randombattle",
    max_turns: Annotated[int, typer.Option(min=1, help="Cut-off turn (not a terminal).")] = 200,
    hp_shaping: Annotated[
        float, typer.Option(min=0.0, help="HP-balance shaping weight (0 = win/loss only).")
    ] = 0.0,
    workers: Annotated[int | None, typer.Option(min=1, help="Node workers.")] = None,
) -> None:
    """Play battles between behaviour policies and record a trajectory-JSONL dataset."""
    with _user_errors(), _battle_progress(battles, "generating") as advance:
        summary = generate_dataset(
            out.resolve(),
            policies=[p.strip() for p in policies.split(",") if p.strip()],
            battles=battles,
            seed=seed,
            battle_format=battle_format,
            max_turns=max_turns,
            hp_shaping=hp_shaping,
            num_workers=workers,
            on_result=advance,
        )
    stdout.print(
        f"wrote {summary.path}: {summary.battles - summary.failed_battles} battles, "
        f"{summary.trajectories} trajectories, {summary.transitions} transitions "
        f"({summary.truncated_battles} battles cut off at turn {max_turns})"
    )
    if summary.failed_battles:
        console.print(f"[bold red]{summary.failed_battles} battles failed and were not written")
        raise typer.Exit(1)


@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="A trajectory-JSONL dataset.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate and compile a dataset (cached), then print its statistics."""
    with _user_errors():
        info = dataset_info(load_dataset(path.resolve()))
    if as_json:
        stdout.print_json(json.dumps(info))
        return
    _print_mapping(f"dataset {path}", info)


def _print_mapping(title: str, values: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
        table.add_row(key, str(value))
    stdout.print(table)


@app.command("eval")
def eval_command(
    policy: Annotated[str, typer.Argument(help="Policy to evaluate (built-in name).")],
    opponent: Annotated[str, typer.Option(help="Opponent policy.")] = "max-damage",
    battles: Annotated[int, typer.Option(min=1)] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation battle set.")] = EVAL_SEED,
    battle_format: Annotated[str, typer.Option("--format")] = "gen9randombattle",
    max_turns: Annotated[int, typer.Option(min=1)] = 200,
    workers: Annotated[int | None, typer.Option(min=1, help="Node workers.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Win rate of POLICY against --opponent in seeded battles, with a 95% interval."""
    with _user_errors():
        evaluated, rival = make_policy(policy), make_policy(opponent)
        with _battle_progress(battles, f"{policy} vs {opponent}") as advance:
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
