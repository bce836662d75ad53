"""`poke-tune validate`, `run`, `resume`, `confirm`, `best` and `track`: tuning sweeps.

Exit status beyond `cli.errors`: 130 when the sweep was interrupted (Ctrl-C; nothing was
registered, `resume` continues it), 1 when no trial produced an objective.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from poke_tune.cli.errors import console, stdout, user_errors
from poke_tune.cli.progress import battle_progress
from poke_tune.tuning.spec_file import parse_overrides

if TYPE_CHECKING:
    from poke_tune.sim.battle_records import BattleResult
    from poke_tune.tuning.spec import SearchSpec
    from poke_tune.tuning.spec_data import RecordRecipe
    from poke_tune.tuning.sweep import SweepOutcome

__all__ = ["best", "confirm", "resume", "run", "track", "validate"]

INTERRUPTED_EXIT = 130
"""What a shell reports for a command stopped by Ctrl-C (128 + SIGINT)."""
TABLE_WIDTH = 132
"""Tables are printed at least this wide, also into a pipe or a log (rich would use 80)."""


def _print_table(table: Table) -> None:
    # rich caps a print at the console's width, 80 when stdout is a pipe or a log file.
    wide = Console(file=stdout.file, width=max(stdout.width, TABLE_WIDTH), soft_wrap=True)
    wide.print(table)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_trials(outcome: SweepOutcome) -> None:
    rows = outcome.rows
    names = sorted({name for row in rows for name in row.params})
    table = Table(title=f"{outcome.spec.name}: {len(rows)} trials (search)")
    for column in ["trial", *names, "selection score", "status", "evaluations"]:
        table.add_column(column)
    for row in rows:
        params = [_cell(row.params.get(n, "")) for n in names]
        score = "" if row.score is None else f"{row.score:.4g}"
        table.add_row(row.trial_id, *params, score, row.status, str(row.evaluations))
    _print_table(table)


def _print_confirmation(outcome: SweepOutcome) -> None:
    from poke_tune.tuning.confirm.budget import budget_curve, budget_summary
    from poke_tune.tuning.confirm.report import ReportRow, confirmation_rows, race_savings, verdict

    confirmation = outcome.confirmation
    if confirmation is None:
        selected = outcome.selected
        if selected is not None:
            stdout.print(
                f"selected trial {selected.trial_id} by {outcome.spec.objective.metric} "
                f"= {selected.score:.4g} (not confirmed on fresh battles: confirm.enabled is "
                "off or the objective is an offline metric)"
            )
        return
    table = Table(
        title=f"confirmation: {confirmation.battles} fresh battles against "
        f"{confirmation.opponent} (seed {confirmation.seed}; the search selected on seed "
        f"{outcome.spec.objective.seed})"
    )
    for column in ReportRow.header():
        table.add_column(column)
    for row in confirmation_rows(confirmation):
        table.add_row(*row.cells(), style="bold" if "champion" in row.note.split(", ") else None)
    _print_table(table)
    stdout.print(verdict(confirmation))
    stdout.print(race_savings(confirmation))
    stdout.print(budget_summary(budget_curve(confirmation, outcome.ranked)))
    winner = confirmation.winner
    if winner is not None and winner.checkpoint:
        stdout.print(
            f"  checkpoint: {winner.checkpoint}\n  evaluate:   poke-tune eval {winner.checkpoint} "
            f"--opponent {confirmation.opponent} --battles 1000 --seed SEED"
        )


def _print_tracking(outcome: SweepOutcome) -> None:
    if outcome.report is not None:
        stdout.print(f"  report:     {outcome.report}")
    tracking = outcome.tracking
    if tracking is None:
        return
    stdout.print(f"  MLflow:     {tracking.tracking_uri}, parent run {tracking.parent_run_id}")
    promotion = tracking.promotion
    if promotion is not None:
        state = "is the new champion" if promotion.promoted else "is NOT the champion"
        stdout.print(
            f"  model:      {promotion.model} version {promotion.version} {state} "
            f"({promotion.reason})"
        )
        if promotion.promoted:
            stdout.print(
                f"              poke-tune eval {promotion.model_uri} --tracking-uri "
                f"{tracking.tracking_uri}"
            )
    stdout.print(f"  compare:    poke-tune ui {outcome.experiment.location}")


def _finish(outcome: SweepOutcome) -> None:
    """Print the sweep's tables; exit non-zero when it was interrupted or found nothing."""
    _print_trials(outcome)
    if outcome.interrupted:
        console.print(
            f"[bold yellow]interrupted:[/] the sweep stopped before all trials ended; "
            f"nothing was registered. Continue it: poke-tune resume {outcome.experiment.location}"
        )
        _print_tracking(outcome)
        raise typer.Exit(INTERRUPTED_EXIT)
    _print_confirmation(outcome)
    _print_tracking(outcome)
    if outcome.found_nothing:
        console.print(
            "[bold red]no trial produced an objective[/] (every trial failed or diverged): "
            f"see the trials' errors in {outcome.experiment.location}"
        )
        raise typer.Exit(1)


def _one_torch_thread() -> None:
    # The driver's own torch work is the confirmation: policies score one observation at a
    # time, where intra-op threads only contend with the simulator (trials are processes
    # of their own, which Ray gives one thread per CPU they hold).
    import torch

    torch.set_num_threads(1)


def _load_spec(spec: Path, overrides: list[str] | None, **options: Any) -> SearchSpec:
    from poke_tune.tuning.spec_file import load_spec

    return load_spec(spec, parse_overrides(overrides or [], **options))


def validate(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML.")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE.")] = None,
) -> None:
    """Check a search spec without running it."""
    with user_errors():
        loaded = _load_spec(spec, overrides)
    stdout.print(
        f"{spec}: valid ({loaded.algorithm.algo}, {len(loaded.search_space)} "
        f"parameters, {loaded.num_samples} trials)"
    )


def run(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML.")],
    address: Annotated[str | None, typer.Option(help="Ray cluster (default: local).")] = None,
    num_samples: Annotated[int | None, typer.Option(min=1)] = None,
    steps: Annotated[int | None, typer.Option(min=1)] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE override, e.g. objective.battles=20."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: spec, MLFLOW_TRACKING_URI, SQLite)."),
    ] = None,
) -> None:
    """Run a tuning sweep: search (Optuna + Ray Tune), confirm the shortlist on fresh
    battles beside the baselines, register and promote the champion, report."""
    from poke_tune.tuning.records import SweepRecord
    from poke_tune.tuning.sweep import run_sweep

    _one_torch_thread()
    with user_errors():
        loaded = _load_spec(
            spec,
            overrides,
            num_samples=num_samples,
            training__steps=steps,
            mlflow__tracking_uri=tracking_uri,
        )
        record = SweepRecord(
            spec_file=str(spec.resolve()), overrides=overrides or [], argv=list(sys.argv)
        )
        with _confirmation_progress(loaded) as advance:
            outcome = run_sweep(
                loaded,
                address=address,
                record=record,
                on_battle=advance,
                recorder=_record_bot_battles,
            )
    _finish(outcome)


def _record_bot_battles(recipe: RecordRecipe, folder: Path) -> None:
    """A spec's `dataset.import.record`: bots play on a local server logging to `folder`
    (the play layer's job; the sweep then imports the logs)."""
    from poke_tune.play.record import record_bot_battles

    summary = record_bot_battles(
        recipe.battles,
        matchups=recipe.matchups,
        logs_dir=folder,
        battle_format=recipe.battle_format,
    )
    console.print(f"recorded {summary.battles} bot battles on a local server")


def _most_battles(spec: SearchSpec) -> int:
    """The confirmation's battles without racing (the bar's end; racing ends it early)."""
    from poke_tune.tuning.confirm.contenders import behaviour_policies

    baselines = len(behaviour_policies(spec, None)) + int(spec.confirm.bc)
    return spec.confirm.battles * (spec.confirm.top_k + baselines + 1)


@contextmanager
def _confirmation_progress(spec: SearchSpec) -> Iterator[Callable[[BattleResult], None]]:
    """A battle bar that appears when the confirmation starts (not during the search,
    whose progress Tune prints)."""
    with ExitStack() as stack:
        bar: list[Callable[[BattleResult], None]] = []

        def advance(result: BattleResult) -> None:
            if not bar:
                bar.append(stack.enter_context(battle_progress(_most_battles(spec), "confirming")))
            bar[0](result)

        yield advance


def resume(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
    address: Annotated[str | None, typer.Option(help="Ray cluster (default: local).")] = None,
) -> None:
    """Continue an interrupted sweep (searcher and scheduler state included), then
    confirm, promote and report."""
    from poke_tune.tuning.experiment import Experiment
    from poke_tune.tuning.sweep import resume_sweep

    _one_torch_thread()
    with user_errors():
        spec = Experiment.open(experiment.resolve()).spec
        with _confirmation_progress(spec) as advance:
            outcome = resume_sweep(
                experiment.resolve(),
                address=address,
                on_battle=advance,
                recorder=_record_bot_battles,
            )
    _finish(outcome)


def confirm(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
    top_k: Annotated[int | None, typer.Option(min=1, help="Shortlisted trials.")] = None,
    battles: Annotated[int | None, typer.Option(min=1, help="Confirmation battles.")] = None,
) -> None:
    """Re-run the confirmation of a finished sweep (e.g. with more battles), then the
    promotion and the report."""
    from poke_tune.tuning.experiment import Experiment
    from poke_tune.tuning.sweep import confirm_sweep

    _one_torch_thread()
    with user_errors():
        again = Experiment.open(experiment.resolve()).reconfirmed(top_k=top_k, battles=battles)
        with _confirmation_progress(again.spec) as advance:
            outcome = confirm_sweep(again, on_battle=advance)
    _finish(outcome)


def best(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
) -> None:
    """Print a sweep's trials and its confirmation table (no battles are played)."""
    from poke_tune.tuning.sweep import load_sweep

    with user_errors():
        outcome = load_sweep(experiment.resolve())
    _finish(outcome)


def track(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
) -> None:
    """Send a finished sweep's MLflow records that an outage kept back, and log its
    trials table, plots, confirmation report and registered model (once)."""
    from poke_tune.tuning.sweep import track_sweep

    with user_errors():
        outcome = track_sweep(experiment.resolve())
    _finish(outcome)
