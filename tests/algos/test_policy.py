"""A learned policy's softmax: temperature relative to the per-decision score range."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from poke_tune.algos.policy import LearnedPolicy, normalised_scores
from poke_tune.sim.policies import masked_softmax_sample


def _distribution(scores: np.ndarray, mask: np.ndarray, temperature: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    normalised = normalised_scores(scores, mask)
    draws = [masked_softmax_sample(normalised, mask, temperature, rng) for _ in range(4000)]
    return np.bincount(draws, minlength=len(scores)) / len(draws)


def test_legal_scores_map_onto_zero_to_one() -> None:
    scores = np.array([2.0, -1.0, 5.0, 100.0])
    mask = np.array([True, True, True, False])
    np.testing.assert_allclose(normalised_scores(scores, mask), [0.5, 0.0, 1.0, 0.0])


def test_tied_or_single_legal_scores_are_all_zero() -> None:
    mask = np.array([True, False, True])
    assert not normalised_scores(np.array([3.0, 9.0, 3.0]), mask).any()
    assert not normalised_scores(np.array([3.0, 9.0, 1.0]), np.array([True, False, False])).any()


def test_the_distribution_does_not_depend_on_the_scale_or_offset_of_the_scores() -> None:
    scores = np.array([0.10, 0.12, 0.05, 0.30, 0.11])
    mask = np.array([True, True, True, False, True])
    base = _distribution(scores, mask, 0.3)
    # Same draws (same seed) for scores 100 times larger and shifted: the same choices.
    np.testing.assert_array_equal(base, _distribution(100 * scores - 7, mask, 0.3))
    assert base[3] == 0.0  # illegal
    # The best legal action is exp(1 / T) times as likely as the worst.
    assert abs(base[1] / base[2] - np.exp(1 / 0.3)) < 0.25 * np.exp(1 / 0.3)


class _View:
    """What `LearnedPolicy.act` reads of a `PlayerView`."""

    def __init__(self, mask: np.ndarray) -> None:
        self.observation = np.zeros(3, np.float32)
        self.mask = mask


def test_a_learned_policy_samples_the_same_from_scores_of_any_scale() -> None:
    mask = np.array([True, True, False, True])
    raw = torch.tensor([[0.2, 0.25, 9.0, 0.1]])

    def choices(scale: float, temperature: float | None) -> list[int]:
        policy = LearnedPolicy("p", lambda obs: raw * scale, temperature=temperature)
        rng = np.random.default_rng(1)
        view: Any = _View(mask)
        return [policy.act(view, rng) for _ in range(300)]

    assert choices(1.0, 0.3) == choices(100.0, 0.3)
    assert set(choices(1.0, 0.3)) == {0, 1, 3}  # never the illegal action
    assert set(choices(1.0, None)) == {1}  # no temperature: the legal argmax
