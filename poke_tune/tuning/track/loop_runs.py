"""The data flywheel in MLflow: a parent run for the loop (its report as artifacts) and a
child run per finished round (its numbers, tagged with its sweep's folder and parent run),
in the experiment every round's sweep logs into.

Runs are found again by tags, as a sweep's are: the loop's runs have `poke_tune.loop` = the
loop folder, each round's also `poke_tune.round` = its index, so a resumed loop adds only
the rounds not logged yet.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from poke_tune.tuning.records import LoopRecord
from poke_tune.tuning.spec import SearchSpec
from poke_tune.tuning.track.store import experiment_id

__all__ = ["LOOP_TAG", "ROUND_SWEEP_TAG", "ROUND_TAG", "log_loop"]

LOOP_TAG = "poke_tune.loop"
ROUND_TAG = "poke_tune.round"
ROUND_SWEEP_TAG = "poke_tune.round_sweep"


def log_loop(
    sweep: SearchSpec,
    *,
    name: str,
    model: str,
    folder: Path,
    report: Path,
    record: LoopRecord,
) -> None:
    """Log the loop `name` (its folder, record and report folder) into the MLflow store
    and experiment of its rounds' sweeps (`sweep`: any round's spec), tagged with the
    model every round registers under."""
    client = MlflowClient(sweep.mlflow.tracking_uri)
    experiment = experiment_id(client, sweep)
    location = str(folder)
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{LOOP_TAG}` = '{location}'", max_results=1000
    )
    parent = next((r.info.run_id for r in runs if ROUND_TAG not in r.data.tags), None)
    if parent is None:
        parent = client.create_run(
            experiment,
            run_name=f"{name} (loop)",
            tags={LOOP_TAG: location, "registered_model": model},
        ).info.run_id
    logged = {r.data.tags[ROUND_TAG] for r in runs if ROUND_TAG in r.data.tags}
    for item in record.rounds:
        if item.stage != "done" or str(item.index) in logged:
            continue
        tags = {
            LOOP_TAG: location,
            ROUND_TAG: str(item.index),
            ROUND_SWEEP_TAG: item.sweep,
            "mlflow.parentRunId": parent,
            "champion": item.champion or "",
            "winner": item.winner or "",
            "promotion": item.promotion,
        }
        if item.sweep_run_id:
            tags["poke_tune.sweep_run_id"] = item.sweep_run_id
        child = client.create_run(experiment, run_name=f"round {item.index}", tags=tags)
        run_id = child.info.run_id
        metrics = {
            "round/new_battles": float(item.new_battles),
            "round/battles": float(item.battles),
            "round/trajectories": float(item.trajectories),
            "round/transitions": float(item.transitions),
            **{f"round/seconds_{k}": v for k, v in item.seconds.items()},
        }
        for point in item.curve:
            key = point.opponent.replace(" ", "_").replace(":", "_").replace("=", "_")
            metrics[f"round/winner_vs_{key}"] = point.win_rate
        for key, value in metrics.items():
            client.log_metric(run_id, key, value, step=item.index)
        client.set_terminated(run_id)
        client.log_metric(parent, "loop/transitions", float(item.transitions), step=item.index)
    client.log_artifacts(parent, str(report), "report")
    if record.finished:
        if record.stopped:
            client.set_tag(parent, "stopped", record.stopped)
        client.set_terminated(parent)
