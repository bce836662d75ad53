"""Public battle state, tracked from the simulator's battle log.

Only the public copy of each `|split|` section is read, so both players see exactly what
a human spectator sees: the opponent's HP as a percentage, revealed Pokemon only. A
player's own exact state comes from its request JSON, not from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poke_tune.sim.dex import to_id

__all__ = ["BOOST_STATS", "BattleState", "PokemonState", "SideState", "parse_condition"]

BOOST_STATS = ("atk", "def", "spa", "spd", "spe", "accuracy", "evasion")
WEATHERS = {
    "sunnyday": "sun",
    "desolateland": "sun",
    "raindance": "rain",
    "primordialsea": "rain",
    "sandstorm": "sand",
    "snow": "snow",
    "snowscape": "snow",
    "hail": "snow",
}


def parse_condition(condition: str) -> tuple[float, str]:
    """("55/100 par" -> (0.55, "par")); a fainted Pokemon is (0.0, "fnt")."""
    hp, _, status = condition.partition(" ")
    if "/" in hp:
        current, maximum = hp.split("/")
        fraction = float(current) / float(maximum)
    else:
        fraction = 0.0 if hp == "0" else 1.0
    return fraction, status


def _side_and_name(ident: str) -> tuple[str, str]:
    """("p2a: Seviper" -> ("p2", "Seviper"))."""
    position, _, name = ident.partition(": ")
    return position[:2], name


@dataclass
class PokemonState:
    """What is publicly known about one Pokemon."""

    species: str
    hp: float = 1.0
    status: str = ""
    tera_type: str = ""

    @property
    def fainted(self) -> bool:
        return self.status == "fnt"


@dataclass
class SideState:
    """One side's revealed team (in reveal order), active Pokemon, boosts and conditions."""

    pokemon: dict[str, PokemonState] = field(default_factory=dict)
    active: str | None = None
    boosts: dict[str, int] = field(default_factory=dict)
    conditions: dict[str, int] = field(default_factory=dict)

    @property
    def active_pokemon(self) -> PokemonState | None:
        return self.pokemon.get(self.active) if self.active else None


@dataclass
class BattleState:
    """The public state of one battle, updated chunk by chunk with `apply`."""

    turn: int = 0
    weather: str = ""
    terrain: str = ""
    trick_room: bool = False
    ended: bool = False
    winner: str | None = None  # the winning player's name ("p1"/"p2"); None on a tie
    sides: dict[str, SideState] = field(
        default_factory=lambda: {"p1": SideState(), "p2": SideState()}
    )

    def apply(self, update: str) -> None:
        """Apply the battle-log lines of one `update` chunk (public copies only)."""
        skip_next = False
        for line in update.split("\n"):
            if skip_next:  # the exact-HP private copy that follows a |split| line
                skip_next = False
                continue
            if not line.startswith("|"):
                continue
            parts = line.split("|")
            kind = parts[1]
            if kind == "split":
                skip_next = True
            elif kind == "turn":
                self.turn = int(parts[2])
            else:
                handler = _HANDLERS.get(kind)
                if handler is not None:
                    handler(self, parts[2:])

    def _pokemon(self, ident: str) -> PokemonState:
        side_id, name = _side_and_name(ident)
        side = self.sides[side_id]
        if name not in side.pokemon:
            side.pokemon[name] = PokemonState(species=name)
        return side.pokemon[name]

    def _on_switch(self, args: list[str]) -> None:
        side_id, name = _side_and_name(args[0])
        side = self.sides[side_id]
        species = args[1].split(",")[0]
        pokemon = side.pokemon.setdefault(name, PokemonState(species=species))
        pokemon.species = species
        if len(args) > 2 and args[2]:  # |replace| lines carry no HP field
            pokemon.hp, pokemon.status = parse_condition(args[2])
        side.active = name
        side.boosts = {}

    def _on_replace(self, args: list[str]) -> None:
        # Illusion broken: the Pokemon in front is really `args[0]`, keeping its HP.
        side_id, _ = _side_and_name(args[0])
        shown = self.sides[side_id].active_pokemon
        self._on_switch(args[:2])
        if shown is not None:
            real = self._pokemon(args[0])
            real.hp, real.status = shown.hp, shown.status

    def _on_details(self, args: list[str]) -> None:
        self._pokemon(args[0]).species = args[1].split(",")[0]

    def _on_hp(self, args: list[str]) -> None:
        pokemon = self._pokemon(args[0])
        pokemon.hp, status = parse_condition(args[1])
        pokemon.status = status

    def _on_faint(self, args: list[str]) -> None:
        pokemon = self._pokemon(args[0])
        pokemon.hp, pokemon.status = 0.0, "fnt"

    def _on_status(self, args: list[str]) -> None:
        self._pokemon(args[0]).status = args[1]

    def _on_cure_status(self, args: list[str]) -> None:
        pokemon = self._pokemon(args[0])
        if pokemon.status != "fnt":
            pokemon.status = ""

    def _on_cure_team(self, args: list[str]) -> None:
        side_id, _ = _side_and_name(args[0])
        for pokemon in self.sides[side_id].pokemon.values():
            if pokemon.status != "fnt":
                pokemon.status = ""

    def _boosts(self, ident: str) -> dict[str, int]:
        return self.sides[_side_and_name(ident)[0]].boosts

    def _on_boost(self, args: list[str], sign: int) -> None:
        boosts = self._boosts(args[0])
        stat = args[1]
        boosts[stat] = max(-6, min(6, boosts.get(stat, 0) + sign * int(args[2])))

    def _on_set_boost(self, args: list[str]) -> None:
        self._boosts(args[0])[args[1]] = int(args[2])

    def _on_clear_boost(self, args: list[str]) -> None:
        self._boosts(args[0]).clear()

    def _on_clear_all_boosts(self, args: list[str]) -> None:
        for side in self.sides.values():
            side.boosts.clear()

    def _on_clear_negative_boost(self, args: list[str]) -> None:
        boosts = self._boosts(args[0])
        for stat, value in list(boosts.items()):
            boosts[stat] = max(0, value)

    def _on_invert_boost(self, args: list[str]) -> None:
        boosts = self._boosts(args[0])
        for stat, value in list(boosts.items()):
            boosts[stat] = -value

    def _on_terastallize(self, args: list[str]) -> None:
        self._pokemon(args[0]).tera_type = args[1]

    def _on_weather(self, args: list[str]) -> None:
        self.weather = WEATHERS.get(to_id(args[0]), "")

    def _on_field(self, args: list[str], active: bool) -> None:
        effect = to_id(args[0].removeprefix("move: "))
        if effect == "trickroom":
            self.trick_room = active
        elif effect.endswith("terrain"):
            if active:
                self.terrain = effect.removesuffix("terrain")
            elif self.terrain == effect.removesuffix("terrain"):
                self.terrain = ""

    def _on_side_condition(self, args: list[str], active: bool) -> None:
        side = self.sides[args[0][:2]]
        condition = to_id(args[1].removeprefix("move: "))
        if active:
            side.conditions[condition] = side.conditions.get(condition, 0) + 1
        else:
            side.conditions.pop(condition, None)

    def _on_win(self, args: list[str]) -> None:
        self.ended, self.winner = True, args[0]

    def _on_tie(self, args: list[str]) -> None:
        self.ended, self.winner = True, None


_HANDLERS = {
    "switch": BattleState._on_switch,
    "drag": BattleState._on_switch,
    "replace": BattleState._on_replace,
    "detailschange": BattleState._on_details,
    "-formechange": BattleState._on_details,
    "-damage": BattleState._on_hp,
    "-heal": BattleState._on_hp,
    "-sethp": BattleState._on_hp,
    "faint": BattleState._on_faint,
    "-status": BattleState._on_status,
    "-curestatus": BattleState._on_cure_status,
    "-cureteam": BattleState._on_cure_team,
    "-boost": lambda state, args: state._on_boost(args, +1),
    "-unboost": lambda state, args: state._on_boost(args, -1),
    "-setboost": BattleState._on_set_boost,
    "-clearboost": BattleState._on_clear_boost,
    "-clearallboost": BattleState._on_clear_all_boosts,
    "-clearnegativeboost": BattleState._on_clear_negative_boost,
    "-invertboost": BattleState._on_invert_boost,
    "-terastallize": BattleState._on_terastallize,
    "-weather": BattleState._on_weather,
    "-fieldstart": lambda state, args: state._on_field(args, True),
    "-fieldend": lambda state, args: state._on_field(args, False),
    "-sidestart": lambda state, args: state._on_side_condition(args, True),
    "-sideend": lambda state, args: state._on_side_condition(args, False),
    "win": BattleState._on_win,
    "tie": BattleState._on_tie,
}
