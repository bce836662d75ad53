"""Stage 2, confirm: re-play the shortlist on fresh battles, beside the baselines.

The search scores every trial on the same selection battles and keeps the best. The best
of K trials is then over-estimated by about E[max of K standard normals] x SE (winner's
curse), so that score is not the champion's win rate. Here the `top_k` trials (by
selection score) play a fresh battle set (`confirm.seed`, never the objective's seed)
from their best checkpoints, and so do the baselines: the behaviour policies of the
dataset (and optionally BC trained on the same data with the same budget) and the current
registered champion (`contenders.py` says who plays). Every contender meets the same
battles, so contenders are compared battle by battle (`poke_tune.eval.paired`).

Racing (`eval/race.py`): the battles are played in `confirm.rounds` chunks. After each
chunk, a candidate whose paired interval against the leading candidate lies wholly below
zero stops (at 99%, not 95%, because the race looks several times); the leader and the
baselines play every battle. The champion is the best candidate that played them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from pydantic import TypeAdapter

from poke_tune.eval.paired import PairedDifference, paired_difference
from poke_tune.eval.race import race
from poke_tune.eval.winrate import WinRate
from poke_tune.sim.battle_records import BattleResult
from poke_tune.sim.policies import make_policy
from poke_tune.tuning.cluster_battles import cluster_play
from poke_tune.tuning.confirm.contenders import Contender, Entrant
from poke_tune.tuning.records import TrialRow
from poke_tune.tuning.spec import ConfirmSpec, ObjectiveSpec

__all__ = ["Confirmation", "Standing", "confirm", "winner"]


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


def winner(ranked: Sequence[TrialRow], confirmation: Confirmation | None) -> TrialRow | None:
    """The sweep's answer among `ranked` (`records.ranked`): the confirmation's champion,
    else (no confirmation, e.g. an offline objective) the best selection score."""
    if confirmation is not None:
        champion = confirmation.winner
        return next((r for r in ranked if champion and r.trial_id == champion.trial_id), None)
    return next(iter(ranked), None)


def confirm(
    settings: ConfirmSpec,
    objective: ObjectiveSpec,
    contenders: Sequence[Contender],
    *,
    on_result: Callable[[BattleResult], None] | None = None,
) -> Confirmation:
    """Play the contenders on the confirmation battles (a race among the candidates, see
    `eval/race.py`), then rank them there against the best baseline and the current
    champion."""
    raced = race(
        {c.name: c.policy for c in contenders if c.role == "candidate"},
        {c.name: c.policy for c in contenders if c.role != "candidate"},
        make_policy(objective.opponent),
        battles=settings.battles,
        seed=settings.seed,
        rounds=settings.rounds if settings.race else 1,
        max_turns=objective.max_turns,
        on_result=on_result,
        play=cluster_play(),  # Ray tasks on a started multi-node Ray, else local
    )
    results = raced.results
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
                stopped_early=contender.name in raced.stopped,
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
    stopped = [s for s in standings if s.stopped_early]
    return Confirmation(
        opponent=objective.opponent,
        seed=settings.seed,
        battles=settings.battles,
        standings=standings,
        champion=None if winner is None else winner.name,
        best_baseline=None if best_baseline is None else best_baseline.name,
        vs_current_champion=versus_champion,
        battles_played=played,
        battles_fixed=settings.battles * len(finalists + stopped),
    )


_ADAPTER: TypeAdapter[Confirmation] = TypeAdapter(Confirmation)
