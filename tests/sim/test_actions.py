from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from poke_tune.sim.actions import (
    NUM_ACTIONS,
    action_index,
    action_parts,
    action_to_choice,
    legal_action_mask,
)


def _request(**overrides: Any) -> dict[str, Any]:
    team = [
        {"ident": "p1: A", "details": "A, L80", "condition": "100/100", "active": True},
        {"ident": "p1: B", "details": "B, L80", "condition": "0 fnt", "active": False},
        {"ident": "p1: C", "details": "C, L80", "condition": "50/100 par", "active": False},
    ]
    moves = [
        {"id": "tackle", "pp": 5, "maxpp": 5, "disabled": False},
        {"id": "growl", "pp": 0, "maxpp": 5, "disabled": True},
    ]
    request: dict[str, Any] = {"active": [{"moves": moves}], "side": {"pokemon": team}}
    request.update(overrides)
    return request


def legal(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)]


def test_layout_round_trips_and_choices() -> None:
    for index in range(NUM_ACTIONS):
        assert action_index(*action_parts(index)) == index
    assert action_to_choice(2) == "move 3"
    assert action_to_choice(4) == "switch 1"
    assert action_to_choice(9) == "switch 6"
    assert action_to_choice(11) == "move 2 terastallize"
    with pytest.raises(ValueError):
        action_index(1, 6)
    with pytest.raises(ValueError):
        action_parts(NUM_ACTIONS)


def test_disabled_moves_fainted_and_active_slots_are_illegal() -> None:
    # move 1 only (move 2 disabled); switch only to slot 2 (slot 0 active, slot 1 fainted)
    assert legal(legal_action_mask(_request())) == [0, 6]


def test_tera_variants_follow_can_terastallize() -> None:
    request = _request(
        active=[{"moves": _request()["active"][0]["moves"], "canTerastallize": "Fire"}]
    )
    assert legal(legal_action_mask(request)) == [0, 6, 10]


def test_trapped_forbids_switches_and_force_switch_forbids_moves() -> None:
    trapped = _request(active=[{**_request()["active"][0], "trapped": True}])
    assert legal(legal_action_mask(trapped)) == [0]
    forced = _request(forceSwitch=[True])
    assert legal(legal_action_mask(forced)) == [6]


def test_wait_has_no_legal_action_and_revival_picks_fainted() -> None:
    assert not legal_action_mask(_request(wait=True)).any()
    reviving = _request(forceSwitch=[True])
    reviving["side"]["pokemon"][0]["reviving"] = True
    assert legal(legal_action_mask(reviving)) == [5]
