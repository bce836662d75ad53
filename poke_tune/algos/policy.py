"""A trained algorithm as a `Policy` that plays real battles."""

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

__all__ = ["LearnedPolicy", "load_policy"]


@dataclass
class LearnedPolicy:
    """Acts on the encoded observation: masked argmax of the algorithm's action scores
    (policy logits for BC/IQL, mean Q for CQL), or a masked softmax sample when
    `temperature` is set."""

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
        return masked_softmax_sample(
            scores.numpy().astype(np.float64), view.mask, self.temperature, rng
        )


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
