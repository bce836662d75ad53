"""Stage 3, report: what a user reads (tables, one verdict line) and looks at (charts),
written into the experiment folder's `report/` whether or not MLflow is on (the tracker
then uploads the same files).

Every win rate shown here was measured on the confirmation battles, with its 95% Wilson
interval; differences to the best baseline are paired (same battles) with their 95%
interval; optimism is the selection score minus the confirmation win rate. The CLI
renders `confirmation_rows` with rich; the folder gets the same rows as Markdown and CSV,
the trials table, the win-rate chart, the expected-best-vs-budget chart and Optuna's plots.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from poke_tune.tuning.confirm.budget import BudgetPoint, budget_curve
from poke_tune.tuning.confirm.charts import (
    plot_budget_curve,
    plot_confirmation,
    write_optuna_plots,
)
from poke_tune.tuning.confirm.confirm import Confirmation
from poke_tune.tuning.records import TrialRow
from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "Report",
    "ReportRow",
    "confirmation_rows",
    "race_savings",
    "verdict",
    "write_report",
]

TRIALS_FILE = "trials.csv"
PLOTS_FOLDER = "plots"
CONFIRMATION_FOLDER = "confirmation"


@dataclass(frozen=True)
class Report:
    """Stage 3's files: `trials.csv`, `plots/` (Optuna's) and, after a confirmation,
    `confirmation/` (table as Markdown and CSV, win-rate and budget charts)."""

    folder: Path


def write_report(
    folder: Path,
    rows: Sequence[TrialRow],
    ranked: Sequence[TrialRow],
    confirmation: Confirmation | None,
    spec: SearchSpec,
) -> Report:
    """Write the sweep's report into `folder` (replacing an earlier one): every trial in
    `rows`, the budget curve from `ranked` (`records.ranked`)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_trials_csv(rows, folder / TRIALS_FILE)
    (folder / PLOTS_FOLDER).mkdir(exist_ok=True)
    write_optuna_plots(rows, spec, folder / PLOTS_FOLDER)  # those a study supports
    if confirmation is not None:
        tables = folder / CONFIRMATION_FOLDER
        tables.mkdir(exist_ok=True)
        budget = budget_curve(confirmation, ranked)
        write_confirmation_table(confirmation, budget, tables)
        plot_confirmation(confirmation, tables / "win_rates.png")
        plot_budget_curve(budget, confirmation, tables / "expected_best_vs_trials.png")
    return Report(folder)


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
