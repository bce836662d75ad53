from __future__ import annotations

from poke_tune.sim.state import BattleState, parse_condition

LOG = """|switch|p1a: Meloetta|Meloetta, L82|298/298
|switch|p1a: Meloetta|Meloetta, L82|100/100
|split|p2
|switch|p2a: Seviper|Seviper, L93, M|287/287
|switch|p2a: Seviper|Seviper, L93, M|100/100
|turn|1
|-boost|p1a: Meloetta|spa|2
|-unboost|p2a: Seviper|spe|1
|split|p2
|-damage|p2a: Seviper|100/287 par
|-damage|p2a: Seviper|35/100 par
|-weather|RainDance
|-fieldstart|move: Electric Terrain
|-sidestart|p2: p2|Spikes
|-sidestart|p2: p2|Spikes
|-sidestart|p1: p1|move: Reflect
|-terastallize|p1a: Meloetta|Dark
|turn|2"""


def test_parse_condition() -> None:
    assert parse_condition("55/100 par") == (0.55, "par")
    assert parse_condition("0 fnt") == (0.0, "fnt")


def test_public_log_is_tracked() -> None:
    state = BattleState()
    state.apply(LOG)
    p1, p2 = state.sides["p1"], state.sides["p2"]
    assert state.turn == 2
    seviper = p2.active_pokemon
    assert seviper is not None
    # The public copy after |split| is read, not the exact-HP private one.
    assert seviper.hp == 0.35 and seviper.status == "par"
    assert p1.boosts == {"spa": 2} and p2.boosts == {"spe": -1}
    assert state.weather == "rain" and state.terrain == "electric"
    assert p2.conditions == {"spikes": 2} and p1.conditions == {"reflect": 1}
    assert p1.pokemon["Meloetta"].tera_type == "Dark"


def test_switch_resets_boosts_faint_and_win() -> None:
    state = BattleState()
    state.apply(LOG)
    state.apply(
        "|faint|p2a: Seviper\n|switch|p2a: Toucannon|Toucannon, L88, F|100/100\n"
        "|-clearallboost\n|-weather|none\n|-sideend|p2: p2|Spikes\n|win|p1"
    )
    p2 = state.sides["p2"]
    assert p2.pokemon["Seviper"].fainted and p2.active == "Toucannon"
    assert list(p2.pokemon) == ["Seviper", "Toucannon"]  # reveal order
    assert state.sides["p1"].boosts == {} and state.weather == ""
    assert p2.conditions == {}
    assert state.ended and state.winner == "p1"
