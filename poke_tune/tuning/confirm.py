"""Stage 2, confirm: re-play the shortlist on fresh battles, beside the baselines.

The search scores every trial on the same selection battles and keeps the best. The best
of K trials is then over-estimated by about E[max of K standard normals] x SE (winner's
curse), so that score is not the champion's win rate. Here the `top_k` trials (by
selection score) play a fresh battle set (`confirm.seed`, never the objective's seed)
from their best checkpoints, and so do the baselines: the behaviour policies of the
dataset (and optionally BC trained on the same data with the same budget) and the current
registered champion. Every contender meets the same battles, so contenders are compared
battle by battle (`poke_tune.eval.paired`).

Racing: the battles are played in `confirm.rounds` chunks. After each chunk, a candidate
whose paired interval against the leading candidate lies wholly below zero stops
(at 99%, not 95%, because the race looks several times); the leader and the baselines
play every battle. The champion is the best candidate that played them all.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

from pydantic import TypeAdapter

from poke_tune.algos import (
    BCConfig,
    LearnedPolicy,
    Trainer,
    load_policy,
    run_training,
)
from poke_tune.data.compiled import OfflineDataset
from poke_tune.eval.paired import PairedDifference, paired_difference
from poke_tune.eval.winrate import WinRate, combine, evaluate
from poke_tune.sim.battles import BattleResult, SimulatorPool
from poke_tune.sim.policies import Policy, make_policy
from poke_tune.tuning.records import SCORED, TrialRow, describe
from poke_tune.tuning.spec import SearchSpec

__all__ = [
    "Confirmation",
    "Contender",
    "Entrant",
    "Standing",
    "bc_baseline",
    "behaviour_policies",
    "candidates",
    "confirm",
    "contenders",
    "shortlist",
    "winner",
]

_logger = logging.getLogger(__name__)

ELIMINATION_Z = 2.576
"""The race stops a candidate only when its 99% paired interval against the leader is
below zero: it looks after every round, and 95% at each look would stop too often."""

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


@dataclass(frozen=True, kw_only=True)
class Standing(Entrant):
    """One entrant's confirmation result."""

    result: WinRate
    stopped_early: bool = False
    vs_best_baseline: PairedDifference | None = None
    """This contender minus the best baseline, over the battles this contender played."""

    @property
    def optimism(self) -> float | None:
        """Selection score minus confirmation win rate: what selection added."""
        if self.selection_score is None:
            return None
        return self.selection_score - self.result.win_rate


@dataclass(frozen=True)
class Confirmation:
    """The confirmation stage's result, saved in the experiment folder."""

    opponent: str
    seed: int
    battles: int
    standings: list[Standing]
    champion: str | None
    """Name of the best candidate (it played every battle), None without candidates."""
    best_baseline: str | None
    vs_current_champion: PairedDifference | None
    """The champion minus the registered champion, on the same battles."""
    battles_played: int
    """Battles the candidates played (racing stops the clearly worse ones early)."""
    battles_fixed: int
    """Battles the candidates would have played without racing."""

    def standing(self, name: str | None) -> Standing | None:
        return next((s for s in self.standings if s.name == name), None)

    @property
    def winner(self) -> Standing | None:
        return self.standing(self.champion)

    @property
    def beats_baselines(self) -> bool:
        """The champion beats the best baseline beyond the paired 95% interval."""
        winner = self.winner
        if winner is None:
            return False
        return winner.vs_best_baseline is None or winner.vs_best_baseline.a_better

    def to_json(self) -> str:
        return _ADAPTER.dump_json(self, indent=2).decode()

    @staticmethod
    def from_json(text: str) -> Confirmation:
        return _ADAPTER.validate_json(text)


def shortlist(rows: Sequence[TrialRow], spec: SearchSpec, top_k: int) -> list[TrialRow]:
    """The `top_k` scored trials with a checkpoint, best selection score first."""
    scored = [r for r in rows if r.status in SCORED and r.score is not None and r.checkpoint]
    scored.sort(key=lambda r: -spec.objective.sign * (r.score or 0.0))
    return scored[:top_k]


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
    rows: Sequence[TrialRow],
    spec: SearchSpec,
    dataset: OfflineDataset,
    champion: Policy | None,
) -> list[Contender]:
    """Everyone who plays the confirmation: the shortlist, the behaviour policies, BC
    (`confirm.bc`) and the registered champion."""
    entrants = candidates(shortlist(rows, spec, spec.confirm.top_k), spec)
    for name in behaviour_policies(spec, dataset):
        entrants.append(Contender(name=name, policy=make_policy(name), role="baseline"))
    if spec.confirm.bc:
        _logger.info("training the BC baseline (%d steps)", spec.training.steps)
        entrants.append(Contender(name="bc", policy=bc_baseline(spec, dataset), role="baseline"))
    if champion is not None:
        entrants.append(Contender(name=champion.name, policy=champion, role="champion"))
    return entrants


def winner(
    rows: Sequence[TrialRow], confirmation: Confirmation | None, spec: SearchSpec
) -> TrialRow | None:
    """The sweep's answer: the confirmation's champion, else (no confirmation, e.g. an
    offline objective) the best selection score."""
    if confirmation is not None:
        champion = confirmation.winner
        return next((r for r in rows if champion and r.trial_id == champion.trial_id), None)
    return next(iter(shortlist(rows, spec, 1)), None)


def bc_baseline(spec: SearchSpec, dataset: OfflineDataset) -> LearnedPolicy:
    """BC trained on the sweep's data with the sweep's training budget and network."""
    config = BCConfig(network=spec.algorithm.network)
    trainer = Trainer(config, spec.training.model_copy(update={"fqe_steps": 0}), dataset)
    for _ in run_training(trainer):
        pass
    trainer.algorithm.train(False)
    return LearnedPolicy("bc", trainer.algorithm.action_scores, device=trainer.device)


def _chunks(battles: int, rounds: int) -> list[tuple[int, int]]:
    """(first, count) of `rounds` near-equal consecutive chunks of `battles`."""
    rounds = max(1, min(rounds, battles))
    edges = [battles * r // rounds for r in range(rounds + 1)]
    return [(a, b - a) for a, b in itertools.pairwise(edges) if b > a]


def confirm(
    spec: SearchSpec,
    contenders: Sequence[Contender],
    *,
    on_result: Callable[[BattleResult], None] | None = None,
) -> Confirmation:
    """Play the contenders on the confirmation battles and rank the candidates there."""
    settings, objective = spec.confirm, spec.objective
    battles = settings.battles
    opponent = make_policy(objective.opponent)
    chunks = _chunks(battles, settings.rounds if settings.race else 1)
    active = [c for c in contenders if c.role == "candidate"]
    always = [c for c in contenders if c.role != "candidate"]
    parts: dict[str, list[WinRate]] = {c.name: [] for c in contenders}
    stopped: set[str] = set()
    with SimulatorPool() as pool:
        for number, (first, count) in enumerate(chunks, 1):
            _logger.info(
                "confirmation round %d/%d: battles %d-%d, %d candidates, %d baselines",
                number,
                len(chunks),
                first,
                first + count - 1,
                len(active),
                len(always),
            )
            for contender in active + always:
                parts[contender.name].append(
                    evaluate(
                        contender.policy,
                        opponent,
                        battles=count,
                        seed=settings.seed,
                        first=first,
                        max_turns=objective.max_turns,
                        pool=pool,
                        on_result=on_result,
                    )
                )
            if number < len(chunks) and len(active) > 1:
                so_far = {c.name: combine(parts[c.name]) for c in active}
                leader = max(active, key=lambda c: so_far[c.name].win_rate)
                for contender in active:
                    gap = paired_difference(
                        so_far[contender.name].won, so_far[leader.name].won, z=ELIMINATION_Z
                    )
                    if contender is not leader and gap.b_better:
                        stopped.add(contender.name)
                active = [c for c in active if c.name not in stopped]
    results = {name: combine(chunked) for name, chunked in parts.items() if chunked}
    return _rank(spec, contenders, results, stopped, battles)


def _rank(
    spec: SearchSpec,
    contenders: Sequence[Contender],
    results: dict[str, WinRate],
    stopped: set[str],
    battles: int,
) -> Confirmation:
    baselines = [c for c in contenders if c.role == "baseline"]
    best_baseline = max(baselines, key=lambda c: results[c.name].win_rate, default=None)
    standings = []
    for contender in contenders:
        result = results[contender.name]
        versus = None
        if best_baseline is not None and contender.role != "baseline":
            reference = results[best_baseline.name].won[: result.battles]
            versus = paired_difference(result.won, reference)
        entrant = {field.name: getattr(contender, field.name) for field in fields(Entrant)}
        standings.append(
            Standing(
                **entrant,
                result=result,
                stopped_early=contender.name in stopped,
                vs_best_baseline=versus,
            )
        )
    finalists = [s for s in standings if s.role == "candidate" and not s.stopped_early]
    # Ties on confirmation go to the better selection score (the order of the shortlist).
    winner = max(finalists, key=lambda s: s.result.win_rate, default=None)
    champion = next((c for c in contenders if c.role == "champion"), None)
    versus_champion = None
    if winner is not None and champion is not None:
        versus_champion = paired_difference(winner.result.won, results[champion.name].won)
    played = sum(s.result.battles for s in standings if s.role == "candidate")
    return Confirmation(
        opponent=spec.objective.opponent,
        seed=spec.confirm.seed,
        battles=battles,
        standings=standings,
        champion=None if winner is None else winner.name,
        best_baseline=None if best_baseline is None else best_baseline.name,
        vs_current_champion=versus_champion,
        battles_played=played,
        battles_fixed=battles * len(finalists + [s for s in standings if s.stopped_early]),
    )


_ADAPTER: TypeAdapter[Confirmation] = TypeAdapter(Confirmation)
