"""The observation encoder on real requests from real battles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from poke_tune.sim.actions import action_index
from poke_tune.sim.battle_records import BattleSpec
from poke_tune.sim.battles import SimulatorPool
from poke_tune.sim.dex import Dex
from poke_tune.sim.encoding import ENCODER_VERSION, ObservationEncoder
from poke_tune.sim.policies import PlayerView, RandomPolicy

TEAM_BLOCK = 10 + 18  # per own Pokemon: hp, fainted, active, 6 statuses, 18 types, tera'd


@dataclass
class Recorder:
    """A random policy that keeps every view it was shown."""

    name: str = "recorder"
    views: list[PlayerView] = field(default_factory=list)

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        view.observation  # noqa: B018 - encode now, while the state is current
        self.views.append(view)
        return RandomPolicy().act(view, rng)


def test_version_and_size(encoder: ObservationEncoder, dex: Dex) -> None:
    assert encoder.version == ENCODER_VERSION == "obs-v2"
    assert len(dex.types) == 18
    assert encoder.size == sum(size for _, size in encoder.blocks) == 599


def test_real_observations_are_bounded_and_match_the_mask_slots(
    pool: SimulatorPool, encoder: ObservationEncoder
) -> None:
    recorder = Recorder()
    list(pool.play([BattleSpec(index=i, p1=recorder, p2=recorder, seed=21) for i in range(8)]))
    assert len(recorder.views) > 100
    for view in recorder.views:
        obs = view.observation
        assert obs.shape == (encoder.size,) and obs.dtype == np.float32
        assert np.isfinite(obs).all() and obs.min() >= -1.0 and obs.max() <= 1.0
        team = view.request["side"]["pokemon"]
        for slot, pokemon in enumerate(team):
            block = obs[slot * TEAM_BLOCK : (slot + 1) * TEAM_BLOCK]
            assert block[2] == float(pokemon["active"])  # same slot order as the request
            if view.mask[action_index(1, slot)]:  # a legal switch target is benched and alive
                assert block[1] == 0.0 and block[2] == 0.0
        # Exactly one own active Pokemon, and the opponent's active is known.
        assert sum(obs[s * TEAM_BLOCK + 2] for s in range(len(team))) == 1.0
        opponent_active = sum(size for _, size in encoder.blocks[:3])
        assert obs[opponent_active] == 1.0
