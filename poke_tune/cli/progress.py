"""Progress bars on stderr for long work (battles played, gradient steps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from poke_tune.cli.errors import console

__all__ = ["battle_progress"]


@contextmanager
def battle_progress(total: int | None, what: str) -> Iterator[Callable[[object], None]]:
    """A bar of `total` battles (None: not known ahead) with their rate; yields the
    per-result callback (it takes any battle result: a `BattleResult`, a server match's
    `BattleOutcome`, a re-simulated `ReplayResult`)."""
    columns = (
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(what, total=total, rate="")

        def advance(_: object) -> None:
            progress.advance(task)
            elapsed = progress.tasks[task].elapsed or 0.0
            done = progress.tasks[task].completed
            progress.update(task, rate=f"{done / elapsed:.1f} battles/s" if elapsed else "")

        yield advance
