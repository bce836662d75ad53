"""A trained algorithm as a `Policy` that plays real battles.

With a temperature T (`:softmax=T` on a learned policy's name) it samples a legal action
with probability proportional to exp(s / T), where s are its action scores rescaled per
decision to [0, 1] over the legal actions (`normalised_scores`). The raw scores have no
fixed scale (CQL's Q-values move with the reward scale and the conservative weight, BC's
logits with training length), so a raw T would mean something else for every checkpoint.
Rescaled by the range, T has one meaning everywhere: the best legal action is exp(1 / T)
times as likely as the worst, whatever the number of legal actions (a standard deviation
would shrink as legal actions are added or removed). It also matches the built-in scored
policies, whose best move scores 1 and switches 0, so `:softmax=0.3` explores about as much
on `max-damage` as on a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from poke_tune.algos.checkpoint import read_checkpoint
from poke_tune.algos.common import Algorithm
from poke_tune.algos.networks import masked_argmax
from poke_tune.algos.table import build_algorithm, parse_algo_config
from poke_tune.sim.policies import PlayerView, masked_softmax_sample

__all__ = ["LearnedPolicy", "load_policy", "normalised_scores"]


def normalised_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`scores` mapped linearly onto [0, 1] over the legal actions (`mask`): the worst
    legal action 0, the best 1; all 0 when the legal actions tie (or one is legal).
    Illegal entries are 0 (they are masked out anyway)."""
    legal = scores[mask]
    low = legal.min()
    spread = legal.max() - low
    if not spread > 0:
        return np.zeros(len(scores))
    return np.where(mask, (scores - low) / spread, 0.0)


@dataclass
class LearnedPolicy:
    """Acts on the encoded observation: masked argmax of the algorithm's action scores
    (policy logits for BC/IQL, mean Q for CQL), or, when `temperature` is set, a masked
    softmax sample over the scores normalised per decision (`normalised_scores`)."""

    name: str
    scores: Callable[[torch.Tensor], torch.Tensor]
    temperature: float | None = None
    device: torch.device | str = "cpu"

    @classmethod
    def of(
        cls,
        algorithm: Algorithm,
        name: str,
        *,
        temperature: float | None = None,
        device: torch.device | str = "cpu",
    ) -> LearnedPolicy:
        """`algorithm` (put in eval mode) acting through its action scores."""
        algorithm.train(False)
        return cls(name, algorithm.action_scores, temperature=temperature, device=device)

    def act(self, view: PlayerView, rng: np.random.Generator) -> int:
        with torch.inference_mode():
            observation = torch.from_numpy(view.observation)[None].to(self.device)
            scores = self.scores(observation)[0].cpu()
        if self.temperature is None:
            return int(masked_argmax(scores, torch.from_numpy(view.mask)))
        normalised = normalised_scores(scores.numpy().astype(np.float64), view.mask)
        return masked_softmax_sample(normalised, view.mask, self.temperature, rng)


def load_policy(path: Path, *, temperature: float | None = None) -> LearnedPolicy:
    """The acting policy of a training checkpoint (CPU, eval mode)."""
    state = read_checkpoint(path)
    algorithm = build_algorithm(
        parse_algo_config(state["algo_config"]),
        observation_size=state["observation_size"],
        num_actions=state["num_actions"],
        total_steps=1,
    )
    algorithm.load_state_dict(state["algorithm"])
    name = f"{state['algo_config']['algo']}@{state['step']}:{path.name}"
    return LearnedPolicy.of(algorithm, name, temperature=temperature)
