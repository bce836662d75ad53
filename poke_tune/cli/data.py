"""`poke-tune data generate` and `poke-tune data info`: offline datasets."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from poke_tune.cli.errors import console, stdout, user_errors
from poke_tune.cli.progress import battle_progress
from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import load_dataset
from poke_tune.data.export import export_trajectories
from poke_tune.data.generate import generate_dataset, generate_shards
from poke_tune.data.importer import (
    ImportSummary,
    MixedFormatsError,
    NothingImportedError,
    Sides,
    check_output,
    import_battles,
)
from poke_tune.data.info import dataset_info
from poke_tune.data.sources import MIB, ReadLimits
from poke_tune.sim.battle_records import check_battle_format
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.policies import pin_policy_name, resolve_policy

__all__ = ["data_app"]

data_app = typer.Typer(help="Generate and inspect offline datasets.", no_args_is_help=True)


@data_app.command("generate")
def data_generate(
    out: Annotated[
        Path,
        typer.Argument(
            help="Output: a trajectory file (.jsonl or .jsonl.gz), or a manifest (.json) of "
            "shards written straight into the cache's shard store."
        ),
    ],
    battles: Annotated[int, typer.Option(min=1, help="Battles to play.")] = 1000,
    policies: Annotated[
        str,
        typer.Option(
            help="Comma-separated behaviour policies; every ordered pair plays. Built-in "
            "names, checkpoint files and models:/NAME/VERSION or models:/NAME@ALIAS (recorded "
            "as the version it points to), each optionally with :eps=E or :softmax=T."
        ),
    ] = "random,max-damage",
    seed: Annotated[int, typer.Option(help="Seed of teams, battles and policies.")] = 0,
    battle_format: Annotated[str, typer.Option("--format")] = "gen9randombattle",
    max_turns: Annotated[int, typer.Option(min=1, help="Cut-off turn (not a terminal).")] = 200,
    hp_shaping: Annotated[
        float, typer.Option(min=0.0, help="HP-balance shaping weight (0 = win/loss only).")
    ] = 0.0,
    workers: Annotated[int | None, typer.Option(min=1, help="Node workers.")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI for models:/ policies.")
    ] = None,
) -> None:
    """Play battles between behaviour policies and record a dataset: a trajectory-JSONL
    file, or (OUT.json) a compiled dataset's shards and manifest."""
    with user_errors():
        check_battle_format(battle_format)
        names = [p.strip() for p in policies.split(",") if p.strip()]
        if not names:
            raise ValueError("--policies names no policy")
        pinned = [pin_policy_name(name, tracking_uri) for name in names]
    generate = (
        partial(generate_shards, store=cache_dir() / "datasets" / "shards")
        if out.suffix == ".json"
        else generate_dataset
    )
    with user_errors(), battle_progress(battles, "generating") as advance:
        summary = generate(
            out.resolve(),
            policies=pinned,
            battles=battles,
            seed=seed,
            battle_format=battle_format,
            max_turns=max_turns,
            hp_shaping=hp_shaping,
            num_workers=workers,
            on_result=advance,
            resolver=partial(resolve_policy, tracking_uri=tracking_uri),
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
    path: Annotated[Path, typer.Argument(help="A trajectory-JSONL dataset or a manifest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate and compile a dataset (cached), then print its statistics."""
    with user_errors():
        info = dataset_info(load_dataset(path.resolve()))
    if as_json:
        stdout.print_json(json.dumps(info))
        return
    _print_mapping(f"dataset {path}", info)


@data_app.command("combine")
def data_combine(
    parts: Annotated[list[Path], typer.Argument(help="Trajectory files or manifests.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The manifest to write (*.json).")],
) -> None:
    """One dataset from several: a manifest listing their shards (compiled first where
    needed; no shard is copied). Repeated trajectories are excluded."""
    with user_errors():
        combined = combine_datasets([part.resolve() for part in parts], out.resolve())
    stdout.print(
        f"wrote {out}: {combined.trajectories} trajectories from {len(parts)} parts "
        f"({combined.repeats_dropped} repeats excluded)"
    )


@data_app.command("export")
def data_export(
    dataset: Annotated[Path, typer.Argument(help="A trajectory file or a manifest.")],
    out: Annotated[Path, typer.Argument(help="The trajectory file to write (.jsonl[.gz]).")],
) -> None:
    """Write a compiled dataset out as a trajectory file (header and provenance kept)."""
    with user_errors():
        written = export_trajectories(load_dataset(dataset.resolve()), out)
    stdout.print(f"wrote {out}: {written} trajectories")


def _print_mapping(title: str, values: dict[str, Any]) -> None:
    """A two-column table of `values` (floats to 4 significant digits)."""
    table = Table(title=title, show_header=False)
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
        table.add_row(key, str(value))
    stdout.print(table)


@data_app.command("import")
def data_import(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="SOURCE... OUT: server logs (*.log.json), folders of them, replay JSON "
            "files, JSONL(.gz) files of replays; then the output file (.jsonl or .jsonl.gz)."
        ),
    ],
    battle_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="Dataset format (default: the one format of the verified battles)."
        ),
    ] = None,
    min_rating: Annotated[
        float | None, typer.Option(help="Refuse battles rated below it (or unrated).")
    ] = None,
    sides: Annotated[
        str, typer.Option(help="Whose trajectories: both, winner, p1 or p2.")
    ] = "both",
    hp_shaping: Annotated[
        float, typer.Option(min=0.0, help="HP-balance shaping weight (0 = win/loss only).")
    ] = 0.0,
    workers: Annotated[
        int | None, typer.Option(help="Node workers (1 to the machine's CPU count).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT.")] = False,
    max_file_mb: Annotated[
        int, typer.Option(help="Largest source file read, MiB on disk.")
    ] = ReadLimits.max_file_bytes // MIB,
    max_battle_mb: Annotated[
        int, typer.Option(help="Largest battle read, MiB (a .log.json file or a JSONL line).")
    ] = ReadLimits.max_battle_bytes // MIB,
    max_decompressed_mb: Annotated[
        int, typer.Option(help="Most a JSONL(.gz) file may decompress to, MiB.")
    ] = ReadLimits.max_decompressed_bytes // MIB,
) -> None:
    """Re-simulate logged battles and write the verified ones as a trajectory-JSONL dataset."""
    with user_errors():
        *sources, out = _import_paths(paths)
        _check_import_options(sides, workers, battle_format)
        limits = _read_limits(max_file_mb, max_battle_mb, max_decompressed_mb)
        check_output(sources, out, overwrite=force)
    with user_errors(), battle_progress(None, "re-simulating") as advance:
        try:
            summary = import_battles(
                sources,
                out,
                battle_format=battle_format,
                min_rating=min_rating,
                sides=cast(Sides, sides),  # checked above
                hp_shaping=hp_shaping,
                num_workers=workers,
                on_result=advance,
                limits=limits,
                overwrite=force,
            )
        except (NothingImportedError, MixedFormatsError) as error:
            _print_import_summary(error.summary)
            raise
    _print_import_summary(summary)


def _import_paths(paths: list[Path]) -> list[Path]:
    """SOURCE... OUT, resolved; a missing source named before anything is read."""
    if len(paths) < 2:
        raise ValueError("give at least one SOURCE and the OUT file")
    *sources, out = paths
    for source in sources:
        if not os.path.lexists(source):
            raise FileNotFoundError(f"{source}: no such file or folder (a SOURCE)")
    return [*(source.absolute() for source in sources), out.absolute()]


def _check_import_options(sides: str, workers: int | None, battle_format: str | None) -> None:
    if sides not in ("both", "winner", "p1", "p2"):
        raise ValueError(f"--sides {sides!r}: expected both, winner, p1 or p2")
    cpus = os.cpu_count() or 1
    if workers is not None and not 1 <= workers <= cpus:
        raise ValueError(f"--workers {workers}: expected 1 to {cpus} (this machine's CPUs)")
    if battle_format is not None:
        check_battle_format(battle_format)


def _read_limits(file_mb: int, battle_mb: int, decompressed_mb: int) -> ReadLimits:
    for flag, value in (
        ("--max-file-mb", file_mb),
        ("--max-battle-mb", battle_mb),
        ("--max-decompressed-mb", decompressed_mb),
    ):
        if not 1 <= value <= 1 << 20:
            raise ValueError(f"{flag} {value}: expected 1 to {1 << 20} (MiB)")
    return ReadLimits(file_mb * MIB, battle_mb * MIB, decompressed_mb * MIB)


def _print_import_summary(summary: ImportSummary) -> None:
    """Counts (stdout) and, per refusal reason, the first battle's reason in full (stderr)."""
    values: dict[str, Any] = {
        "battles read": summary.read,
        "imported": summary.imported,
        "refused": summary.refused,
    }
    values.update({f"  refused: {why}": n for why, n in summary.refused_by_reason().items()})
    if summary.battle_format:
        values["format"] = summary.battle_format
    values["simulator"] = f"pokemon-showdown {summary.simulator_version}"
    if summary.imported:
        stdout.print(
            f"wrote {summary.path}: {summary.imported} battles, {summary.trajectories} "
            f"trajectories, {summary.transitions} transitions",
            highlight=False,
            soft_wrap=True,
        )
    _print_mapping("import", values)
    shown: set[str] = set()
    for refusal in summary.refusals:
        if refusal.reason not in shown:
            shown.add(refusal.reason)
            console.print(
                f"refused ({refusal.reason}): {refusal.detail}", highlight=False, markup=False
            )


@data_app.command("record")
def data_record(
    logs: Annotated[Path, typer.Argument(help="Folder for the server's battle logs.")],
    battles: Annotated[int, typer.Option(min=1, help="Battles, shared across opponents.")] = 100,
    player: Annotated[str, typer.Option(help="The challenger.")] = "poke-env:simple-heuristics",
    opponents: Annotated[
        str, typer.Option(help="Comma-separated opponents, each challenged in turn.")
    ] = "poke-env:max-base-power,poke-env:random",
    battle_format: Annotated[str, typer.Option("--format")] = "gen9randombattle",
    concurrency: Annotated[int, typer.Option(min=1, help="Battles at once per pair.")] = 4,
) -> None:
    """Play bots against each other on a local server that logs every battle; then
    `poke-tune data import LOGS OUT` makes a dataset of them (the logged-data recipe)."""
    from poke_tune.play.factory import check_player_name
    from poke_tune.play.record import battle_logs, record_bot_battles

    names = [name.strip() for name in opponents.split(",") if name.strip()]
    with user_errors():
        check_battle_format(battle_format)
        for name in (player, *names):
            check_player_name(name)
        if not names:
            raise ValueError("--opponents names no opponent")
        summary = record_bot_battles(
            battles,
            matchups=[(player, name) for name in names],
            logs_dir=logs,
            battle_format=battle_format,
            concurrency=concurrency,
        )
    for matchup, finished in summary.finished.items():
        console.print(f"{matchup}: {finished} battles", highlight=False)
    stdout.print(
        f"{summary.logs_dir}: {len(battle_logs(summary.logs_dir))} battle logs "
        f"({summary.battles} new); import them with "
        f"`poke-tune data import {summary.logs_dir} OUT.jsonl.gz`",
        highlight=False,
    )
