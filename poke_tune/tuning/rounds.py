"""The data flywheel's plan and records: what each round trains on, which battles it
generates, the spec of its sweep, when the loop stops, and the loop's report (a CSV and a
PNG). Pure functions over the spec and the loop record; `iterate.py` runs them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib
from pydantic import BaseModel, ConfigDict

from poke_tune.eval.paired import PairedDifference, paired_difference
from poke_tune.tuning.spec import DatasetSpec, GenerateRecipe, SearchSpec

__all__ = [
    "PREVIOUS_CHAMPION",
    "CurvePoint",
    "LoopRecord",
    "RoundRecord",
    "RoundStage",
    "gain",
    "generation_recipe",
    "loop_table",
    "model_name",
    "round_name",
    "round_parts",
    "round_spec",
    "stop_reason",
    "write_loop_report",
]

RoundStage = Literal["generating", "sweeping", "measuring", "done"]
PREVIOUS_CHAMPION = "previous champion"
"""The curve's head-to-head opponent: the champion before this round."""


class CurvePoint(BaseModel):
    """A round's winner against one opponent on the curve battles (paired across rounds)."""

    opponent: str
    win_rate: float
    ci_low: float
    ci_high: float
    won: list[bool]


class RoundRecord(BaseModel):
    """One round of the loop: its data, its sweep, its winner and champion, its times."""

    model_config = ConfigDict(extra="ignore")

    index: int
    stage: RoundStage = "generating"
    sweep: str = ""
    """The round's sweep folder."""
    behaviour: list[str] = []
    """The policies that played the round's new battles (pinned; empty for round 0)."""
    generated: str = ""
    """The round's own data file (round 0: the spec's dataset)."""
    data: list[str] = []
    """The files of the dataset the round's sweep trains on (windowed)."""
    dataset: str = ""
    """The file the round's sweep trains on (the parts combined)."""
    new_battles: int = 0
    battles: int = 0
    trajectories: int = 0
    transitions: int = 0
    winner: str | None = None
    """The sweep's answer, pinned: `models:/MODEL/VERSION`, or its checkpoint file."""
    best_params: dict[str, Any] = {}
    promotion: str = ""
    """What the registry said of the winner (MLflow on)."""
    promoted: bool | None = None
    """The winner became the loop's champion (beat the previous one)."""
    champion_round: int | None = None
    """The round whose winner is the loop's champion after this round."""
    champion: str | None = None
    sweep_run_id: str | None = None
    curve: list[CurvePoint] = []
    """The winner's curve (round 0 on: against `rounds.curve_opponents`; later rounds also
    against the previous champion)."""
    seconds: dict[str, float] = {}
    """Wall time per stage (summed over resumes)."""

    def point(self, opponent: str) -> CurvePoint | None:
        return next((p for p in self.curve if p.opponent == opponent), None)


class LoopRecord(BaseModel):
    """How a loop was started and where it stands (`poke_tune_loop.json`)."""

    model_config = ConfigDict(extra="ignore")

    spec_file: str = ""
    overrides: list[str] = []
    argv: list[str] = []
    rounds: list[RoundRecord] = []
    stopped: str | None = None
    """Why the loop ended before `rounds.count` (the stop rule), if it did."""
    finished: bool = False


def round_name(spec: SearchSpec, index: int) -> str:
    return f"{spec.name}-r{index}"


def model_name(spec: SearchSpec) -> str:
    """The one registered model of every round (the sweep's default would differ)."""
    return spec.mlflow.registered_model or f"poke-tune-{spec.name}"


def round_parts(files: Sequence[str], window: int | None) -> list[str]:
    """The data files a round trains on: the last `window` rounds' (all when None)."""
    return list(files if window is None else files[-window:])


def generation_recipe(
    spec: SearchSpec, index: int, champion: str, earlier: Sequence[str] = ()
) -> GenerateRecipe:
    """Round `index`'s new battles: the champion at each temperature, the opponent pool
    and (`earlier_champions`) the earlier champions, every ordered pair of them in turn
    (`generate_dataset`); seeded apart from every other round (the recipe's seed + index)
    and otherwise like the dataset's recipe."""
    rounds, base = spec.rounds, spec.dataset.generate
    assert rounds is not None and base is not None, "checked by SearchSpec._rounds_problems"
    pool = list(rounds.opponents if rounds.opponents is not None else base.policies)
    if rounds.earlier_champions:
        pool += [name for name in earlier if name != champion]
    players = [f"{champion}:softmax={t:g}" for t in rounds.temperatures]
    return base.model_copy(
        update={
            "battles": rounds.battles,
            "policies": list(dict.fromkeys([*players, *pool])),
            "seed": base.seed + index,
        }
    )


def round_spec(
    spec: SearchSpec,
    index: int,
    folder: Path,
    *,
    dataset: Path | None = None,
    warm_start: dict[str, Any] | None = None,
) -> SearchSpec:
    """The sweep of round `index`, in the loop folder, registering under the loop's model
    and logging into the loop's MLflow experiment. Later rounds train on `dataset`, start
    from `warm_start` (the previous round's best), run `rounds.num_samples` trials and keep
    the spec's baselines (not the learned behaviour policies of the grown data). Each
    round's sampler is seeded apart (the searcher's seed + index): with one seed, TPE's
    first random proposals repeat every round and one of them can be the warm start
    again, a duplicate trial."""
    rounds = spec.rounds
    assert rounds is not None
    mlflow = spec.mlflow.model_copy(
        update={
            "registered_model": model_name(spec),
            "experiment": spec.mlflow.experiment or spec.name,
        }
    )
    update: dict[str, Any] = {
        "name": round_name(spec, index),
        "storage_path": str(folder),
        "mlflow": mlflow,
        "rounds": None,
    }
    if index > 0:
        assert dataset is not None, "a later round trains on its combined data"
        baselines = spec.confirm.baselines
        if baselines is None and spec.dataset.generate is not None:
            baselines = list(dict.fromkeys(spec.dataset.generate.policies))
        starts = [warm_start] if warm_start else []
        starts += [p for p in spec.searcher.warm_start if p != warm_start]
        update |= {
            "dataset": DatasetSpec(path=dataset),
            "confirm": spec.confirm.model_copy(update={"baselines": baselines}),
            "searcher": spec.searcher.model_copy(
                update={"warm_start": starts, "seed": spec.searcher.seed + index}
            ),
            "num_samples": rounds.num_samples or spec.num_samples,
        }
    return spec.model_copy(update=update)


def gain(record: LoopRecord, index: int, reference: str) -> PairedDifference | None:
    """Round `index`'s champion against round `index - 1`'s on the curve battles against
    `reference` (None for round 0; zero when the champion stayed)."""
    if index == 0:
        return None
    now, before = (
        _champion_point(record, index, reference),
        _champion_point(record, index - 1, reference),
    )
    if now is None or before is None:
        return None
    return paired_difference(now.won, before.won)


def _champion_point(record: LoopRecord, index: int, opponent: str) -> CurvePoint | None:
    champion = record.rounds[index].champion_round
    return None if champion is None else record.rounds[champion].point(opponent)


def stop_reason(spec: SearchSpec, record: LoopRecord, index: int) -> str | None:
    """Why the loop ends after round `index`: all rounds done, or the stop rule."""
    rounds = spec.rounds
    assert rounds is not None
    if index >= rounds.count:
        return None
    if rounds.min_gain is None or index == 0:
        return None
    reference = rounds.reference_opponent(spec.objective)
    difference = gain(record, index, reference)
    if difference is None or difference.difference >= rounds.min_gain:
        return None
    return (
        f"round {index}'s champion gained {difference.difference:+.3f} against {reference} "
        f"(paired [{difference.ci_low:+.3f}, {difference.ci_high:+.3f}]), less than "
        f"rounds.min_gain {rounds.min_gain:+.3f}"
    )


@dataclass(frozen=True)
class _Row:
    """One round of the report: the champion after it, its data, its times."""

    cells: dict[str, str]
    points: dict[str, CurvePoint]


def _report_rows(spec: SearchSpec, record: LoopRecord) -> list[_Row]:
    rounds = spec.rounds
    assert rounds is not None
    opponents = rounds.curve_against(spec.objective)
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
            difference = gain(record, item.index, opponent)
            cells[f"vs {opponent} paired to previous"] = (
                ""
                if difference is None
                else f"{difference.difference:+.3f} [{difference.ci_low:+.3f}, "
                f"{difference.ci_high:+.3f}]"
            )
        head = item.point(PREVIOUS_CHAMPION)
        cells["winner vs previous champion"] = "" if head is None else f"{head.win_rate:.3f}"
        for stage in ("generating", "sweeping", "measuring"):
            cells[f"{stage} s"] = f"{item.seconds.get(stage, 0.0):.0f}"
        rows.append(_Row(cells, points))
    return rows


def loop_table(spec: SearchSpec, record: LoopRecord) -> list[dict[str, str]]:
    """The report's rows as the CSV holds them (the CLI prints them too)."""
    return [row.cells for row in _report_rows(spec, record)]


def write_loop_report(folder: Path, spec: SearchSpec, record: LoopRecord) -> list[Path]:
    """`rounds.csv` (per round: data size, the champion's curve with its paired difference
    to the previous round's champion, times per stage) and `curve.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = _report_rows(spec, record)
    table = folder / "rounds.csv"
    with table.open("w", newline="") as out:
        columns = list(rows[0].cells) if rows else ["round"]
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.cells)
    chart = folder / "curve.png"
    _plot_curve(rows, spec, chart)
    return [table, chart]


def _plot_curve(rows: Sequence[_Row], spec: SearchSpec, path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = spec.rounds
    assert rounds is not None
    figure, (curve, sizes) = plt.subplots(1, 2, figsize=(11, 4))
    x = [int(row.cells["round"]) for row in rows]
    for opponent in rounds.curve_against(spec.objective):
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
        title=f"{spec.name}: {rounds.curve_battles} curve battles (seed {rounds.curve_seed})",
    )
    curve.legend()
    sizes.bar(x, [int(row.cells["transitions"]) for row in rows])
    sizes.set(xlabel="round", ylabel="transitions trained on", title="data per round")
    for axes in (curve, sizes):
        axes.set_xticks(x)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
