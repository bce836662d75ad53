"""Stage 1, search: from a validated spec to a Ray Tune sweep (OptunaSearch + ASHA ->
Tuner -> fit() on the cluster) and one typed row per trial.

`cluster.py` starts Ray (or connects to it), checks it can run the spec, and fits the Tuner
that `tuner.py` builds; this module reads the trials back, best first (`searched` does so
for a search that is not running).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ray import tune

from poke_tune.data.compiled import OfflineDataset
from poke_tune.tuning.records import SearchOutcome, TrialRow, ranked, trial_status
from poke_tune.tuning.search.cluster import fit_on_cluster, init_ray
from poke_tune.tuning.search.trainable import CHECKPOINT_FILE
from poke_tune.tuning.spec import OBJECTIVE_KEY, SCORE_KEY, ObjectiveSpec, SearchSpec

__all__ = ["connect_named_cluster", "resume_search", "search", "searched", "trial_rows"]


def connect_named_cluster(address: str | None) -> bool:
    """Connect to the cluster `address` or RAY_ADDRESS names (a Ray Job's driver has it),
    before the dataset is built, so that its battles spread over the nodes
    (`tuning.cluster_battles`); True if connected. Without a named cluster nothing starts
    here: the search starts its local Ray later, as before."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        return False
    init_ray(address)
    return True


def search(
    spec: SearchSpec,
    dataset: OfflineDataset,
    *,
    address: str | None = None,
    callbacks: Sequence[tune.Callback] = (),
) -> SearchOutcome:
    """Run the search: every trial trains and is scored on the selection battles."""
    return _outcome(fit_on_cluster(spec, dataset, address, callbacks=callbacks), spec)


def resume_search(
    path: Path, spec: SearchSpec, dataset: OfflineDataset, *, address: str | None = None
) -> SearchOutcome:
    """Continue an interrupted search where its experiment state left it (the Tuner comes
    back with its searcher and scheduler state)."""
    return _outcome(fit_on_cluster(spec, dataset, address, restore=path), spec)


def searched(path: Path, spec: SearchSpec) -> SearchOutcome:
    """The rows of a search that is not running (for `best`, `confirm`, `track`): read from
    Tune's experiment state, with no Ray instance and no dataset."""
    return _outcome(tune.ResultGrid(tune.ExperimentAnalysis(str(path))), spec)


def _outcome(results: tune.ResultGrid, spec: SearchSpec) -> SearchOutcome:
    # Tune's own trial states tell an ended trial from one cut off by Ctrl-C.
    states = {
        trial.trial_id: trial.status
        for trial in tune.ExperimentAnalysis(results.experiment_path).trials
    }
    rows = trial_rows(results, spec.objective, states)
    interrupted = len(rows) < spec.num_samples or any(r.status == "interrupted" for r in rows)
    return SearchOutcome(results, rows, interrupted, ranked(rows, spec.objective))


def trial_rows(
    results: tune.ResultGrid, objective: ObjectiveSpec, states: dict[str, str] | None = None
) -> list[TrialRow]:
    """One row per trial: parameters, selection score, status, and the checkpoint saved at
    its best evaluation (Ray's `get_best_checkpoint` by the evaluation's own value)."""
    rows = []
    for index in range(len(results)):
        result = results[index]
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id", Path(result.path).name))
        status = trial_status(
            metrics, failed=result.error is not None, state=(states or {}).get(trial_id)
        )
        best = None
        if result.best_checkpoints:  # a trial that failed at once has none
            best = result.get_best_checkpoint(SCORE_KEY, objective.mode)
        score = metrics.get(OBJECTIVE_KEY)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                params=dict(result.config or {}),
                score=None if score is None else float(score),
                status=status,
                evaluations=int(metrics.get("training_iteration", 0)),
                checkpoint=None if best is None else Path(best.path) / CHECKPOINT_FILE,
            )
        )
    return rows
