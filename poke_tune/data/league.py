"""A league: who plays each generated battle, drawn per battle.

The default generation plays every ordered pair of its policies in turn. A league draws
instead, as metamon samples its opponents and temperatures per battle: the first
`learners` policies are the learners (in the flywheel, the champion at each of its
exploration temperatures), the others the pool (scripted bots exploring, earlier
champions). Each battle is a learner against one of the pool with probability
`learner_share` (seats drawn too), else two of the pool; every draw follows `weights`.
Each battle's draw has its own RNG stream (the generation seed and the battle's index), so
a battle's players do not depend on how many battles are generated or where they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["League"]

_LEAGUE_STREAM = 0x1EA6
"""Keeps the league's draws apart from the battle's own seeds (`battle_seeds`)."""


@dataclass(frozen=True)
class League:
    """Per-battle draws of (p1, p2) among `policies` policies (indices into them)."""

    learners: int
    learner_share: float
    weights: tuple[float, ...] | None
    policies: int

    def __post_init__(self) -> None:
        if not 1 <= self.learners < self.policies:
            raise ValueError(
                f"league.learners must leave at least one policy for the pool: 1 <= "
                f"learners < {self.policies} policies, got {self.learners}"
            )
        if not 0.0 <= self.learner_share <= 1.0:
            raise ValueError(f"league.learner_share must be in [0, 1], got {self.learner_share}")
        if self.weights is not None and (
            len(self.weights) != self.policies or min(self.weights) <= 0
        ):
            raise ValueError(
                f"league.weights needs one positive weight per policy ({self.policies}), "
                f"got {list(self.weights)}"
            )

    def _probabilities(self, first: int, stop: int) -> npt.NDArray[np.float64]:
        weights = np.asarray(self.weights or [1.0] * self.policies, dtype=np.float64)
        share: npt.NDArray[np.float64] = weights[first:stop] / weights[first:stop].sum()
        return share

    def matchup(self, seed: int, index: int) -> tuple[int, int]:
        """Battle `index`'s (p1, p2), as indices into the policies."""
        rng = np.random.default_rng([seed, index, _LEAGUE_STREAM])
        pool = self._probabilities(self.learners, self.policies)
        if rng.random() < self.learner_share:
            learner = int(rng.choice(self.learners, p=self._probabilities(0, self.learners)))
            opponent = self.learners + int(rng.choice(len(pool), p=pool))
            return (learner, opponent) if rng.random() < 0.5 else (opponent, learner)
        a, b = (self.learners + int(i) for i in rng.choice(len(pool), size=2, p=pool))
        return a, b

    def describe(self, names: list[str]) -> dict[str, Any]:
        """The league as the dataset header records it (with the policies' names)."""
        weights = self.weights or (1.0,) * self.policies
        return {
            "learners": names[: self.learners],
            "pool": names[self.learners :],
            "learner_share": self.learner_share,
            "weights": list(weights),
        }
