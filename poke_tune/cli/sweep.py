"""`poke-tune validate`, `run`, `resume`, `best` and `track`: tuning sweeps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from poke_tune.cli.errors import console, stdout, user_errors
from poke_tune.tuning.spec import parse_overrides

__all__ = ["best", "experiment_folder", "resume", "run", "track", "validate"]


def _print_outcome(outcome: Any, spec: Any) -> None:
    """The trials table, the best trial, how to evaluate it, and where MLflow has it."""
    from poke_tune.tuning.spec import OBJECTIVE_KEY

    rows = outcome.rows
    columns = [c for c in (rows[0] if rows else {}) if c != "checkpoint"]
    table = Table(title=f"{spec.name}: {len(rows)} trials")
    for column in columns:
        table.add_column(column.removeprefix("param/"))
    for row in rows:
        table.add_row(
            *(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns)
        )
    stdout.print(table)
    best = outcome.best
    if best is None:
        console.print("[bold red]no trial finished with an objective")
    else:
        params = {k.removeprefix("param/"): v for k, v in best.items() if k.startswith("param/")}
        stdout.print(
            f"best trial {best['trial_id']}: {OBJECTIVE_KEY} = {best[OBJECTIVE_KEY]:.4g}, "
            f"params {params}"
        )
        if best["checkpoint"] is not None:
            stdout.print(
                f"  checkpoint: {best['checkpoint']}\n  evaluate:   poke-tune eval "
                f"{best['checkpoint']} --opponent {spec.objective.opponent} --battles 500"
            )
    tracking = outcome.tracking
    if tracking is None:
        return
    if "error" in tracking:
        console.print(f"[bold red]MLflow:[/] {tracking['error']}")
        return
    stdout.print(
        f"  MLflow:     {spec.mlflow.tracking_uri}, parent run {tracking['parent_run_id']}"
    )
    if "model" in tracking:
        verdict = (
            "is the new champion"
            if tracking["champion"]
            else f"did not beat the champion ({tracking['previous_champion_value']})"
        )
        stdout.print(
            f"  model:      {tracking['model']} version {tracking['version']} {verdict}; "
            f"poke-tune eval {tracking['model_uri']} --tracking-uri {spec.mlflow.tracking_uri}"
        )
    stdout.print(f"  compare:    poke-tune ui {experiment_folder(spec)}")


def experiment_folder(spec: Any) -> str:
    """Where a sweep keeps its Tune state: `storage_path/name`."""
    return f"{spec.storage_path.rstrip('/')}/{spec.name}"


def _load_spec(spec: Path, overrides: list[str] | None, **options: Any) -> Any:
    from poke_tune.tuning.spec import load_spec

    return load_spec(spec, parse_overrides(overrides or [], **options))


def validate(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML.")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE.")] = None,
) -> None:
    """Check a search spec without running it."""
    with user_errors():
        loaded = _load_spec(spec, overrides)
    stdout.print(
        f"{spec}: valid ({loaded.algorithm['algo']}, {len(loaded.search_space)} "
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
    """Run a tuning sweep: Optuna proposes, Ray Tune trains one trial per configuration,
    MLflow records the sweep and registers the winner."""
    from poke_tune.tuning.search import run_sweep

    with user_errors():
        loaded = _load_spec(
            spec,
            overrides,
            num_samples=num_samples,
            training__steps=steps,
            mlflow__tracking_uri=tracking_uri,
        )
        invocation = {
            "spec_file": str(spec.resolve()),
            "overrides": overrides or [],
            "num_samples": num_samples,
            "steps": steps,
            "tracking_uri": tracking_uri,
            "argv": sys.argv,
        }
        outcome = run_sweep(loaded, address=address, invocation=invocation)
    _print_outcome(outcome, loaded)


def resume(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
    address: Annotated[str | None, typer.Option(help="Ray cluster (default: local).")] = None,
) -> None:
    """Continue an interrupted sweep (searcher and scheduler state included)."""
    from poke_tune.tuning.search import resume_sweep, spec_of

    with user_errors():
        outcome = resume_sweep(experiment.resolve(), address=address)
        spec = spec_of(experiment.resolve())
    _print_outcome(outcome, spec)


def best(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
) -> None:
    """Print the trials table and the best trial of a finished sweep."""
    from poke_tune.tuning.search import SweepOutcome, best_row, restore_tuner, spec_of, trial_rows

    with user_errors():
        spec = spec_of(experiment.resolve())
        results = restore_tuner(experiment.resolve()).get_results()
        rows = trial_rows(results, spec)
    _print_outcome(SweepOutcome(results, rows, best_row(rows, spec), None), spec)


def track(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
) -> None:
    """Send a finished sweep's MLflow records that an outage kept back, and log its
    trials table, plots, best checkpoint and registered model."""
    from poke_tune.tuning.search import spec_of, track_experiment

    with user_errors():
        outcome = track_experiment(experiment.resolve())
        spec = spec_of(experiment.resolve())
    _print_outcome(outcome, spec)
