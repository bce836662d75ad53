"""The training data on the device: a subset of the compiled dataset's transitions as
tensors, moved once, and the batches sampled from it by index with a seeded generator (no
per-transition Python)."""

from __future__ import annotations

import numpy as np
import torch

from poke_tune.algos.common import Batch, n_step_targets
from poke_tune.data.compiled import OfflineDataset

__all__ = ["TransitionTensors"]


class TransitionTensors:
    """A subset of the dataset's transitions as device tensors, sampled by index.

    With `n_step > 1` batches carry n-step targets (see `common.n_step_targets`): the
    discounted reward sum, the state n steps on and its bootstrap weight; `one_step=True`
    asks for the plain transitions (FQE evaluates the learned policy from s' on).
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        indices: np.ndarray,
        device: torch.device,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
    ):
        def tensor(array: np.ndarray) -> torch.Tensor:
            # np.array copies: the cache is a read-only memory map.
            return torch.from_numpy(np.array(array)).to(device)

        self.observations = tensor(dataset.observations)
        self.masks = tensor(dataset.action_masks)
        self.rows = tensor(dataset.rows[indices])
        self.actions = tensor(dataset.actions[indices])
        self.rewards = tensor(dataset.rewards[indices])
        self.terminals = tensor(dataset.terminals[indices])
        self.n_step = n_step
        if n_step > 1:
            sums, steps, weights = n_step_targets(
                dataset.rewards,
                dataset.terminals,
                dataset.trajectory_ids,
                n_step=n_step,
                gamma=gamma,
            )
            self.n_rewards = tensor(sums[indices])
            self.n_next_rows = tensor(dataset.rows[indices] + steps[indices])
            self.n_bootstrap = tensor(weights[indices])
        # First transition of each trajectory in this subset: the initial states.
        _, first = np.unique(dataset.trajectory_ids[indices], return_index=True)
        self.initial_rows = self.rows[tensor(first)]

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: torch.Tensor, *, one_step: bool = False) -> Batch:
        rows = self.rows[index]
        if self.n_step > 1 and not one_step:
            next_rows = self.n_next_rows[index]
            return Batch(
                observations=self.observations[rows],
                actions=self.actions[index],
                rewards=self.n_rewards[index],
                next_observations=self.observations[next_rows],
                terminals=self.terminals[index],
                masks=self.masks[rows],
                next_masks=self.masks[next_rows],
                bootstrap=self.n_bootstrap[index],
            )
        return Batch(
            observations=self.observations[rows],
            actions=self.actions[index],
            rewards=self.rewards[index],
            next_observations=self.observations[rows + 1],
            terminals=self.terminals[index],
            masks=self.masks[rows],
            next_masks=self.masks[rows + 1],
        )

    def sample(
        self, batch_size: int, generator: torch.Generator, *, one_step: bool = False
    ) -> Batch:
        index = torch.randint(
            len(self.rows), (batch_size,), generator=generator, device=generator.device
        )
        return self.batch(index, one_step=one_step)
