"""`poke-tune train`: one offline training run on a dataset."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from poke_tune.algos import DivergedError, TrainConfig, Trainer, parse_algo_config, run_training
from poke_tune.cli.errors import console, stdout, user_errors
from poke_tune.data.dataset import load_dataset
from poke_tune.tuning.spec import parse_overrides

__all__ = ["train"]


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
    with user_errors():
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
