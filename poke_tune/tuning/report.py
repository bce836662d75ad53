"""Stage 4, report: what a user reads (tables, one verdict line) and looks at (plots).

Every win rate shown here was measured on the confirmation battles, with its 95% Wilson
interval; differences to the best baseline are paired (same battles) with their 95%
interval; optimism is the selection score minus the confirmation win rate. The CLI
renders `confirmation_rows` with rich; MLflow gets the same rows as Markdown and CSV, the
win-rate chart, the expected-best-vs-budget chart and Optuna's plots.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import optuna

from poke_tune.tuning.confirm import Confirmation, shortlist
from poke_tune.tuning.experiment import SCORED, TrialRow
from poke_tune.tuning.spec import CategoricalParam, FloatParam, SearchSpec

__all__ = [
    "BudgetPoint",
    "ReportRow",
    "budget_curve",
    "budget_summary",
    "confirmation_rows",
    "plot_budget_curve",
    "plot_confirmation",
    "verdict",
    "write_confirmation_table",
    "write_optuna_plots",
    "write_trials_csv",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportRow:
    """One line of the confirmation table."""

    name: str
    role: str
    selection: str
    win_rate: str
    battles: int
    vs_best_baseline: str
    optimism: str
    note: str

    @staticmethod
    def header() -> list[str]:
        return [
            "policy",
            "role",
            "selection",
            "win rate [95% CI]",
            "battles",
            "vs best baseline [paired 95% CI]",
            "optimism",
            "note",
        ]

    def cells(self) -> list[str]:
        return [
            self.name,
            self.role,
            self.selection,
            self.win_rate,
            str(self.battles),
            self.vs_best_baseline,
            self.optimism,
            self.note,
        ]


def _number(value: float | None, form: str) -> str:
    return "" if value is None else form.format(value)


def confirmation_rows(confirmation: Confirmation) -> list[ReportRow]:
    rows = []
    for standing in confirmation.standings:
        result = standing.result
        versus = standing.vs_best_baseline
        note = []
        if standing.name == confirmation.champion:
            note.append("champion")
        if standing.name == confirmation.best_baseline:
            note.append("best baseline")
        if standing.stopped_early:
            note.append("stopped early (race)")
        if standing.role == "champion":
            note.append("registered champion, replayed")
        rows.append(
            ReportRow(
                name=standing.name,
                role=standing.role,
                selection=_number(standing.selection_score, "{:.3f}"),
                win_rate=f"{result.win_rate:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}]",
                battles=result.battles,
                vs_best_baseline=""
                if versus is None
                else f"{versus.difference:+.3f} [{versus.ci_low:+.3f}, {versus.ci_high:+.3f}]",
                optimism=_number(standing.optimism, "{:+.3f}"),
                note=", ".join(note),
            )
        )
    return rows


def verdict(confirmation: Confirmation) -> str:
    """One line: did the sweep find a policy that beats its baselines?"""
    winner = confirmation.winner
    if winner is None:
        return "no candidate reached the confirmation stage: the sweep found no policy"
    result = winner.result
    head = (
        f"{winner.name} wins {result.win_rate:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}] "
        f"against {confirmation.opponent} over {result.battles} fresh battles"
    )
    versus = winner.vs_best_baseline
    if versus is None:
        return head + " (no baselines to compare with)"
    gap = f"{versus.difference:+.3f} [{versus.ci_low:+.3f}, {versus.ci_high:+.3f}]"
    if versus.a_better:
        return f"{head}: it BEATS the best baseline {confirmation.best_baseline} by {gap}"
    if versus.b_better:
        return (
            f"{head}: it is WORSE than the best baseline {confirmation.best_baseline} "
            f"({gap}): the sweep found no policy better than its data"
        )
    return (
        f"{head}: NOT better than the best baseline {confirmation.best_baseline} "
        f"({gap}, the interval includes 0): the sweep found no policy better than its data"
    )


def race_savings(confirmation: Confirmation) -> str:
    saved = confirmation.battles_fixed - confirmation.battles_played
    return (
        f"racing: candidates played {confirmation.battles_played} battles instead of "
        f"{confirmation.battles_fixed} ({saved} saved)"
    )


def write_confirmation_table(
    confirmation: Confirmation, budget: Sequence[BudgetPoint], folder: Path
) -> list[Path]:
    """`confirmation.md` (table, verdict, budget curve) and `confirmation.csv` in `folder`."""
    rows = confirmation_rows(confirmation)
    markdown = folder / "confirmation.md"
    lines = [
        f"# Confirmation: {confirmation.battles} fresh battles against "
        f"{confirmation.opponent} (seed {confirmation.seed})",
        "",
        "| " + " | ".join(ReportRow.header()) + " |",
        "|" + "---|" * len(ReportRow.header()),
        *("| " + " | ".join(row.cells()) + " |" for row in rows),
        "",
        verdict(confirmation),
        "",
        race_savings(confirmation),
        "",
        "## Expected performance vs number of trials",
        "",
        "| trials | expected best selection | expected confirmation of the pick |",
        "|---|---|---|",
        *(
            f"| {p.trials} | {p.selection:.3f} | "
            f"[{p.confirmation_low:.3f}, {p.confirmation_high:.3f}] |"
            for p in budget
        ),
        "",
    ]
    markdown.write_text("\n".join(lines))
    table = folder / "confirmation.csv"
    with table.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(ReportRow.header())
        writer.writerows(row.cells() for row in rows)
    return [markdown, table]


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


@dataclass(frozen=True)
class BudgetPoint:
    """What a sweep of `trials` trials, drawn from this one's, is expected to hand back."""

    trials: int
    selection: float
    """Expected best selection score (optimistic: it is the score selection maximised)."""
    confirmation_low: float
    confirmation_high: float
    """Bounds on the expected confirmation win rate of the trial selection picks: the
    unconfirmed trials' unknown win rates count as 0 and as 1."""


def budget_curve(
    confirmation: Confirmation, rows: Sequence[TrialRow], spec: SearchSpec
) -> list[BudgetPoint]:
    """Expected performance against the number of trials (Dodge et al. 2019, "Show your
    work"; for offline RL, Kurenkov & Kolesnikov 2022): `n` trials are drawn with
    replacement from this sweep's, selection picks the best of them, and the pick is worth
    its confirmation win rate. A curve still rising at the sweep's size says more trials
    would pay; a flat one says they would not."""
    ranked = shortlist(rows, spec, len(rows))  # best selection score first
    confirmed = {
        s.trial_id: s.result.win_rate for s in confirmation.standings if s.role == "candidate"
    }
    size = len(ranked)
    points = []
    for n in range(1, size + 1):
        selection = low = high = 0.0
        for rank, row in enumerate(ranked):
            # P(the best of n draws has this rank) = P(all below rank-1) - P(all below rank).
            chance = ((size - rank) / size) ** n - ((size - rank - 1) / size) ** n
            selection += chance * (row.score or 0.0)
            if row.trial_id in confirmed:
                low += chance * confirmed[row.trial_id]
                high += chance * confirmed[row.trial_id]
            else:
                high += chance
        points.append(BudgetPoint(n, selection, low, high))
    return points


def budget_summary(points: Sequence[BudgetPoint]) -> str:
    """One line: the expected confirmation of the pick at a quarter, half and all trials."""
    n = len(points)
    sizes = sorted({max(1, n // 4), max(1, n // 2), n}) if points else []
    parts = [
        f"of {size} trials [{points[size - 1].confirmation_low:.3f}, "
        f"{points[size - 1].confirmation_high:.3f}]"
        for size in sizes
    ]
    return (
        "budget: expected confirmation win rate of the trial selection picks "
        "(unconfirmed trials counted as 0 and as 1): " + ", ".join(parts or ["no trials"])
    )


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


def write_trials_csv(rows: Sequence[TrialRow], path: Path) -> None:
    names = sorted({name for row in rows for name in row.params})
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial_id", *names, "selection_score", "status", "evaluations"])
        for row in rows:
            writer.writerow(
                [
                    row.trial_id,
                    *(row.params.get(n, "") for n in names),
                    "" if row.score is None else row.score,
                    row.status,
                    row.evaluations,
                ]
            )


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
        distributions: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, param in spec.search_space.items():
            if name not in row.params:
                continue
            if isinstance(param, CategoricalParam):
                distributions[name] = optuna.distributions.CategoricalDistribution(param.choices)
            elif isinstance(param, FloatParam):
                distributions[name] = optuna.distributions.FloatDistribution(
                    param.low, param.high, log=param.log
                )
            else:
                distributions[name] = optuna.distributions.IntDistribution(
                    int(param.low), int(param.high), log=param.log
                )
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
