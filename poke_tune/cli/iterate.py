"""`poke-tune iterate`: the data flywheel, round after round (`poke_tune.tuning.loop`).

Exit status beyond `cli.errors`: 130 when Ctrl-C stopped the loop (`--resume` continues it
at the round and stage it was in).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from poke_tune.cli.errors import console, stdout, user_errors
from poke_tune.tuning.spec_file import parse_overrides

if TYPE_CHECKING:
    from poke_tune.tuning.loop.plan import LoopSettings
    from poke_tune.tuning.loop.run import IterateOutcome
    from poke_tune.tuning.records import LoopRecord, RoundRecord

__all__ = ["iterate"]

INTERRUPTED_EXIT = 130
TABLE_WIDTH = 160
_SHOWN = ("round", "champion", "promoted", "battles", "transitions")


def iterate(
    spec: Annotated[Path | None, typer.Argument(help="Search spec YAML (with `rounds:`).")] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Rounds after round 0 (rounds.count).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the loop in this folder (storage_path/name).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster (default: local).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE override, e.g. rounds.battles=200."),
    ] = None,
) -> None:
    """The data flywheel: the spec's sweep (round 0), then per round the champion plays
    new battles that join the data and the sweep runs again, warm-started, until
    `rounds.count` rounds or the stop rule; a report of the champions' curve at the end."""
    from poke_tune.tuning.loop.run import resume_iterate, run_iterate
    from poke_tune.tuning.loop.stages import LoopHooks
    from poke_tune.tuning.records import LoopRecord

    if (spec is None) == (resume is None):
        console.print("[bold red]error:[/] give a SPEC, or --resume FOLDER (not both)")
        raise typer.Exit(2)
    import torch

    torch.set_num_threads(1)  # the driver's own work is battles, one decision at a time
    hooks = LoopHooks(address=address, on_round=_verdict)
    try:
        with user_errors():
            if resume is not None:
                outcome = resume_iterate(resume.resolve(), hooks=hooks)
            else:
                assert spec is not None
                from poke_tune.tuning.spec_file import load_spec

                loaded = load_spec(spec, parse_overrides(overrides or [], rounds__count=rounds))
                record = LoopRecord(
                    spec_file=str(spec.resolve()), overrides=overrides or [], argv=list(sys.argv)
                )
                outcome = run_iterate(loaded, record=record, hooks=hooks)
    except KeyboardInterrupt:
        console.print(
            "[bold yellow]interrupted:[/] continue the loop with `poke-tune iterate --resume "
            "STORAGE_PATH/NAME`"
        )
        raise typer.Exit(INTERRUPTED_EXIT) from None
    _finish(outcome)


def _verdict(settings: LoopSettings, record: LoopRecord, current: RoundRecord) -> None:
    """One line per finished round."""
    if current.index == 0:
        state = f"starts the loop ({current.promotion or 'not registered'})"
    elif current.promoted:
        state = "beats the previous champion: the new champion"
    else:
        state = (
            f"does NOT beat the previous champion, which stays ({current.promotion or 'curve'})"
        )
    reference = settings.reference
    point = current.point(reference)
    rate = f", {point.win_rate:.3f} vs {reference}" if point is not None else ""
    stdout.print(
        f"round {current.index}: {current.transitions} transitions; winner {current.winner}"
        f"{rate} {state}"
    )


def _finish(outcome: IterateOutcome) -> None:
    from poke_tune.tuning.loop.report import loop_table

    rows = loop_table(outcome.settings, outcome.record)
    if rows:
        table = Table(title=f"{outcome.spec.name}: the data flywheel")
        columns = [c for c in rows[0] if c in _SHOWN or c.startswith("vs ") or c.endswith(" s")]
        columns = [c for c in columns if not c.endswith(" ci")]
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(row[c] for c in columns))
        wide = Console(file=stdout.file, width=max(stdout.width, TABLE_WIDTH), soft_wrap=True)
        wide.print(table)
    if outcome.report is not None:
        stdout.print(f"  report:     {outcome.report}")
    if outcome.interrupted:
        console.print(
            "[bold yellow]interrupted:[/] the round's sweep stopped before all trials ended. "
            f"Continue the loop: poke-tune iterate --resume {outcome.loop.folder}"
        )
        raise typer.Exit(INTERRUPTED_EXIT)
    if outcome.record.stopped:
        stdout.print(f"  stopped:    {outcome.record.stopped}")
    champion = outcome.record.rounds[-1].champion if outcome.record.rounds else None
    if champion:
        stdout.print(f"  champion:   {champion}")
