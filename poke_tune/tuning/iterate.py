"""The data flywheel (`poke-tune iterate`): round after round, the champion plays new
battles that join the data, and the sweep runs again on the grown dataset.

Round 0 is the spec's sweep, named `NAME-r0`. Round k (k >= 1) has three stages:
1. generating: `rounds.battles` new battles between round k-1's champion, pinned
   (`models:/MODEL/VERSION:softmax=T` for each temperature; its checkpoint file when MLflow
   is off), and the pool (`rounds.opponents`, earlier champions), made once and cached by
   their recipe (`datasets.prepare_dataset`), then combined with the earlier rounds'
   data (`rounds.window`), cached too (`rounds.generation_recipe`, `rounds.round_parts`);
2. sweeping: the spec's sweep on that data as `NAME-rk`, warm-started from round k-1's
   best hyperparameters. Every round registers under one model (`rounds.model_name`), so
   the confirmation replays the registered champion and promotion must beat it;
3. measuring: the round's winner plays the curve battles (`rounds.curve_battles`, the same
   seeded battles every round: paired) against `rounds.curve_opponents`, the reference
   and the previous champion. The loop's champion is the registry's verdict (MLflow on),
   else the winner if it beats the previous champion against the reference on the curve;
   the stop rule (`rounds.min_gain`) reads the champion's gain there.
Round 0 has stages 2 and 3.

The loop folder `storage_path/NAME` holds the rounds' sweep folders, the loop's spec, its
record (`rounds.LoopRecord`, rewritten atomically after every stage) and its report
(`report/`, after every round; on MLflow too: a parent run for the loop, a child run per
round tagged with its sweep). `resume_iterate` continues at the round and stage the record
names: a sweep cut off mid-search is resumed (`resume_sweep`), a finished one is not re-run,
and data already generated is found in the cache. One process works on a loop at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from poke_tune.data.combine import combine_datasets
from poke_tune.data.compiled import OfflineDataset, load_dataset
from poke_tune.eval.winrate import evaluate
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.sim.runtime import cache_dir
from poke_tune.tuning.cluster_battles import cluster_play
from poke_tune.tuning.confirm.confirm import winner
from poke_tune.tuning.datasets import Recorder, build_once, prepare_dataset
from poke_tune.tuning.experiment import Experiment, folder_lock
from poke_tune.tuning.policies import resolve_policy
from poke_tune.tuning.records import SweepRecord
from poke_tune.tuning.redaction import redact
from poke_tune.tuning.rounds import (
    PREVIOUS_CHAMPION,
    CurvePoint,
    LoopRecord,
    RoundRecord,
    RoundStage,
    gain,
    generation_recipe,
    model_name,
    round_parts,
    round_spec,
    stop_reason,
    write_loop_report,
)
from poke_tune.tuning.spec import DatasetSpec, SearchSpec
from poke_tune.tuning.sweep import (
    OnBattle,
    SweepOutcome,
    resume_sweep,
    run_sweep,
    track_sweep,
)

__all__ = ["IterateOutcome", "Loop", "LoopExistsError", "resume_iterate", "run_iterate"]

_logger = logging.getLogger(__name__)

LOOP_SPEC_FILE = "poke_tune_loop_spec.json"
LOOP_FILE = "poke_tune_loop.json"
LOCK_FILE = ".poke_tune_loop.lock"
REPORT_FOLDER = "report"
LOOP_TAG = "poke_tune.loop"
ROUND_TAG = "poke_tune.round"
ROUND_SWEEP_TAG = "poke_tune.round_sweep"

OnRound = Callable[[SearchSpec, LoopRecord, RoundRecord], None]
"""Called after each finished round (the CLI prints its verdict)."""


class LoopExistsError(ValueError):
    """`iterate` of a name whose loop folder already holds a loop or a sweep."""


@dataclass(frozen=True)
class Loop:
    """A loop's folder (`storage_path/NAME`): its spec, record, lock and report."""

    spec: SearchSpec

    @classmethod
    def open(cls, path: Path | str) -> Loop:
        spec_file = Path(path) / LOOP_SPEC_FILE
        if not spec_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a poke-tune loop folder (no {LOOP_SPEC_FILE}); expected "
                "STORAGE_PATH/NAME of `poke-tune iterate`"
            )
        # The tracking URI is stored as given: a loop with credentials in it is refused
        # at the start (`run_iterate`).
        return cls(SearchSpec.model_validate_json(spec_file.read_text()))

    @property
    def folder(self) -> Path:
        return Path(self.spec.storage_path.removeprefix("file://")) / self.spec.name

    @property
    def started(self) -> bool:
        return (self.folder / LOOP_SPEC_FILE).is_file()

    @property
    def report_folder(self) -> Path:
        return self.folder / REPORT_FOLDER

    @contextmanager
    def lock(self) -> Iterator[None]:
        busy = f"loop {self.spec.name!r} in {self.folder} is in use by another process"
        with folder_lock(self.folder / LOCK_FILE, busy):
            yield

    def start(self, record: LoopRecord) -> None:
        _write(self.folder / LOOP_SPEC_FILE, self.spec.model_dump_json(indent=2))
        self.write(record)

    def read(self) -> LoopRecord:
        return LoopRecord.model_validate_json((self.folder / LOOP_FILE).read_text())

    def write(self, record: LoopRecord) -> None:
        _write(self.folder / LOOP_FILE, record.model_dump_json(indent=2))


def _write(path: Path, text: str) -> None:
    """Written under another name and renamed: a kill never leaves half a record."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


@dataclass(frozen=True)
class IterateOutcome:
    """Where a loop stands: its record, whether Ctrl-C stopped it, its report."""

    loop: Loop
    record: LoopRecord
    interrupted: bool
    report: Path | None
    last_sweep: SweepOutcome | None = None

    @property
    def spec(self) -> SearchSpec:
        return self.loop.spec


def run_iterate(
    spec: SearchSpec,
    *,
    record: LoopRecord | None = None,
    address: str | None = None,
    on_battle: OnBattle | None = None,
    on_round: OnRound | None = None,
    recorder: Recorder | None = None,
) -> IterateOutcome:
    """Run the data flywheel of `spec` (its `rounds` section) from round 0."""
    if spec.rounds is None:
        raise ValueError(
            f"spec {spec.name!r} has no `rounds:` section: add one or pass --rounds N"
        )
    if "://" in spec.storage_path and not spec.storage_path.startswith("file://"):
        raise ValueError(
            f"storage_path {spec.storage_path!r}: the data flywheel keeps its record in a "
            "local (or mounted) folder; object storage is not supported"
        )
    uri = spec.mlflow.tracking_uri
    if uri and redact(uri) != uri:
        raise ValueError(
            f"tracking URI {redact(uri)}: the data flywheel stores its spec as run, so it "
            "takes a tracking URI without credentials"
        )
    loop = Loop(spec)
    with loop.lock():
        if loop.started or Experiment(spec).started:
            raise LoopExistsError(
                f"{loop.folder} already holds a loop or sweep named {spec.name!r}: continue "
                f"it with `poke-tune iterate --resume {loop.folder}`, or name the loop "
                "anew: --set name=NEW_NAME"
            )
        loop.start(record or LoopRecord())
        return _turn(
            loop, address=address, on_battle=on_battle, on_round=on_round, recorder=recorder
        )


def resume_iterate(
    folder: Path,
    *,
    address: str | None = None,
    on_battle: OnBattle | None = None,
    on_round: OnRound | None = None,
    recorder: Recorder | None = None,
) -> IterateOutcome:
    """Continue a loop at the round and stage its record names."""
    loop = Loop.open(folder)
    with loop.lock():
        return _turn(
            loop, address=address, on_battle=on_battle, on_round=on_round, recorder=recorder
        )


def _turn(
    loop: Loop,
    *,
    address: str | None,
    on_battle: OnBattle | None,
    on_round: OnRound | None,
    recorder: Recorder | None,
) -> IterateOutcome:
    """Play rounds until `rounds.count`, the stop rule, or Ctrl-C."""
    spec = loop.spec
    rounds = spec.rounds
    assert rounds is not None
    record = loop.read()
    sweep: SweepOutcome | None = None
    while not record.finished:
        if not record.rounds or record.rounds[-1].stage == "done":
            index = len(record.rounds)
            first: RoundStage = "sweeping" if index == 0 else "generating"
            record.rounds.append(RoundRecord(index=index, stage=first))
            loop.write(record)
        current = record.rounds[-1]
        if current.stage == "generating":
            with _timed(current, "generating"):
                _generate(spec, record, current)
            current.stage = "sweeping"
            loop.write(record)
        if current.stage == "sweeping":
            with _timed(current, "sweeping"):
                sweep = _sweep(loop, record, current, address, on_battle, recorder)
            if sweep.interrupted:
                loop.write(record)
                return IterateOutcome(loop, record, True, _report(loop, record), sweep)
            current.stage = "measuring"
            loop.write(record)
        if current.stage == "measuring":
            with _timed(current, "measuring"):
                _measure(spec, record, current, on_battle)
            current.stage = "done"
            reason = stop_reason(spec, record, current.index)
            if current.index >= rounds.count or reason is not None:
                record.finished, record.stopped = True, reason
            loop.write(record)
            _report(loop, record)
            if on_round is not None:
                on_round(spec, record, current)
    return IterateOutcome(loop, record, False, _report(loop, record), sweep)


@contextmanager
def _timed(current: RoundRecord, stage: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        current.seconds[stage] = current.seconds.get(stage, 0.0) + time.monotonic() - start


def _generate(spec: SearchSpec, record: LoopRecord, current: RoundRecord) -> None:
    """The round's new battles (cached by their recipe) and its dataset (cached too)."""
    rounds = spec.rounds
    assert rounds is not None
    earlier = [r.champion for r in record.rounds[:-1] if r.champion]
    champion = earlier[-1]
    recipe = generation_recipe(spec, current.index, champion, earlier[:-1])
    _logger.info(
        "round %d: %d battles of %s", current.index, recipe.battles, ", ".join(recipe.policies)
    )
    generated = prepare_dataset(
        DatasetSpec(generate=recipe), tracking_uri=spec.mlflow.tracking_uri
    )
    current.behaviour = recipe.policies
    current.generated = str(generated.source)
    current.new_battles = recipe.battles
    files = [r.generated for r in record.rounds]
    _describe(current, _combined(round_parts(files, rounds.window)))


def _combined(parts: list[str]) -> OfflineDataset:
    if len(parts) == 1:
        return load_dataset(Path(parts[0]))
    key = hashlib.sha256(" ".join(Path(p).name for p in parts).encode()).hexdigest()[:16]
    out = cache_dir() / "combined" / f"{key}.json"  # the rounds' shards listed, not copied
    paths = [Path(p) for p in parts]
    return load_dataset(build_once(out, lambda path: combine_datasets(paths, path)))


def _describe(current: RoundRecord, dataset: OfflineDataset) -> None:
    parts = dataset.header.generator.get("parts")
    current.data = [p["path"] for p in parts] if parts else [str(dataset.source)]
    current.dataset = str(dataset.source)
    current.battles = dataset.num_battles
    current.trajectories = dataset.num_trajectories
    current.transitions = dataset.num_transitions


def _sweep(
    loop: Loop,
    record: LoopRecord,
    current: RoundRecord,
    address: str | None,
    on_battle: OnBattle | None,
    recorder: Recorder | None,
) -> SweepOutcome:
    """The round's sweep: started, resumed where it was cut off, or read back if it ended."""
    spec = loop.spec
    if current.index == 0:
        dataset = prepare_dataset(
            spec.dataset, recorder=recorder, tracking_uri=spec.mlflow.tracking_uri
        )
        current.generated = str(dataset.source)
        current.new_battles = dataset.num_battles
        _describe(current, dataset)
        sweep_spec = round_spec(spec, 0, loop.folder)
    else:
        previous = record.rounds[current.index - 1]
        sweep_spec = round_spec(
            spec,
            current.index,
            loop.folder,
            dataset=Path(current.dataset),
            warm_start=_best_params(record, previous),
        )
    experiment = Experiment(sweep_spec)
    assert experiment.folder is not None
    current.sweep = str(experiment.folder)
    if not experiment.started:
        started = SweepRecord(
            spec_file=record.spec_file, overrides=record.overrides, argv=record.argv
        )
        outcome = run_sweep(
            sweep_spec,
            address=address,
            record=started,
            on_battle=on_battle,
            recorder=recorder,
        )
    elif experiment.read_record().stage in ("searching", "interrupted"):
        outcome = resume_sweep(
            experiment.folder, address=address, on_battle=on_battle, recorder=recorder
        )
    else:  # finished: its answer and promotion read back, nothing played again
        outcome = track_sweep(experiment.folder)
    if not outcome.interrupted:
        _answer(spec, current, outcome)
    return outcome


def _best_params(record: LoopRecord, previous: RoundRecord) -> dict[str, object]:
    """The previous round's best hyperparameters: its winner's, else its champion's."""
    if previous.best_params:
        return previous.best_params
    champion = previous.champion_round
    return record.rounds[champion].best_params if champion is not None else {}


def _answer(spec: SearchSpec, current: RoundRecord, outcome: SweepOutcome) -> None:
    """The round's winner, pinned, and what the registry decided of it."""
    answer = winner(outcome.ranked, outcome.confirmation)
    if answer is None or answer.checkpoint is None:
        current.winner = None
        current.best_params = {}
        return
    current.best_params = dict(answer.params)
    tracking = outcome.tracking
    promotion = tracking.promotion if tracking is not None else None
    if tracking is not None:
        current.sweep_run_id = tracking.parent_run_id
    if promotion is not None:
        current.winner = f"models:/{promotion.model}/{promotion.version}"
        current.promotion = ("promoted: " if promotion.promoted else "not promoted: ") + (
            promotion.reason
        )
        current.promoted = promotion.promoted
    else:
        current.winner = str(answer.checkpoint)


def _measure(
    spec: SearchSpec, record: LoopRecord, current: RoundRecord, on_battle: OnBattle | None
) -> None:
    """The winner's curve; the loop's champion after the round."""
    rounds = spec.rounds
    assert rounds is not None
    previous = record.rounds[current.index - 1] if current.index > 0 else None
    if current.winner is None:
        if previous is None:
            raise ValueError(
                f"round 0 of {spec.name!r} found no champion (every trial failed or "
                f"diverged): see {current.sweep}"
            )
        current.promoted = False
        current.champion_round, current.champion = previous.champion_round, previous.champion
        return
    uri = spec.mlflow.tracking_uri
    policy = resolve_policy(current.winner, uri)
    against: dict[str, Policy] = {
        name: make_policy(name) for name in rounds.curve_against(spec.objective)
    }
    if previous is not None and previous.champion is not None:
        against[PREVIOUS_CHAMPION] = resolve_policy(previous.champion, uri)
    done = {p.opponent for p in current.curve}
    for opponent, other in against.items():
        if opponent in done:
            continue
        result = evaluate(
            policy,
            other,
            battles=rounds.curve_battles,
            seed=rounds.curve_seed,
            battle_format=_battle_format(spec),
            max_turns=spec.objective.max_turns,
            on_result=on_battle,
            play=cluster_play(),
        )
        current.curve.append(
            CurvePoint(
                opponent=opponent,
                win_rate=result.win_rate,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                won=list(result.won),
            )
        )
    if previous is None:
        current.promoted = True if current.promoted is None else current.promoted
        beats = True  # round 0's winner starts the loop, promoted or not
    elif spec.mlflow.enabled:
        beats = bool(current.promoted)
    else:
        current.champion_round = current.index  # compare the winner as if champion
        difference = gain(record, current.index, rounds.reference_opponent(spec.objective))
        beats = difference is not None and difference.difference > 0
        current.promoted = beats
    if beats or previous is None:
        current.champion_round, current.champion = current.index, current.winner
    else:
        current.champion_round, current.champion = previous.champion_round, previous.champion


def _battle_format(spec: SearchSpec) -> str:
    recipe = spec.dataset.generate
    assert recipe is not None, "checked by SearchSpec._rounds_problems"
    return recipe.battle_format


def _report(loop: Loop, record: LoopRecord) -> Path:
    """The loop's report on disk, then on MLflow (a failure there is logged: the report
    is on disk, and the next round or `--resume` sends it again)."""
    folder = loop.report_folder
    write_loop_report(folder, loop.spec, record)
    if loop.spec.mlflow.enabled:
        try:
            _track(loop, record)
        except Exception as error:  # tracking must not stop the loop
            _logger.warning("the loop's report was not logged to MLflow: %s", error)
    return folder


def _track(loop: Loop, record: LoopRecord) -> None:
    """A parent run for the loop (its report as artifacts) and a child per done round
    (its numbers, tagged with its sweep's folder and parent run)."""
    from mlflow.tracking import MlflowClient

    from poke_tune.tuning.track.store import experiment_id

    spec = loop.spec
    client = MlflowClient(spec.mlflow.tracking_uri)
    round0 = round_spec(spec, 0, loop.folder)
    experiment = experiment_id(client, round0)
    location = str(loop.folder)
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{LOOP_TAG}` = '{location}'", max_results=1000
    )
    parent = next((r.info.run_id for r in runs if ROUND_TAG not in r.data.tags), None)
    if parent is None:
        parent = client.create_run(
            experiment,
            run_name=f"{spec.name} (loop)",
            tags={LOOP_TAG: location, "registered_model": model_name(spec)},
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
    client.log_artifacts(parent, str(loop.report_folder), "report")
    if record.finished:
        if record.stopped:
            client.set_tag(parent, "stopped", record.stopped)
        client.set_terminated(parent)
