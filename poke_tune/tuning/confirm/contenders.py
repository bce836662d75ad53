"""Stage 2's entrants: who plays the confirmation battles, each with the policy that plays
for it: the shortlist (the best trials by selection score, from their best checkpoints),
the behaviour policies of the dataset, optionally BC trained on the same data with the
same budget, and the registered champion.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from poke_tune.algos import BCConfig, LearnedPolicy, Trainer, load_policy, run_training
from poke_tune.data.compiled import OfflineDataset
from poke_tune.sim.policies import Policy
from poke_tune.tuning.policies import resolve_policy
from poke_tune.tuning.records import TrialRow, describe
from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "Contender",
    "Entrant",
    "Role",
    "bc_baseline",
    "behaviour_policies",
    "candidates",
    "contenders",
]

_logger = logging.getLogger(__name__)

Role = Literal["candidate", "baseline", "champion"]


@dataclass(frozen=True, kw_only=True)
class Entrant:
    """Who plays the confirmation battles: what a contender brings and its standing keeps."""

    name: str
    role: Role
    trial_id: str | None = None
    selection_score: float | None = None
    checkpoint: str | None = None


@dataclass(frozen=True, kw_only=True)
class Contender(Entrant):
    """An entrant with the policy that plays for it."""

    policy: Policy


def candidates(rows: Sequence[TrialRow], spec: SearchSpec) -> list[Contender]:
    """The shortlisted trials as contenders, each playing from its best checkpoint."""
    algo = spec.algorithm.algo
    return [
        Contender(
            name=f"{describe(algo, row.params)} ({row.trial_id})",
            policy=load_policy(row.checkpoint),
            role="candidate",
            trial_id=row.trial_id,
            selection_score=row.score,
            checkpoint=str(row.checkpoint),
        )
        for row in rows
        if row.checkpoint is not None
    ]


def behaviour_policies(spec: SearchSpec, dataset: OfflineDataset | None) -> list[str]:
    """The baselines' names: `confirm.baselines`, else the policies the data came from."""
    if spec.confirm.baselines is not None:
        return list(spec.confirm.baselines)
    if spec.dataset.generate is not None:
        return list(dict.fromkeys(spec.dataset.generate.policies))
    if dataset is not None:
        return list(dict.fromkeys(dataset.header.generator.get("policies", [])))
    return []


def contenders(
    ranked: Sequence[TrialRow],
    spec: SearchSpec,
    dataset: OfflineDataset,
    champion: Policy | None,
) -> list[Contender]:
    """Everyone who plays the confirmation: the shortlist (the `confirm.top_k` first of
    `ranked`), the behaviour policies, BC (`confirm.bc`) and the registered champion."""
    bc = None
    if spec.confirm.bc:
        _logger.info("training the BC baseline (%d steps)", spec.training.steps)
        bc = Contender(name="bc", policy=bc_baseline(spec, dataset), role="baseline")
    entrants = candidates(ranked[: spec.confirm.top_k], spec)
    for name in behaviour_policies(spec, dataset):
        policy = resolve_policy(name, spec.mlflow.tracking_uri)  # learned behaviour too
        entrants.append(Contender(name=name, policy=policy, role="baseline"))
    if bc is not None:
        entrants.append(bc)
    if champion is not None:
        entrants.append(Contender(name=champion.name, policy=champion, role="champion"))
    return entrants


def bc_baseline(spec: SearchSpec, dataset: OfflineDataset) -> LearnedPolicy:
    """BC trained on the sweep's data with the sweep's training budget and network."""
    config = BCConfig(network=spec.algorithm.network)
    trainer = Trainer(config, spec.training.model_copy(update={"fqe_steps": 0}), dataset)
    for _ in run_training(trainer):
        pass
    return trainer.policy("bc")
