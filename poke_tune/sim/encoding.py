"""The versioned observation encoder: one player's view of a battle as a float vector.

`obs-v1` layout, in order (T = the Dex's 18 types, sorted by name):

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

Own Pokemon come from the request JSON (exact HP, request slot order, which is also the
switch-action order); the opponent comes from the public log (`state.BattleState`).
Changing any of this is a new `ENCODER_VERSION`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from poke_tune.sim.actions import NUM_MOVES, NUM_SWITCHES
from poke_tune.sim.dex import Dex
from poke_tune.sim.state import BOOST_STATS, BattleState, PokemonState, parse_condition

__all__ = ["ENCODER_VERSION", "ObservationEncoder"]

ENCODER_VERSION = "obs-v1"
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


def _opponent(side: str) -> str:
    return "p2" if side == "p1" else "p1"


class ObservationEncoder:
    """Encodes (player, request, public state) into a fixed-size float32 vector."""

    version = ENCODER_VERSION

    def __init__(self, dex: Dex) -> None:
        self.dex = dex
        self._type_index = {t: i for i, t in enumerate(dex.types)}
        n_types = len(dex.types)
        self.blocks: tuple[tuple[str, int], ...] = (
            ("own_team", TEAM_SIZE * (10 + n_types)),
            ("own_active", 8 + n_types),
            ("moves", NUM_MOVES * (12 + n_types)),
            ("opponent_active", 16 + n_types),
            ("opponent_team", TEAM_SIZE * (10 + n_types)),
            ("field", 11 + 2 * len(SIDE_CONDITIONS)),
            ("counts", 3),
        )
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
        assert at + 3 == self.size, "encoder blocks and writers disagree"
        return out

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
