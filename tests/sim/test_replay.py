"""Re-simulation from input logs: choices onto action slots, log normalisation, endings."""

from __future__ import annotations

from typing import Any

import pytest

from poke_tune.sim.battle_records import BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.policies import make_policy
from poke_tune.sim.replay import (
    ReplayError,
    ReplayInput,
    choice_to_action,
    first_divergence,
    normalise_log,
    parse_input_log,
    replay_battles,
    spectator_log,
)


def _request(**active: Any) -> dict[str, Any]:
    team = [
        {"ident": "p1: A", "active": True, "condition": "100/100"},
        {"ident": "p1: B", "active": False, "condition": "50/100"},
        {"ident": "p1: C", "active": False, "condition": "0 fnt"},
    ]
    moves = [
        {"move": "Tackle", "id": "tackle"},
        {"move": "Hidden Power Fire 60", "id": "hiddenpowerfire60"},
        {"move": "Protect", "id": "protect", "disabled": True},
    ]
    return {"active": [{"moves": moves, **active}], "side": {"pokemon": team}}


def test_a_move_choice_is_the_slot_holding_that_move() -> None:
    assert choice_to_action("move tackle", _request()) == 0
    assert choice_to_action("move hiddenpower", _request()) == 1  # the log may omit the type
    assert choice_to_action("move tackle terastallize", _request(canTerastallize="Fire")) == 10


def test_a_switch_choice_is_the_team_position() -> None:
    assert choice_to_action("switch 2", _request()) == 5


@pytest.mark.parametrize(
    ("choice", "problem"),
    [
        ("move protect", "not legal"),  # disabled
        ("switch 3", "not legal"),  # fainted
        ("move tackle dynamax", "dynamax is not in"),
        ("move tackle, move tackle", "not a singles choice"),
        ("move splash", "no such move"),
        ("team 1", "not an action"),
    ],
)
def test_choices_outside_the_layout_or_the_request_are_refused(choice: str, problem: str) -> None:
    with pytest.raises(ReplayError, match=problem):
        choice_to_action(choice, _request())


def test_parse_keeps_choices_per_side_and_drops_chat() -> None:
    parsed = parse_input_log(
        [
            ">version abc",
            '>start {"formatid":"gen9randombattle","seed":"sodium,00"}',
            '>player p1 {"name":"Alice","seed":"sodium,01"}',
            '>player p2 {"name":"Bob","seed":"sodium,02"}',
            ">p1 move tackle",
            ">chat Alice|gg",
            ">p2 switch 2",
            ">forcelose p2",
        ]
    )
    assert parsed.choices == {"p1": ("move tackle",), "p2": ("switch 2",)}
    assert parsed.names == {"Alice": "p1", "Bob": "p2"}
    assert parsed.end == ">forcelose p2"
    assert not any("chat" in line or "version" in line for line in parsed.commands)
    with pytest.raises(ReplayError, match="no `>start`"):
        parse_input_log([">p1 move 1"])
    with pytest.raises(ReplayError, match="unsupported command"):
        parse_input_log(['>start {"formatid":"x"}', ">eval process.exit()"])


def test_a_split_section_resolves_to_one_copy_per_view() -> None:
    lines = ["|turn|1", "|split|p1", "|-damage|p1a: A|120/288", "|-damage|p1a: A|42/100", "|"]
    assert spectator_log(lines, "omniscient") == ["|turn|1", "|-damage|p1a: A|120/288", "|"]
    assert spectator_log(lines, "public") == ["|turn|1", "|-damage|p1a: A|42/100", "|"]


def test_normalise_drops_server_lines() -> None:
    # The kinds a local server added to its .log.json files (|j|, |t:|, |player|), and
    # those a public server adds (chat, timer, rating, HTML).
    server = [
        "|j|☆Alice",
        "|t:|1796567528",
        "|player|p1|Alice|170|",
        "|c|☆Alice|hello",
        "|raw|Alice's rating: 1500",
        "|inactive|Alice has 120 seconds left.",
        "|",
        "|move|p1a: A|Tackle|p2a: B",
        "|win|Alice",
    ]
    assert normalise_log(server) == ["|move|p1a: A|Tackle|p2a: B", "|win|Alice"]


def test_first_divergence_names_the_line() -> None:
    assert first_divergence(["|a", "|b"], ["|a", "|b"]) is None
    assert "line 2: recorded '|b', re-simulated '|c'" in str(
        first_divergence(["|a", "|b"], ["|a", "|c"])
    )
    assert "only the recorded log goes on" in str(first_divergence(["|a", "|b"], ["|a"]))


@pytest.mark.parametrize("end", [">forcelose p1", ">forcewin p2"])
def test_a_forfeit_ends_in_a_terminal_loss_for_the_side_that_left(
    pool: SimulatorPool, end: str
) -> None:
    spec = BattleSpec(
        index=0,
        p1=make_policy("max-damage"),
        p2=make_policy("random"),
        seed=11,
        record=(True, True),
    )
    played = next(pool.play([spec]))
    choices = [line for line in played.input_log if line.startswith((">p1", ">p2"))]
    head = played.input_log[: len(played.input_log) - len(choices)]
    cut = [*head, *choices[:6], end]
    result = next(replay_battles(pool, [ReplayInput("cut", "gen9randombattle", tuple(cut))]))
    assert result.error is None
    assert (result.winner, result.forfeited, result.truncated) == ("p2", "p1", False)
    p1 = result.trajectories["p1"]
    assert p1.outcome == -1.0 and p1.final_observation is None
    assert p1.actions == played.trajectories["p1"].actions[: len(p1.actions)]
    assert result.trajectories["p2"].outcome == 1.0


def test_an_input_log_that_stops_early_is_an_error(pool: SimulatorPool) -> None:
    spec = BattleSpec(index=1, p1=make_policy("random"), p2=make_policy("random"), seed=11)
    played = next(pool.play([spec]))
    short = tuple(played.input_log[:8])
    result = next(replay_battles(pool, [ReplayInput("short", "gen9randombattle", short)]))
    assert result.error is not None and "stops before the battle ends" in result.error
