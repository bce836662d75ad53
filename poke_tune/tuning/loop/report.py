"""The data flywheel's report: a row per finished round (the champion after it, its curve
with the paired difference to the previous round's champion and to round 0's, the
sequential promotion's battles, data sizes, times per stage) as `rounds.csv`, the
champion's curve beside the data per round as `curve.png`, and every champion against
every other as `head_to_head.csv`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from poke_tune.tuning.loop.plan import PREVIOUS_CHAMPION, LoopSettings, gain
from poke_tune.tuning.records import CurvePoint, LoopRecord

__all__ = ["head_to_head_table", "loop_table", "write_loop_report"]


@dataclass(frozen=True)
class _Row:
    """One round of the report: the champion after it, its data, its times."""

    cells: dict[str, str]
    points: dict[str, CurvePoint]


def _report_rows(settings: LoopSettings, record: LoopRecord) -> list[_Row]:
    opponents = settings.curve_against
    rows = []
    for item in record.rounds:
        if item.stage != "done":
            continue
        champion = item.champion_round
        champion_record = record.rounds[champion] if champion is not None else None
        cells = {
            "round": str(item.index),
            "sweep": Path(item.sweep).name,
            "winner": item.winner or "",
            "promoted": "" if item.promoted is None else str(item.promoted).lower(),
            "champion": item.champion or "",
            "champion_round": "" if champion is None else str(champion),
            "new_battles": str(item.new_battles),
            "battles": str(item.battles),
            "trajectories": str(item.trajectories),
            "transitions": str(item.transitions),
        }
        points = {}
        for opponent in opponents:
            point = None if champion_record is None else champion_record.point(opponent)
            if point is not None:
                points[opponent] = point
            cells[f"vs {opponent}"] = "" if point is None else f"{point.win_rate:.3f}"
            cells[f"vs {opponent} ci"] = (
                "" if point is None else f"[{point.ci_low:.3f}, {point.ci_high:.3f}]"
            )
            for base, since in (("previous", None), ("round 0", 0)):
                difference = gain(record, item.index, opponent, since)
                cells[f"vs {opponent} paired to {base}"] = (
                    ""
                    if difference is None
                    else f"{difference.difference:+.3f} [{difference.ci_low:+.3f}, "
                    f"{difference.ci_high:+.3f}]"
                )
        head = item.point(PREVIOUS_CHAMPION)
        cells["winner vs previous champion"] = "" if head is None else f"{head.win_rate:.3f}"
        sequential = item.sequential
        cells["promotion battles"] = "" if sequential is None else str(sequential.battles)
        cells["promotion"] = (
            ""
            if sequential is None
            else f"{sequential.stopped}: {sequential.difference:+.3f} "
            f"[{sequential.ci_low:+.3f}, {sequential.ci_high:+.3f}] vs {sequential.opponent}"
        )
        for stage in ("generating", "sweeping", "measuring"):
            cells[f"{stage} s"] = f"{item.seconds.get(stage, 0.0):.0f}"
        rows.append(_Row(cells, points))
    return rows


def loop_table(settings: LoopSettings, record: LoopRecord) -> list[dict[str, str]]:
    """The report's rows as the CSV holds them (the CLI prints them too)."""
    return [row.cells for row in _report_rows(settings, record)]


def write_loop_report(folder: Path, settings: LoopSettings, record: LoopRecord) -> list[Path]:
    """`rounds.csv` (per round: data size, the champion's curve with its paired difference
    to the previous round's champion, times per stage) and `curve.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = _report_rows(settings, record)
    table = folder / "rounds.csv"
    with table.open("w", newline="") as out:
        columns = list(rows[0].cells) if rows else ["round"]
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.cells)
    chart = folder / "curve.png"
    _plot_curve(rows, settings, chart)
    written = [table, chart]
    if record.head_to_head:
        written.append(_write_head_to_head(folder / "head_to_head.csv", record))
    return written


def head_to_head_table(record: LoopRecord) -> list[dict[str, str]]:
    """The champions' matrix: row round's champion against column round's, win rate and
    95% interval over the same seeded battles (empty where they did not meet)."""
    champions = sorted({cell.row for cell in record.head_to_head})
    cells = {(cell.row, cell.column): cell for cell in record.head_to_head}
    table = []
    for row in champions:
        line = {"champion of round": str(row)}
        for column in champions:
            cell = cells.get((row, column))
            line[f"vs round {column}"] = (
                ""
                if cell is None
                else f"{cell.win_rate:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}]"
            )
        table.append(line)
    return table


def _write_head_to_head(path: Path, record: LoopRecord) -> Path:
    table = head_to_head_table(record)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return path


def _plot_curve(rows: Sequence[_Row], settings: LoopSettings, path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = settings.rounds
    figure, (curve, sizes) = plt.subplots(1, 2, figsize=(11, 4))
    x = [int(row.cells["round"]) for row in rows]
    for opponent in settings.curve_against:
        points = [row.points.get(opponent) for row in rows]
        shown = [(r, p) for r, p in zip(x, points, strict=True) if p is not None]
        if not shown:
            continue
        xs = [r for r, _ in shown]
        ys = [p.win_rate for _, p in shown]
        errors = [
            [p.win_rate - p.ci_low for _, p in shown],
            [p.ci_high - p.win_rate for _, p in shown],
        ]
        curve.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=f"vs {opponent}")
    curve.axhline(0.5, color="grey", linewidth=0.5)
    curve.set(
        xlabel="round",
        ylabel="champion's win rate",
        title=(
            f"{settings.spec.name}: {rounds.curve_battles} curve battles "
            f"(seed {rounds.curve_seed})"
        ),
    )
    curve.legend()
    sizes.bar(x, [int(row.cells["transitions"]) for row in rows])
    sizes.set(xlabel="round", ylabel="transitions trained on", title="data per round")
    for axes in (curve, sizes):
        axes.set_xticks(x)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
