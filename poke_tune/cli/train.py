"""`poke-tune train`: one offline training run on a dataset (`algos.training_run` does it).

Torch's intra-op threads are set by `--threads` (default: up to 4 of the CPUs this process
may use; the MLPs here gain little beyond that and more threads contend with the rest of
the machine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from poke_tune.algos import ALGORITHMS, TrainConfig
from poke_tune.algos.training_run import BEST_METRIC, prepare_trainer, run_in_folder
from poke_tune.cli.errors import console, stdout, user_errors
from poke_tune.data.compiled import load_dataset
from poke_tune.sim.runtime import usable_cpus
from poke_tune.tuning.spec_file import parse_overrides

__all__ = ["default_threads", "train"]


def default_threads() -> int:
    """Torch threads for training when `--threads` is not given: min(4, usable CPUs)."""
    return max(1, min(4, usable_cpus()))


def train(
    data: Annotated[Path, typer.Option(help="Trajectory-JSONL dataset.")],
    algo: Annotated[
        str | None,
        typer.Option(help=f"{', '.join(ALGORITHMS)} (with --resume: the checkpoint's)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Gradient steps (with --resume: the new total).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE for the algorithm or training config, repeatable."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/ALGO-TIME).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue from a checkpoint: more --steps, another eval_interval, fqe_steps "
            "or device apply; another algorithm or hyperparameters are refused."
        ),
    ] = None,
    bc_init: Annotated[
        Path | None, typer.Option(help="Start the policy from a BC checkpoint.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch intra-op threads (default: min(4, usable CPUs))."),
    ] = None,
) -> None:
    """Train BC, IQL or CQL on a dataset; writes checkpoints and metrics.jsonl."""
    torch.set_num_threads(threads or default_threads())
    with user_errors():
        values = parse_overrides(overrides or [])
        train_fields = {k: values.pop(k) for k in list(values) if k in TrainConfig.model_fields}
        if steps is not None:
            train_fields["steps"] = steps
        dataset = load_dataset(data.resolve())
        trainer = prepare_trainer(
            dataset,
            algo=algo,
            algo_values=values,
            train_values=train_fields,
            resume=resume.resolve() if resume is not None else None,
            bc_init=bc_init.resolve() if bc_init is not None else None,
        )
        name = trainer.algo_config.algo
        folder = (out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        columns = (
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(
                name, total=trainer.config.steps, completed=trainer.step, info=""
            )

            def show(metrics: dict[str, float]) -> None:
                shown = {k: v for k, v in metrics.items() if k.startswith("offline/")}
                info = " ".join(f"{k[8:]}={v:.3f}" for k, v in shown.items())
                progress.update(task, info=info)

            run = run_in_folder(
                trainer,
                folder,
                data_path=data.resolve(),
                on_progress=lambda n: progress.advance(task, n),
                on_metrics=show,
            )
    if run.status == "diverged":
        console.print(f"[bold red]diverged:[/] {run.reason}")
    stdout.print(
        f"{run.status}: {run.step} steps; checkpoints {run.last_checkpoint} (last) "
        f"and {run.best_checkpoint} (best {BEST_METRIC}); metrics {run.metrics_file}"
    )
    if run.status != "completed":
        raise typer.Exit(1)
