"""The versioned observation encoder: one player's view of a battle as a float vector.

`obs-v2` layout, in order (T = the Dex's 18 types, sorted by name):

| block            | per item                                                       | size      |
|------------------|----------------------------------------------------------------|-----------|
| own team (6)     | hp, fainted, active, status one-hot (6), types (T), tera'd      | 6 x (10+T) |
| own active       | boosts (7, /6), can terastallize, tera type one-hot (T)        | 8+T       |
| active moves (4) | present, base power/250, accuracy, category (3), type (T), pp   | 4 x (12+T) |
|                  | fraction, disabled, effectiveness vs the opponent's known types |           |
|                  | (log2/2), immune, STAB, priority/7                              |           |
| opponent active  | known, hp, status (6), types (T), boosts (7), tera'd           | 16+T      |
| opponent team (6)| revealed, hp, fainted, active, status (6), types (T)           | 6 x (10+T) |
| field            | weather (5), terrain (5), trick room, side conditions (8) x 2   | 27        |
| counts           | turn/100, own alive/6, opponent revealed alive/6               | 3         |
| move values (4)  | damage score/600 (base power x STAB x effectiveness), score /   | 4 x 6     |
|                  | best, is the best, stat- and accuracy-aware score / best, is    |           |
|                  | the best, terastallized score / best non-tera score (/2)        |           |
| switch values (6)| legal target, type matchup vs the opponent's active (/2), the   | 6 x 4     |
|                  | opponent's best effectiveness against it, its best move score   |           |
| active values    | matchup (/2), opponent's best effectiveness against it, change  | 5         |
|                  | of that by terastallizing, speed/500, best move score/1000      |           |

`obs-v1` was the same without the last three blocks (546 floats). The value blocks hand
the networks, per action, the quantities the built-in policies decide by (measured: BC on
max-damage's own decisions matched 0.74 of them on obs-v1), so a learned policy can rank
moves, terastallization and switches without rediscovering the damage formula.

Own Pokemon come from the request JSON (exact HP, request slot order, which is also the
switch-action order); the opponent comes from the public log (`state.BattleState`).
Changing any of this is a new `ENCODER_VERSION`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from poke_tune.sim.actions import NUM_MOVES, NUM_SWITCHES, action_index, legal_action_mask
from poke_tune.sim.dex import Dex
from poke_tune.sim.state import BOOST_STATS, BattleState, PokemonState, parse_condition

__all__ = [
    "ENCODER_VERSION",
    "ActionFeatureLayout",
    "ObservationEncoder",
    "action_feature_layout",
    "observation_blocks",
]

ENCODER_VERSION = "obs-v2"
"""Saved with every dataset and checkpoint; loading a different version is an error."""

STATUSES = ("brn", "par", "slp", "frz", "psn", "tox")
WEATHER_SLOTS = ("", "sun", "rain", "sand", "snow")
TERRAIN_SLOTS = ("", "electric", "grassy", "misty", "psychic")
SIDE_CONDITIONS = (
    "stealthrock",
    "spikes",
    "toxicspikes",
    "stickyweb",
    "reflect",
    "lightscreen",
    "auroraveil",
    "tailwind",
)
_CONDITION_LAYERS = {"spikes": 3.0, "toxicspikes": 2.0}
CATEGORIES = ("Physical", "Special", "Status")
TEAM_SIZE = NUM_SWITCHES
STAB = 1.5
MOVE_VALUES, SWITCH_VALUES, ACTIVE_VALUES = 6, 4, 5
_DAMAGE_SCALE = 600.0  # base power x STAB x effectiveness: 100 x 1.5 x 2 = 300
_STAT_DAMAGE_SCALE = 1000.0  # ... x accuracy x attacking stat / 100


def observation_blocks(n_types: int) -> tuple[tuple[str, int], ...]:
    """The observation's blocks in order, (name, size), for a Dex with `n_types` types."""
    return (
        ("own_team", TEAM_SIZE * (10 + n_types)),
        ("own_active", 8 + n_types),
        ("moves", NUM_MOVES * (12 + n_types)),
        ("opponent_active", 16 + n_types),
        ("opponent_team", TEAM_SIZE * (10 + n_types)),
        ("field", 11 + 2 * len(SIDE_CONDITIONS)),
        ("counts", 3),
        ("move_values", NUM_MOVES * MOVE_VALUES),
        ("switch_values", TEAM_SIZE * SWITCH_VALUES),
        ("active_values", ACTIVE_VALUES),
    )


@dataclass(frozen=True)
class ActionFeatureLayout:
    """Which observation features belong to which action (indices into the observation).

    Action-centric networks score move i from `moves[i] ++ move_values[i]`, switch j from
    `own_team[j] ++ switch_values[j]` (request slot j, the switch target), and the tera
    variant of move i from move i's features plus `tera`: the own active's
    can-terastallize flag and tera type, and `active_values`. `state` is every feature that
    belongs to no move or switch slot.
    """

    moves: np.ndarray  # int64 [NUM_MOVES, move features]
    switches: np.ndarray  # int64 [TEAM_SIZE, switch features]
    tera: np.ndarray  # int64 [tera features]
    state: np.ndarray  # int64 [state features]


def action_feature_layout(observation_size: int) -> ActionFeatureLayout:
    """The layout of an observation of this encoder version with `observation_size` floats.

    The size fixes the Dex's type count (every block grows linearly with it), so a network
    built from a dataset's or checkpoint's observation size needs no Dex.
    """
    fixed, per_type = (sum(size for _, size in observation_blocks(n)) for n in (0, 1))
    n_types, remainder = divmod(observation_size - fixed, per_type - fixed)
    if remainder or n_types < 1:
        raise ValueError(f"{observation_size} floats is not an {ENCODER_VERSION} observation")
    starts: dict[str, int] = {}
    at = 0
    for name, size in observation_blocks(n_types):
        starts[name] = at
        at += size

    def slots(block: str, count: int, width: int) -> np.ndarray:
        return starts[block] + np.arange(count)[:, None] * width + np.arange(width)

    moves = np.concatenate(
        [
            slots("moves", NUM_MOVES, 12 + n_types),
            slots("move_values", NUM_MOVES, MOVE_VALUES),
        ],
        axis=1,
    )
    switches = np.concatenate(
        [
            slots("own_team", TEAM_SIZE, 10 + n_types),
            slots("switch_values", TEAM_SIZE, SWITCH_VALUES),
        ],
        axis=1,
    )
    # own_active: boosts (7), can terastallize (1), tera type (n_types).
    tera_flag_and_type = starts["own_active"] + len(BOOST_STATS) + np.arange(1 + n_types)
    tera = np.concatenate([tera_flag_and_type, starts["active_values"] + np.arange(ACTIVE_VALUES)])
    in_slots = np.zeros(observation_size, dtype=bool)
    in_slots[moves.ravel()] = in_slots[switches.ravel()] = True
    state = np.flatnonzero(~in_slots)
    return ActionFeatureLayout(moves=moves, switches=switches, tera=tera, state=state)


def _opponent(side: str) -> str:
    return "p2" if side == "p1" else "p1"


class ObservationEncoder:
    """Encodes (player, request, public state) into a fixed-size float32 vector."""

    version = ENCODER_VERSION

    def __init__(self, dex: Dex) -> None:
        self.dex = dex
        self._type_index = {t: i for i, t in enumerate(dex.types)}
        self.blocks = observation_blocks(len(dex.types))
        self.size = sum(size for _, size in self.blocks)

    # -- small writers: each fills `out` from `at` and returns the next free index --------

    def _one_hot(self, out: np.ndarray, at: int, options: tuple[str, ...], value: str) -> int:
        if value in options:
            out[at + options.index(value)] = 1.0
        return at + len(options)

    def _types(self, out: np.ndarray, at: int, types: tuple[str, ...]) -> int:
        for t in types:
            if t in self._type_index:
                out[at + self._type_index[t]] = 1.0
        return at + len(self._type_index)

    def _boosts(self, out: np.ndarray, at: int, boosts: dict[str, int]) -> int:
        for i, stat in enumerate(BOOST_STATS):
            out[at + i] = boosts.get(stat, 0) / 6.0
        return at + len(BOOST_STATS)

    def _public_types(self, pokemon: PokemonState) -> tuple[str, ...]:
        if pokemon.tera_type:
            return (pokemon.tera_type,)
        return self.dex.species_types(pokemon.species)

    @staticmethod
    def _species(details: str) -> str:
        return details.split(",")[0]

    def own_types(self, pokemon: dict[str, Any]) -> tuple[str, ...]:
        """Current types of one of the player's own Pokemon (its tera type once tera'd)."""
        if pokemon.get("terastallized"):
            return (pokemon["terastallized"],)
        return self.dex.species_types(self._species(pokemon["details"]))

    def opponent_active_types(self, side: str, state: BattleState) -> tuple[str, ...]:
        """Known types of the opponent's active Pokemon (empty before it is revealed)."""
        active = state.sides[_opponent(side)].active_pokemon
        return self._public_types(active) if active else ()

    # -- the encoder ----------------------------------------------------------------------

    def encode(self, side: str, request: dict[str, Any], state: BattleState) -> np.ndarray:
        """The observation of player `side` ("p1"/"p2") at `request`, as float32[size]."""
        out = np.zeros(self.size, dtype=np.float32)
        team = request["side"]["pokemon"][:TEAM_SIZE]
        own_state = state.sides[side]
        opponent_state = state.sides[_opponent(side)]
        opponent_types = self.opponent_active_types(side, state)

        at = 0
        own_alive = 0
        active_types: tuple[str, ...] = ()
        for slot in range(TEAM_SIZE):
            if slot < len(team):
                pokemon = team[slot]
                hp, status = parse_condition(pokemon["condition"])
                own_alive += status != "fnt"
                out[at], out[at + 1], out[at + 2] = hp, status == "fnt", bool(pokemon["active"])
                self._one_hot(out, at + 3, STATUSES, status)
                self._types(out, at + 9, self.own_types(pokemon))
                out[at + 9 + len(self._type_index)] = bool(pokemon.get("terastallized"))
                if pokemon["active"]:
                    active_types = self.own_types(pokemon)
            at += 10 + len(self._type_index)

        active = (request.get("active") or [{}])[0]
        at = self._boosts(out, at, own_state.boosts)
        out[at] = bool(active.get("canTerastallize"))
        at = self._types(out, at + 1, (active["canTerastallize"],) if out[at] else ())

        moves = active.get("moves", [])[:NUM_MOVES] if not request.get("forceSwitch") else []
        for slot in range(NUM_MOVES):
            if slot < len(moves):
                self._move(out, at, moves[slot], active_types, opponent_types)
            at += 12 + len(self._type_index)

        opponent_active = opponent_state.active_pokemon
        if opponent_active is not None:
            out[at], out[at + 1] = 1.0, opponent_active.hp
            self._one_hot(out, at + 2, STATUSES, opponent_active.status)
            end = self._types(out, at + 8, self._public_types(opponent_active))
            end = self._boosts(out, end, opponent_state.boosts)
            out[end] = bool(opponent_active.tera_type)
        at += 16 + len(self._type_index)

        opponent_alive = 0
        for slot, (name, pokemon) in enumerate(list(opponent_state.pokemon.items())[:TEAM_SIZE]):
            base = at + slot * (10 + len(self._type_index))
            opponent_alive += not pokemon.fainted
            out[base], out[base + 1], out[base + 2] = 1.0, pokemon.hp, pokemon.fainted
            out[base + 3] = name == opponent_state.active
            self._one_hot(out, base + 4, STATUSES, pokemon.status)
            self._types(out, base + 10, self._public_types(pokemon))
        at += TEAM_SIZE * (10 + len(self._type_index))

        at = self._one_hot(out, at, WEATHER_SLOTS, state.weather)
        at = self._one_hot(out, at, TERRAIN_SLOTS, state.terrain)
        out[at] = state.trick_room
        at += 1
        for side_state in (own_state, opponent_state):
            for i, condition in enumerate(SIDE_CONDITIONS):
                layers = side_state.conditions.get(condition, 0)
                out[at + i] = min(1.0, layers / _CONDITION_LAYERS.get(condition, 1.0))
            at += len(SIDE_CONDITIONS)

        out[at] = min(1.0, state.turn / 100.0)
        out[at + 1] = own_alive / TEAM_SIZE
        out[at + 2] = (opponent_alive + TEAM_SIZE - len(opponent_state.pokemon)) / TEAM_SIZE
        at = self._values(out, at + 3, request, team, opponent_types)
        assert at == self.size, "encoder blocks and writers disagree"
        return out

    # -- action values (obs-v2) -----------------------------------------------------------

    def _damage(
        self,
        move_id: str,
        attacker: dict[str, Any],
        types: tuple[str, ...],
        defender: tuple[str, ...],
    ) -> tuple[float, float]:
        """(base power x STAB x effectiveness, the same x accuracy x attacking stat / 100)."""
        data = self.dex.move(move_id)
        if data is None or data.category == "Status":
            return 0.0, 0.0
        score = data.base_power * self.dex.effectiveness(data.type, defender)
        score *= STAB if data.type in types else 1.0
        stat = attacker.get("stats", {}).get("atk" if data.category == "Physical" else "spa", 100)
        return score, score * data.accuracy / 100.0 * stat / 100.0

    def _threat(self, attackers: tuple[str, ...], defender: tuple[str, ...]) -> float:
        """Best log2 effectiveness (scaled to [-1, 1]) of `attackers`' types on `defender`."""
        if not attackers or not defender:
            return 0.0
        return max(Dex.log2_effectiveness(self.dex.effectiveness(t, defender)) for t in attackers)

    def _best_stat_damage(
        self, pokemon: dict[str, Any], types: tuple[str, ...], defender: tuple[str, ...]
    ) -> float:
        scores = [self._damage(m, pokemon, types, defender)[1] for m in pokemon.get("moves", [])]
        return max(scores, default=0.0)

    def _values(
        self,
        out: np.ndarray,
        at: int,
        request: dict[str, Any],
        team: list[dict[str, Any]],
        opponent_types: tuple[str, ...],
    ) -> int:
        mask = legal_action_mask(request)
        user = next((p for p in team if p.get("active")), None)
        user_types = self.own_types(user) if user is not None else ()
        active = (request.get("active") or [{}])[0]
        tera_type = active.get("canTerastallize") or ""

        # Moves: the scores max-damage and the heuristic rank by, and tera's gain.
        plain: list[tuple[float, float]] = []
        tera: list[float] = []
        moves = active.get("moves", [])[:NUM_MOVES]
        for slot in range(NUM_MOVES):
            if user is None or slot >= len(moves) or not mask[slot]:
                plain.append((0.0, 0.0))
                tera.append(0.0)
                continue
            move_id = moves[slot].get("id", "")
            plain.append(self._damage(move_id, user, user_types, opponent_types))
            # Terastallized: STAB for the tera type on top of the original types (2x if both).
            data = self.dex.move(move_id)
            if tera_type and data is not None and data.type == tera_type:
                boost = 2.0 / STAB if data.type in user_types else STAB
                tera.append(plain[-1][1] * boost)
            else:
                tera.append(plain[-1][1])
        best_plain = max(score for score, _ in plain)
        best_stat = max(score for _, score in plain)
        best_plain_slot = [score for score, _ in plain].index(best_plain)
        best_stat_slot = [score for _, score in plain].index(best_stat)
        for slot, (score, stat_score) in enumerate(plain):
            base = at + slot * MOVE_VALUES
            out[base] = min(1.0, score / _DAMAGE_SCALE)
            if best_plain > 0:
                out[base + 1] = score / best_plain
                out[base + 2] = slot == best_plain_slot
            if best_stat > 0:
                out[base + 3] = stat_score / best_stat
                out[base + 4] = slot == best_stat_slot
                if tera_type and mask[action_index(2, slot)]:
                    out[base + 5] = min(1.0, tera[slot] / best_stat / 2.0)
        at += NUM_MOVES * MOVE_VALUES

        # Switch targets: how each bench Pokemon would fare against the opponent's active.
        for slot in range(TEAM_SIZE):
            base = at + slot * SWITCH_VALUES
            if slot < len(team) and mask[action_index(1, slot)]:
                types = self.own_types(team[slot])
                threat = self._threat(opponent_types, types)
                out[base] = 1.0
                out[base + 1] = max(-1.0, (self._threat(types, opponent_types) - threat) / 2.0)
                out[base + 2] = threat
                best = self._best_stat_damage(team[slot], types, opponent_types)
                out[base + 3] = min(1.0, best / _STAT_DAMAGE_SCALE)
        at += TEAM_SIZE * SWITCH_VALUES

        if user is not None:
            threat = self._threat(opponent_types, user_types)
            out[at] = max(-1.0, (self._threat(user_types, opponent_types) - threat) / 2.0)
            out[at + 1] = threat
            if tera_type:
                out[at + 2] = (self._threat(opponent_types, (tera_type,)) - threat) / 2.0
            out[at + 3] = min(1.0, user.get("stats", {}).get("spe", 0) / 500.0)
            out[at + 4] = min(1.0, best_stat / _STAT_DAMAGE_SCALE)
        return at + ACTIVE_VALUES

    def _move(
        self,
        out: np.ndarray,
        at: int,
        move: dict[str, Any],
        attacker_types: tuple[str, ...],
        defender_types: tuple[str, ...],
    ) -> None:
        data = self.dex.move(move.get("id", ""))
        out[at] = 1.0
        if data is not None:
            out[at + 1] = min(1.0, data.base_power / 250.0)
            out[at + 2] = data.accuracy / 100.0
            self._one_hot(out, at + 3, CATEGORIES, data.category)
            self._types(out, at + 6, (data.type,))
        end = at + 6 + len(self._type_index)
        max_pp = move.get("maxpp") or 0
        out[end] = move["pp"] / max_pp if max_pp else 1.0
        out[end + 1] = bool(move.get("disabled"))
        if data is not None and data.category != "Status":
            if defender_types:
                multiplier = self.dex.effectiveness(data.type, defender_types)
                out[end + 2] = Dex.log2_effectiveness(multiplier)
                out[end + 3] = multiplier == 0.0
            out[end + 4] = data.type in attacker_types
            out[end + 5] = data.priority / 7.0
        elif data is not None:
            out[end + 5] = data.priority / 7.0
