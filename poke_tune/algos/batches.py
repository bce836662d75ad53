"""The training data: some of the dataset's trajectories, sampled by transition with a seeded
generator and gathered from the memory-mapped shards one batch at a time.

Nothing of the dataset is copied whole: a split keeps one int64 per trajectory, and each
batch gathers and decodes its own rows (`OfflineDataset.observations_at`, vectorised per
shard), then moves them to the device. So a trial's memory beyond its model and batches
grows by a few bytes per trajectory, whatever the data's size, and every trial of a sweep
reads the same page-cache copy of the shards.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from poke_tune.algos.common import Batch
from poke_tune.data.compiled import OfflineDataset

__all__ = ["TransitionTensors"]


class TransitionTensors:
    """The transitions of some trajectories (a split's), as batches of device tensors.

    Position p (0 <= p < len) numbers the transitions of the chosen trajectories in
    dataset order. With `n_step > 1` batches carry n-step targets (see
    `common.n_step_targets`, computed here per batch): the discounted reward sum, the
    state n steps on and its bootstrap weight; `one_step=True` asks for the plain
    transitions (FQE evaluates the learned policy from s' on).
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        trajectories: npt.NDArray[np.int64],
        device: torch.device,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
    ):
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        self.dataset = dataset
        self.device = device
        self.n_step = n_step
        self.gamma = gamma
        self.trajectories = np.asarray(trajectories, dtype=np.int64)
        lengths = dataset.trajectory_lengths[self.trajectories]
        self._ends = np.cumsum(lengths)  # position after each chosen trajectory

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _locate(
        self, positions: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(global transition, trajectory, steps left in it) of each position."""
        chosen = np.searchsorted(self._ends, positions, side="right")
        trajectory = self.trajectories[chosen]
        starts = self._ends[chosen] - self.dataset.trajectory_lengths[trajectory]
        offset = positions - starts
        transition = self.dataset.trajectory_starts[trajectory] + offset
        left = self.dataset.trajectory_lengths[trajectory] - offset
        return transition, trajectory, left

    def _n_step(
        self, transition: npt.NDArray[np.int64], left: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Discounted n-step reward sums, steps taken and bootstrap weights (in float64 as
        `common.n_step_targets`, so batches equal the whole-dataset computation)."""
        steps = np.minimum(self.n_step, left)
        sums = np.zeros(len(transition), dtype=np.float64)
        terminal_last = np.zeros(len(transition), dtype=np.float64)
        for k in range(self.n_step):
            live = k < steps
            _, rewards, terminals = self.dataset.transitions_at(transition[live] + k)
            sums[live] += self.gamma**k * rewards.astype(np.float64)
            last = steps[live] == k + 1
            terminal_last[np.flatnonzero(live)[last]] = terminals[last]
        weights = self.gamma**steps * (1.0 - terminal_last)
        return sums.astype(np.float32), steps, weights.astype(np.float32)

    def batch(self, index: torch.Tensor, *, one_step: bool = False) -> Batch:
        """The transitions at these positions, gathered and moved to the device."""
        positions = index.cpu().numpy().astype(np.int64)
        transition, trajectory, left = self._locate(positions)
        rows = transition + trajectory  # one extra row per trajectory: s' needs no copy
        actions, rewards, terminals = self.dataset.transitions_at(transition)
        bootstrap = None
        if self.n_step > 1 and not one_step:
            rewards, steps, weights = self._n_step(transition, left)
            next_rows = rows + steps
            bootstrap = self._tensor(weights)
        else:
            next_rows = rows + 1
        both = np.concatenate([rows, next_rows])
        observations = self._tensor(self.dataset.observations_at(both))
        masks = self._tensor(self.dataset.masks_at(both))
        size = len(rows)
        return Batch(
            observations=observations[:size],
            actions=self._tensor(actions),
            rewards=self._tensor(rewards),
            next_observations=observations[size:],
            terminals=self._tensor(terminals),
            masks=masks[:size],
            next_masks=masks[size:],
            bootstrap=bootstrap,
        )

    def initial_states(self, limit: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """(observations, masks) of the first step of the first `limit` trajectories."""
        trajectory = self.trajectories[:limit]
        rows = self.dataset.trajectory_starts[trajectory] + trajectory
        return (
            self._tensor(self.dataset.observations_at(rows)),
            self._tensor(self.dataset.masks_at(rows)),
        )

    def _tensor(self, array: npt.NDArray[np.generic]) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def sample(
        self, batch_size: int, generator: torch.Generator, *, one_step: bool = False
    ) -> Batch:
        index = torch.randint(
            len(self), (batch_size,), generator=generator, device=generator.device
        )
        return self.batch(index, one_step=one_step)
