"""Built-in behaviour policies and the `Policy` interface learned policies share.

A policy maps a `PlayerView` (the request, the public state, the legal-action mask and a
lazily encoded observation) to a flat action index. Randomness comes only from the
`rng` argument, which the battle runner seeds per battle and side, so a battle replays
exactly.

Names accepted by `make_policy`: `random`, `max-damage`, `heuristic`, any of them with an
epsilon-mixture suffix, e.g. `max-damage:eps=0.3` (a uniformly random legal action with
probability 0.3, else the base policy's), and the scored policies with a softmax suffix,
e.g. `heuristic:softmax=0.3`: a legal action sampled with probability proportional to
exp(score / 0.3) over the policy's own action scores. `split_policy_name` reads the
suffix off any policy name (learned ones too: `models:/x/3:softmax=0.05`); the learned
policies are resolved above this layer (`poke_tune.tuning.policies`).

Why softmax: uniformly random exploration teaches a critic that switching is bad (random
switches lose); sampling near-misses of a scored policy covers the alternatives (the
second-best move, a good switch-in, terastallizing) with actions worth learning from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

from poke_tune.sim.actions import NUM_MOVES, action_index
from poke_tune.sim.dex import Dex
from poke_tune.sim.encoding import ObservationEncoder
from poke_tune.sim.state import BattleState, parse_condition

__all__ = [
    "BUILTIN_POLICIES",
    "EpsilonMixturePolicy",
    "Exploration",
    "HeuristicPolicy",
    "MaxDamagePolicy",
    "PlayerView",
    "Policy",
    "RandomPolicy",
    "SoftmaxPolicy",
    "make_policy",
    "masked_softmax_sample",
    "split_policy_name",
]

STAB = 1.5
_TERA_OFFSET = action_index(2, 0)
_SWITCH_OFFSET = action_index(1, 0)


@dataclass
class PlayerView:
    """Everything one player knows when it must choose."""

    side: str
    request: dict[str, Any]
    state: BattleState
    mask: np.ndarray
    encoder: ObservationEncoder
    _observation: np.ndarray | None = field(default=None, repr=False)

    @property
    def observation(self) -> np.ndarray:
        """The encoded observation (computed on first use: random play never pays for it)."""
        if self._observation is None:
            self._observation = self.encoder.encode(self.side, self.request, self.state)
        return self._observation

    @property
    def dex(self) -> Dex:
        return self.encoder.dex


class Policy(Protocol):
    """Anything that picks a legal action index for a `PlayerView`."""

    @property
    def name(self) -> str:
        """A short label for logs, datasets and result tables."""
        ...

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        """A legal action index (`view.mask[index]` is True)."""
        ...


def _best_move(scores: list[float]) -> int:
    """The first move slot with the highest score (numpy's argmax tie-breaking)."""
    return scores.index(max(scores))


def _random_legal(mask: np.ndarray, rng: np.random.Generator) -> int:
    legal = np.flatnonzero(mask)
    return int(legal[rng.integers(len(legal))])


def masked_softmax_sample(
    scores: np.ndarray, mask: np.ndarray, temperature: float, rng: np.random.Generator
) -> int:
    """A legal action sampled with probability proportional to exp(score / temperature)."""
    logits = np.where(mask, scores / temperature, -np.inf)
    probabilities = np.exp(logits - logits.max())
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def _move_damage_scores(view: PlayerView, use_stats: bool) -> list[float]:
    """Expected-damage proxy for each of the 4 move actions (0 where illegal or status).

    base power x STAB x type effectiveness x accuracy, and with `use_stats` the user's
    attacking stat for the move's category. A plain list: four numbers are cheaper to
    score and compare in Python than in numpy.
    """
    scores = [0.0] * NUM_MOVES
    active = (view.request.get("active") or [{}])[0]
    user = next(p for p in view.request["side"]["pokemon"] if p["active"])
    user_types = view.encoder.own_types(user)
    defender_types = view.encoder.opponent_active_types(view.side, view.state)
    for slot, move in enumerate(active.get("moves", [])[:NUM_MOVES]):
        data = view.dex.move(move.get("id", ""))
        if not view.mask[slot] or data is None or data.category == "Status":
            continue
        score = data.base_power * view.dex.effectiveness(data.type, defender_types)
        score *= STAB if data.type in user_types else 1.0
        if use_stats:
            score *= data.accuracy / 100.0
            score *= user["stats"]["atk" if data.category == "Physical" else "spa"] / 100.0
        scores[slot] = score
    return scores


@lru_cache(maxsize=1 << 16)
def _type_matchup(dex: Dex, own_types: tuple[str, ...], opponent_types: tuple[str, ...]) -> float:
    """Best log2 effectiveness of `own_types` against `opponent_types` minus the reverse.

    Cached: a pure function of the type chart, asked several times per decision.
    """
    if not opponent_types or not own_types:
        return 0.0
    log2 = Dex.log2_effectiveness
    offence = max(log2(dex.effectiveness(t, opponent_types)) for t in own_types)
    defence = max(log2(dex.effectiveness(t, own_types)) for t in opponent_types)
    return offence - defence


@dataclass(frozen=True)
class RandomPolicy:
    """Uniformly random legal action."""

    name: str = "random"

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        return _random_legal(view.mask, rng)


@dataclass(frozen=True)
class MaxDamagePolicy:
    """The legal move with the highest base power x STAB x effectiveness, else random."""

    name: str = "max-damage"

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        scores = _move_damage_scores(view, use_stats=False)
        if max(scores) > 0:
            return _best_move(scores)
        return _random_legal(view.mask, rng)

    def scores(self, view: PlayerView) -> np.ndarray:
        """Per action: a move's damage relative to the best move (its tera variant the
        same: max-damage ignores tera); switches 0."""
        scores = np.zeros(len(view.mask))
        damage = _move_damage_scores(view, use_stats=False)
        best = max(damage)
        if best > 0:
            scores[:NUM_MOVES] = scores[_TERA_OFFSET:] = np.asarray(damage) / best
        return scores


@dataclass(frozen=True)
class HeuristicPolicy:
    """Max damage with stats and accuracy, terastallizes for STAB, leaves bad matchups.

    Matchup of a Pokemon against the opponent's active = best log2 effectiveness of its
    own types against the opponent minus the opponent's best against it. A healthy
    active in a matchup of -1 or worse switches to a bench Pokemon at least 1.5 better.
    """

    name: str = "heuristic"
    switch_threshold: float = -1.0
    switch_margin: float = 1.5

    def _matchup(self, view: PlayerView, own_types: tuple[str, ...]) -> float:
        opponent = view.encoder.opponent_active_types(view.side, view.state)
        return _type_matchup(view.dex, own_types, opponent)

    def _standing(self, view: PlayerView, pokemon: dict[str, Any]) -> float:
        """Matchup against the opponent's active plus HP fraction."""
        hp, _ = parse_condition(pokemon["condition"])
        return self._matchup(view, view.encoder.own_types(pokemon)) + hp

    def _best_switch(self, view: PlayerView) -> tuple[int, float] | None:
        options = []
        for slot, pokemon in enumerate(view.request["side"]["pokemon"][:6]):
            action = _SWITCH_OFFSET + slot
            if view.mask[action]:
                options.append((self._standing(view, pokemon), -slot, action))
        if not options:
            return None
        score, _, action = max(options)
        return action, score

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        scores = _move_damage_scores(view, use_stats=True)
        switch = self._best_switch(view)
        if not view.mask[:NUM_MOVES].any():  # forced switch, or trapped with no move
            return switch[0] if switch else _random_legal(view.mask, rng)

        user = next(p for p in view.request["side"]["pokemon"] if p["active"])
        hp, _ = parse_condition(user["condition"])
        matchup = self._matchup(view, view.encoder.own_types(user))
        if (
            switch is not None
            and hp > 0.5
            and matchup <= self.switch_threshold
            and switch[1] - 1.0 >= matchup + self.switch_margin  # hp counts 1.0 at most
        ):
            return switch[0]
        if max(scores) <= 0:
            return _random_legal(view.mask, rng)
        best = _best_move(scores)
        active = view.request["active"][0]
        tera_type = active.get("canTerastallize")
        move = view.dex.move(active["moves"][best].get("id", ""))
        if tera_type and move is not None and move.type == tera_type:
            return _TERA_OFFSET + best
        return best

    def scores(self, view: PlayerView) -> np.ndarray:
        """Per action, on the scale of the best move (1.0): a move's stat-aware damage
        relative to the best; its tera variant times the STAB it gains (the tera type's
        moves), less 0.05 (tera is spent once); a switch half its matchup-plus-HP gain
        over the active's, so a two-step better matchup scores like the best move."""
        scores = np.zeros(len(view.mask))
        damage = np.asarray(_move_damage_scores(view, use_stats=True))
        active = (view.request.get("active") or [{}])[0]
        if damage.max() > 0:
            scores[:NUM_MOVES] = damage / damage.max()
            tera_type = active.get("canTerastallize")
            for slot, move in enumerate(active.get("moves", [])[:NUM_MOVES]):
                data = view.dex.move(move.get("id", ""))
                gain = STAB if tera_type and data is not None and data.type == tera_type else 1.0
                scores[_TERA_OFFSET + slot] = scores[slot] * gain - 0.05
        user = next((p for p in view.request["side"]["pokemon"] if p["active"]), None)
        current = self._standing(view, user) if user is not None else 0.0
        for slot, pokemon in enumerate(view.request["side"]["pokemon"][:6]):
            if view.mask[_SWITCH_OFFSET + slot]:
                scores[_SWITCH_OFFSET + slot] = 0.5 * (self._standing(view, pokemon) - current)
        return scores


@dataclass(frozen=True)
class EpsilonMixturePolicy:
    """With probability `epsilon` a uniformly random legal action, else `base`'s."""

    base: Policy
    epsilon: float
    name: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        if rng.random() < self.epsilon:
            return _random_legal(view.mask, rng)
        return self.base.act(view, rng)


class ScoredPolicy(Protocol):
    """A policy with a score per action (higher is better), the scale of its best move 1."""

    @property
    def name(self) -> str: ...

    def scores(self, view: PlayerView) -> np.ndarray: ...


@dataclass(frozen=True)
class SoftmaxPolicy:
    """A legal action sampled with probability proportional to exp(score / temperature)."""

    base: ScoredPolicy
    temperature: float
    name: str = ""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        return masked_softmax_sample(self.base.scores(view), view.mask, self.temperature, rng)


BUILTIN_POLICIES: dict[str, type[RandomPolicy | MaxDamagePolicy | HeuristicPolicy]] = {
    "random": RandomPolicy,
    "max-damage": MaxDamagePolicy,
    "heuristic": HeuristicPolicy,
}


@dataclass(frozen=True)
class Exploration:
    """A policy name's exploration suffix: `eps=E` (epsilon mixture) or `softmax=T`."""

    kind: Literal["eps", "softmax"]
    value: float


_SUFFIX_ERROR = (
    "expected ':eps=<number in [0, 1]>' or, for a scored policy (max-damage, heuristic, a "
    "learned one), ':softmax=<temperature > 0>'"
)
_SUFFIX = re.compile(r"[A-Za-z_]+(=.*)?")
"""What follows a policy name's last ':' when it is a suffix: a word, maybe `=value`. A
name's own colons (`models:/x/3`, `C:\\ckpt.pt`) are followed by other characters."""


def split_policy_name(name: str) -> tuple[str, Exploration | None]:
    """A policy name and its exploration suffix, split at the last ':' when what follows
    is `word` or `word=value`: `models:/x/3:softmax=0.05` -> (`models:/x/3`, softmax 0.05),
    `models:/x@champion` -> (itself, None). A suffix other than `eps` in [0, 1] or
    `softmax` > 0 is a `ValueError` naming `name`."""
    base, sep, tail = name.rpartition(":")
    if not sep or not _SUFFIX.fullmatch(tail):
        return name, None
    key, _, text = tail.partition("=")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if key == "eps" and 0.0 <= value <= 1.0:
        return base, Exploration("eps", value)
    if key == "softmax" and value > 0 and np.isfinite(value):
        return base, Exploration("softmax", value)
    raise ValueError(f"bad policy suffix in {name!r}: {_SUFFIX_ERROR}")


def make_policy(name: str) -> Policy:
    """A built-in policy by name, e.g. `heuristic`, `max-damage:eps=0.3` or
    `heuristic:softmax=0.3`."""
    base_name, exploration = split_policy_name(name)
    if base_name not in BUILTIN_POLICIES:
        raise ValueError(
            f"unknown policy {name!r}: expected one of {sorted(BUILTIN_POLICIES)}, "
            "optionally with ':eps=<0..1>' or ':softmax=<temperature>'"
        )
    base = BUILTIN_POLICIES[base_name]()
    if exploration is None:
        return base
    if exploration.kind == "eps":
        return EpsilonMixturePolicy(base=base, epsilon=exploration.value, name=name)
    if isinstance(base, RandomPolicy):
        raise ValueError(f"bad policy suffix in {name!r}: random has no scores to softmax")
    return SoftmaxPolicy(base=base, temperature=exploration.value, name=name)
