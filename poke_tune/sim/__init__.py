"""Simulator bridge and encoding: real Pokémon Showdown battles driven from Python.

The lowest layer of poke-tune. Nothing here imports from `poke_tune.data`,
`poke_tune.eval`, `poke_tune.tuning` or `poke_tune.cli`.
"""

from __future__ import annotations

from poke_tune.sim.actions import ACTION_LAYOUT, NUM_ACTIONS, action_to_choice, legal_action_mask
from poke_tune.sim.battle_records import BattleResult, BattleSpec, Trajectory
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import Dex, load_dex
from poke_tune.sim.encoding import ENCODER_VERSION, ObservationEncoder
from poke_tune.sim.policies import PlayerView, Policy, make_policy
from poke_tune.sim.runtime import ShowdownRuntime, find_runtime

__all__ = [
    "ACTION_LAYOUT",
    "ENCODER_VERSION",
    "NUM_ACTIONS",
    "BattleResult",
    "BattleSpec",
    "Dex",
    "ObservationEncoder",
    "PlayerView",
    "Policy",
    "ShowdownRuntime",
    "SimulatorPool",
    "Trajectory",
    "action_to_choice",
    "find_runtime",
    "legal_action_mask",
    "load_dex",
    "make_policy",
]
