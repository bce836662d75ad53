"""The discrete action layout and the legal-action mask of a Showdown request.

Layout (`ACTION_LAYOUT`), following the seed design plus the gen-9 terastallize variants:

| index | action_type | action_target | Showdown choice           |
|-------|-------------|---------------|---------------------------|
| 0-3   | 0 (move)    | 0-3           | `move {t+1}`              |
| 4-9   | 1 (switch)  | 0-5           | `switch {t+1}`            |
| 10-13 | 2 (tera)    | 0-3           | `move {t+1} terastallize` |

Switch targets are slots in the request's `side.pokemon` order (the order the observation
encoder uses too); Showdown reorders those slots after every switch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ACTION_LAYOUT",
    "NUM_ACTIONS",
    "action_index",
    "action_parts",
    "action_to_choice",
    "legal_action_mask",
]

ACTION_LAYOUT = "moves4-switches6-tera4"
"""Saved with every dataset and checkpoint; loading a different layout is an error."""

NUM_MOVES = 4
NUM_SWITCHES = 6
NUM_ACTIONS = 2 * NUM_MOVES + NUM_SWITCHES
_OFFSETS = (0, NUM_MOVES, NUM_MOVES + NUM_SWITCHES)  # first index of each action_type
_SIZES = (NUM_MOVES, NUM_SWITCHES, NUM_MOVES)


def action_index(action_type: int, action_target: int) -> int:
    """Flat action index of an (action_type, action_target) pair."""
    if action_type not in (0, 1, 2) or not 0 <= action_target < _SIZES[action_type]:
        raise ValueError(f"no action ({action_type}, {action_target}) in {ACTION_LAYOUT}")
    return _OFFSETS[action_type] + action_target


def action_parts(index: int) -> tuple[int, int]:
    """(action_type, action_target) of a flat action index."""
    for action_type in (2, 1, 0):
        if index >= _OFFSETS[action_type]:
            target = index - _OFFSETS[action_type]
            if target >= _SIZES[action_type]:
                break
            return action_type, target
    raise ValueError(f"action index {index} outside 0..{NUM_ACTIONS - 1}")


def action_to_choice(index: int) -> str:
    """The Showdown choice string for a flat action index."""
    action_type, target = action_parts(index)
    if action_type == 1:
        return f"switch {target + 1}"
    return f"move {target + 1}" + (" terastallize" if action_type == 2 else "")


def _fainted(pokemon: dict[str, Any]) -> bool:
    return str(pokemon.get("condition", "")).endswith(" fnt")


def legal_action_mask(request: dict[str, Any]) -> np.ndarray:
    """Boolean mask of the actions Showdown accepts for `request` (all False: no choice)."""
    mask = np.zeros(NUM_ACTIONS, dtype=bool)
    if request.get("wait") or request.get("teamPreview"):
        return mask
    team = request["side"]["pokemon"]
    reviving = any(p.get("reviving") for p in team)
    force_switch = bool(request.get("forceSwitch") and request["forceSwitch"][0])
    active = (request.get("active") or [{}])[0]

    if not force_switch:
        for slot, move in enumerate(active.get("moves", [])[:NUM_MOVES]):
            if not move.get("disabled"):
                mask[slot] = True
                if active.get("canTerastallize"):
                    mask[_OFFSETS[2] + slot] = True

    if force_switch or not active.get("trapped"):
        for slot, pokemon in enumerate(team[:NUM_SWITCHES]):
            # Revival Blessing asks for a fainted Pokemon; every other switch for a healthy one.
            if not pokemon.get("active") and _fainted(pokemon) == reviving:
                mask[_OFFSETS[1] + slot] = True
    return mask
