"""`poke-tune`: tune offline-RL Pokemon Showdown policies.

Every command validates its input before starting work, shows progress on long work,
and exits with status 2 and a one-paragraph message on bad input or a missing install
(the mapping is `poke_tune.cli.errors`). The commands live in one module per topic:
`setup`, `data`, `train`, `evaluate`, `sweep`, `iterate`, `ui`, `cluster`, `play` and `server`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from poke_tune.cli import cluster, data, evaluate, iterate, play, server, setup, sweep, train, ui
from poke_tune.cli.errors import console

__all__ = ["app"]

app = typer.Typer(
    help="Tune offline-RL Pokemon Showdown policies with Ray Tune, Optuna and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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


app.add_typer(data.data_app, name="data")
app.add_typer(cluster.jobs_app, name="jobs")
app.command()(cluster.submit)
app.command()(setup.setup)
app.command()(train.train)
for _command in (sweep.validate, sweep.run, sweep.resume, sweep.confirm, sweep.best, sweep.track):
    app.command()(_command)
app.command()(iterate.iterate)
app.command()(ui.ui)
app.command("eval")(evaluate.eval_command)
app.command()(play.play)
app.command()(server.server)
