"""Paired comparison of two policies that played the same seeded battles.

Battle i of a seeded set is the same teams and the same random draws for every policy, so
two policies' outcomes are paired: most battles are won (or lost) by both, and only the
discordant ones say which policy is better. The difference of the win rates then has a
much tighter interval than either win rate. The interval is Agresti & Min's (2005) Wald
interval for matched proportions with half a battle added to each of the four cells, which
keeps its coverage near 95% even when few battles are discordant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedDifference", "paired_difference", "paired_difference_from_counts"]


@dataclass(frozen=True)
class PairedDifference:
    """Win rate of A minus win rate of B over the same battles, with a 95% interval."""

    difference: float
    ci_low: float
    ci_high: float
    battles: int
    only_a: int
    """Battles A won and B did not."""
    only_b: int
    """Battles B won and A did not."""

    @property
    def a_better(self) -> bool:
        """A wins more, beyond the interval."""
        return self.ci_low > 0.0

    @property
    def b_better(self) -> bool:
        return self.ci_high < 0.0


def paired_difference(
    a_won: Sequence[bool], b_won: Sequence[bool], z: float = 1.96
) -> PairedDifference:
    """The paired difference of two policies' win rates over the same battles."""
    if len(a_won) != len(b_won) or not a_won:
        raise ValueError(
            f"paired outcomes need the same non-empty battles, got {len(a_won)} and {len(b_won)}"
        )
    only_a = sum(a and not b for a, b in zip(a_won, b_won, strict=True))
    only_b = sum(b and not a for a, b in zip(a_won, b_won, strict=True))
    return paired_difference_from_counts(only_a, only_b, len(a_won), z=z)


def paired_difference_from_counts(
    only_a: int, only_b: int, battles: int, z: float = 1.96
) -> PairedDifference:
    """The paired difference from the discordant counts alone: all the interval needs, so
    sequential looks at growing prefixes of the same battles cost nothing each."""
    if battles < 1 or only_a < 0 or only_b < 0 or only_a + only_b > battles:
        raise ValueError(f"discordant counts {only_a} and {only_b} do not fit {battles} battles")
    n = battles
    # Agresti-Min: half a battle in each cell of the 2x2 table.
    n_adj = n + 2.0
    b, c = only_a + 0.5, only_b + 0.5
    centre = (b - c) / n_adj
    variance = max(0.0, ((b + c) - (b - c) ** 2 / n_adj)) / (n_adj * n_adj)
    half = z * math.sqrt(variance)
    return PairedDifference(
        difference=(only_a - only_b) / n,
        ci_low=max(-1.0, centre - half),
        ci_high=min(1.0, centre + half),
        battles=n,
        only_a=only_a,
        only_b=only_b,
    )
