"""The report's charts: confirmation win rates, expected best vs budget, and Optuna's own
plots of the search (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import optuna

from poke_tune.tuning.confirm.budget import BudgetPoint
from poke_tune.tuning.confirm.confirm import Confirmation
from poke_tune.tuning.records import SCORED, TrialRow
from poke_tune.tuning.spec import SearchSpec

__all__ = ["plot_budget_curve", "plot_confirmation", "write_optuna_plots"]

_logger = logging.getLogger(__name__)


def plot_confirmation(confirmation: Confirmation, path: Path) -> None:
    """Win rates with their 95% intervals; baselines in grey, the champion in bold."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    standings = confirmation.standings
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(standings) + 1.5))
    for y, standing in enumerate(standings):
        result = standing.result
        colour = {"candidate": "tab:blue", "baseline": "grey", "champion": "tab:orange"}[
            standing.role
        ]
        axis.errorbar(
            result.win_rate,
            y,
            xerr=[[result.win_rate - result.ci_low], [result.ci_high - result.win_rate]],
            fmt="o",
            color=colour,
            capsize=4,
        )
    axis.set_yticks(range(len(standings)))
    axis.set_yticklabels(
        [
            f"{'* ' if s.name == confirmation.champion else ''}{s.name} [{s.role}]"
            for s in standings
        ]
    )
    best = confirmation.standing(confirmation.best_baseline)
    if best is not None:
        axis.axvline(best.result.win_rate, color="grey", linestyle="--", linewidth=1)
    axis.set_xlabel(
        f"win rate vs {confirmation.opponent}, {confirmation.battles} fresh battles (95% CI)"
    )
    axis.set_xlim(0, 1)
    axis.invert_yaxis()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_budget_curve(
    points: Sequence[BudgetPoint], confirmation: Confirmation, path: Path
) -> None:
    """Expected best selection score and the pick's confirmation win rate vs trials."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [p.trials for p in points]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(trials, [p.selection for p in points], "o-", color="tab:grey", label="selection")
    axis.fill_between(
        trials,
        [p.confirmation_low for p in points],
        [p.confirmation_high for p in points],
        color="tab:blue",
        alpha=0.3,
        label="confirmation (bounds: unconfirmed trials as 0 and 1)",
    )
    best = confirmation.standing(confirmation.best_baseline)
    if best is not None:
        axis.axhline(best.result.win_rate, color="grey", linestyle="--", linewidth=1)
        axis.annotate(f"best baseline {best.name}", (trials[0], best.result.win_rate))
    axis.set_xlabel("trials in the sweep")
    axis.set_ylabel(f"expected win rate vs {confirmation.opponent}")
    axis.set_ylim(0, 1)
    axis.legend(loc="lower right")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def _study(rows: Sequence[TrialRow], spec: SearchSpec) -> optuna.Study:
    """The sweep's Optuna study: loaded from its storage when it has one, else rebuilt
    in memory from the trials (Tune's searcher keeps it inside its own pickle)."""
    if spec.searcher.storage is not None:
        return optuna.load_study(study_name=spec.name, storage=spec.searcher.storage)
    study = optuna.create_study(
        direction="maximize" if spec.objective.mode == "max" else "minimize"
    )
    for row in rows:
        if row.status not in SCORED or row.score is None:
            continue
        distributions = {
            name: param.distribution()
            for name, param in spec.search_space.items()
            if name in row.params
        }
        params = {name: row.params[name] for name in distributions}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=row.score)
        )
    return study


def write_optuna_plots(rows: Sequence[TrialRow], spec: SearchSpec, folder: Path) -> list[str]:
    """Optuna's own plots as PNG; returns the names written (a plot that does not apply,
    e.g. parameter importance of a one-trial study, is skipped with a log line)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    study = _study(rows, spec)
    makers: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": plots.plot_optimization_history,
        "objective_vs_params": plots.plot_slice,
        "parallel_coordinates": plots.plot_parallel_coordinate,
        "param_importances": plots.plot_param_importances,
    }
    written = []
    for name, make in makers.items():
        try:
            make(study)
            plt.gcf().savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            written.append(name)
        except Exception as error:  # Optuna raises for plots a study cannot support
            _logger.info("plot %s skipped: %s", name, str(error).splitlines()[:1])
        finally:
            plt.close("all")
    return written
