"""`poke-tune`: tune offline-RL Pokemon Showdown policies.

Every command validates its input before starting work, shows progress on long work,
and exits with status 2 and a one-paragraph message on bad input or a missing install.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from poke_tune.algos import (
    DivergedError,
    TrainConfig,
    Trainer,
    load_policy,
    parse_algo_config,
    run_training,
)
from poke_tune.cli.cluster import jobs_app, submit
from poke_tune.data.dataset import DatasetError, dataset_info, load_dataset
from poke_tune.data.generate import generate_dataset
from poke_tune.eval.winrate import EVAL_SEED, EvaluationError, evaluate
from poke_tune.sim.battles import BattleResult, SimulatorError
from poke_tune.sim.dex import load_dex
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.sim.runtime import SimulatorNotFoundError, install_showdown
from poke_tune.tuning.spec import set_dotted

__all__ = ["app"]

app = typer.Typer(
    help="Tune offline-RL Pokemon Showdown policies with Ray Tune, Optuna and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate and inspect offline datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(jobs_app, name="jobs")
app.command()(submit)

console = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True)
_USER_ERRORS = (
    SimulatorNotFoundError,
    SimulatorError,
    DatasetError,
    EvaluationError,
    ValueError,
    FileNotFoundError,
    ConnectionError,  # an unreachable tracking server or cluster
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


def resolve_policy(name: str, tracking_uri: str | None = None) -> Policy:
    """A built-in policy name, a training checkpoint file, or a registered MLflow model
    (`models:/NAME@champion`, `models:/NAME/3`)."""
    if name.startswith("models:/"):
        from poke_tune.tuning.tracking import load_registered_policy

        return load_registered_policy(name, tracking_uri)
    path = Path(name)
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return load_policy(path.resolve())
    return make_policy(name)


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
    return f"{spec.storage_path.rstrip('/')}/{spec.name}"


def parse_overrides(pairs: list[str], **options: Any) -> dict[str, Any]:
    """`["network.hidden_sizes=[512,512]", "expectile=0.9"]` -> a nested dict (YAML values);
    `options` (dotted keys as `a__b`) that are not None are set too."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set expectile=0.9")
        set_dotted(result, key, yaml.safe_load(raw))
    for key, value in options.items():
        if value is not None:
            set_dotted(result, key.replace("__", "."), value)
    return result


@app.command()
def train(
    algo: Annotated[str, typer.Option(help="bc, iql or cql.")],
    data: Annotated[Path, typer.Option(help="Trajectory-JSONL dataset.")],
    steps: Annotated[int | None, typer.Option(min=1, help="Gradient steps.")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE for the algorithm or training config, repeatable."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/ALGO-TIME).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from a checkpoint.")] = None,
    bc_init: Annotated[
        Path | None, typer.Option(help="Start the policy from a BC checkpoint.")
    ] = None,
) -> None:
    """Train BC, IQL or CQL on a dataset; writes checkpoints and metrics.jsonl."""
    with _user_errors():
        values = parse_overrides(overrides or [])
        train_fields = {k: values.pop(k) for k in list(values) if k in TrainConfig.model_fields}
        if steps is not None:
            train_fields["steps"] = steps
        dataset = load_dataset(data.resolve())
        if resume is not None:
            trainer = Trainer.resume(resume.resolve(), dataset)
        else:
            trainer = Trainer(
                parse_algo_config({"algo": algo, **values}), TrainConfig(**train_fields), dataset
            )
        if bc_init is not None:
            trainer.init_policy_from(bc_init.resolve())
        run_dir = (out or Path("runs") / f"{algo}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(
            json.dumps(
                {
                    "algo": trainer.algo_config.model_dump(mode="json"),
                    "train": trainer.config.model_dump(mode="json"),
                    "data": str(data.resolve()),
                    "dataset_key": dataset.key,
                },
                indent=2,
            )
        )
        best = float("-inf")
        columns = (
            TextColumn(f"[bold]{algo}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        status = "completed"
        with (
            Progress(*columns, console=console) as progress,
            (run_dir / "metrics.jsonl").open("a") as metrics_file,
        ):
            task = progress.add_task(
                algo, total=trainer.config.steps, completed=trainer.step, info=""
            )
            try:
                for metrics in run_training(trainer, lambda n: progress.advance(task, n)):
                    metrics_file.write(json.dumps(metrics) + "\n")
                    metrics_file.flush()
                    trainer.save(run_dir / "checkpoint_last.pt")
                    score = metrics.get("offline/fqe_value", metrics["step"])
                    if score > best:
                        best = score
                        shutil.copyfile(
                            run_dir / "checkpoint_last.pt", run_dir / "checkpoint_best.pt"
                        )
                    shown = {k: v for k, v in metrics.items() if k.startswith("offline/")}
                    progress.update(
                        task, info=" ".join(f"{k[8:]}={v:.3f}" for k, v in shown.items())
                    )
            except DivergedError as error:
                status = "diverged"
                metrics_file.write(
                    json.dumps({"step": trainer.step, "status": status, "reason": str(error)})
                    + "\n"
                )
                console.print(f"[bold red]diverged:[/] {error}")
    stdout.print(
        f"{status}: {trainer.step} steps; checkpoints {run_dir / 'checkpoint_last.pt'} (last) "
        f"and {run_dir / 'checkpoint_best.pt'} (best offline/fqe_value); "
        f"metrics {run_dir / 'metrics.jsonl'}"
    )
    if status != "completed":
        raise typer.Exit(1)


def _load_spec(spec: Path, overrides: list[str] | None, **options: Any) -> Any:
    from poke_tune.tuning.spec import load_spec

    return load_spec(spec, parse_overrides(overrides or [], **options))


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML.")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE.")] = None,
) -> None:
    """Check a search spec without running it."""
    with _user_errors():
        loaded = _load_spec(spec, overrides)
    stdout.print(
        f"{spec}: valid ({loaded.algorithm['algo']}, {len(loaded.search_space)} "
        f"parameters, {loaded.num_samples} trials)"
    )


@app.command()
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

    with _user_errors():
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


@app.command()
def resume(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
    address: Annotated[str | None, typer.Option(help="Ray cluster (default: local).")] = None,
) -> None:
    """Continue an interrupted sweep (searcher and scheduler state included)."""
    from poke_tune.tuning.search import resume_sweep, spec_of

    with _user_errors():
        outcome = resume_sweep(experiment.resolve(), address=address)
        spec = spec_of(experiment.resolve())
    _print_outcome(outcome, spec)


@app.command()
def best(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
) -> None:
    """Print the trials table and the best trial of a finished sweep."""
    from poke_tune.tuning.search import SweepOutcome, best_row, restore_tuner, spec_of, trial_rows

    with _user_errors():
        spec = spec_of(experiment.resolve())
        results = restore_tuner(experiment.resolve()).get_results()
        rows = trial_rows(results, spec)
    _print_outcome(SweepOutcome(results, rows, best_row(rows, spec), None), spec)


@app.command()
def track(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder (storage_path/name).")],
) -> None:
    """Send a finished sweep's MLflow records that an outage kept back, and log its
    trials table, plots, best checkpoint and registered model."""
    from poke_tune.tuning.search import spec_of, track_experiment

    with _user_errors():
        outcome = track_experiment(experiment.resolve())
        spec = spec_of(experiment.resolve())
    _print_outcome(outcome, spec)


@app.command()
def ui(
    target: Annotated[
        str | None,
        typer.Argument(help="Experiment folder or spec file (default: the local SQLite store)."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Start the MLflow UI on the sweep's tracking store and print its runs page."""
    from poke_tune.tuning.tracking import experiment_url, mlflow_ui_command, ui_target

    with _user_errors():
        uri, experiment = ui_target(target, tracking_uri)
    if uri.startswith(("http://", "https://")):  # a server already serves its own UI
        stdout.print(experiment_url(uri, experiment) if experiment else uri)
        return
    server = f"http://{host}:{port}"
    stdout.print(
        f"MLflow UI for {uri}: {experiment_url(server, experiment) if experiment else server}"
    )
    with subprocess.Popen(mlflow_ui_command(uri, host=host, port=port)) as process:
        try:
            process.wait()
        except KeyboardInterrupt:
            process.terminate()


@app.command("eval")
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
    with _user_errors():
        evaluated = resolve_policy(policy, tracking_uri)
        rival = resolve_policy(opponent, tracking_uri)
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
