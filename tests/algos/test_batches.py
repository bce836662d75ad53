"""Batches gathered from the compact shards equal the float32 batches of the whole-array
layout they replace (observations, masks, n-step targets), and a split holds nothing per
transition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poke_tune.algos.batches import TransitionTensors
from poke_tune.algos.common import n_step_targets
from poke_tune.data.compiled import load_dataset
from poke_tune.data.jsonl import read_trajectories
from poke_tune.sim.actions import action_index
from poke_tune.sim.encoding import observation_blocks
from tests.synthetic import write_synthetic

GAMMA = 0.9


def _float32_layout(path: Path) -> dict[str, np.ndarray]:
    """The file as the float32 cache held it: whole arrays in the row layout."""
    observations, masks, actions, rewards, terminals, ids = [], [], [], [], [], []
    for number, record in enumerate(read_trajectories(path)):
        steps = record.steps
        final = record.final_observation
        observations += [s.observation for s in steps]
        observations.append(final if final is not None else np.zeros(len(steps[0].observation)))
        final_mask = record.final_action_mask
        masks += [s.action_mask for s in steps]
        masks.append(final_mask if final_mask is not None else np.zeros(len(steps[0].action_mask)))
        actions += [action_index(s.action_type, s.action_target) for s in steps]
        rewards += [s.reward for s in steps]
        terminals += [0.0] * (len(steps) - 1) + [0.0 if record.truncated else 1.0]
        ids += [number] * len(steps)
    ids_array = np.asarray(ids)
    return {
        "observations": np.asarray(observations, dtype=np.float32),
        "masks": np.asarray(masks, dtype=bool),
        "actions": np.asarray(actions),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminals": np.asarray(terminals, dtype=np.float32),
        "ids": ids_array,
        "rows": np.arange(len(ids_array)) + ids_array,
    }


@pytest.mark.parametrize("n_step", [1, 3])
def test_batches_equal_the_float32_layout(tmp_path: Path, n_step: int) -> None:
    size = sum(width for _, width in observation_blocks(18))
    path = write_synthetic(tmp_path / "data.jsonl", 30, observation_size=size)
    dataset = load_dataset(path, cache_root=tmp_path / "cache", shard_rows=60)
    assert len(dataset.shards) > 2  # batches cross shards
    reference = _float32_layout(path)
    train, _ = dataset.split(0.2, seed=1)
    data = TransitionTensors(dataset, train, torch.device("cpu"), n_step=n_step, gamma=GAMMA)
    chosen = np.flatnonzero(np.isin(reference["ids"], train))  # the old split's transitions
    assert len(data) == len(chosen)
    sums, steps, weights = n_step_targets(
        reference["rewards"], reference["terminals"], reference["ids"], n_step=n_step, gamma=GAMMA
    )
    positions = torch.from_numpy(np.random.default_rng(0).permutation(len(chosen))[:100])
    batch = data.batch(positions)
    index = chosen[positions.numpy()]
    rows = reference["rows"][index]
    next_rows = rows + (steps[index] if n_step > 1 else 1)
    np.testing.assert_array_equal(batch.observations.numpy(), reference["observations"][rows])
    np.testing.assert_array_equal(
        batch.next_observations.numpy(), reference["observations"][next_rows]
    )
    np.testing.assert_array_equal(batch.masks.numpy(), reference["masks"][rows])
    np.testing.assert_array_equal(batch.next_masks.numpy(), reference["masks"][next_rows])
    np.testing.assert_array_equal(batch.actions.numpy(), reference["actions"][index])
    np.testing.assert_array_equal(batch.terminals.numpy(), reference["terminals"][index])
    if n_step == 1:
        np.testing.assert_array_equal(batch.rewards.numpy(), reference["rewards"][index])
        assert batch.bootstrap is None
    else:
        np.testing.assert_array_equal(batch.rewards.numpy(), sums[index])
        assert batch.bootstrap is not None
        np.testing.assert_array_equal(batch.bootstrap.numpy(), weights[index])
    first = np.unique(reference["ids"][chosen], return_index=True)[1]
    observations, masks = data.initial_states()
    np.testing.assert_array_equal(
        observations.numpy(), reference["observations"][reference["rows"][chosen[first]]]
    )
    np.testing.assert_array_equal(
        masks.numpy(), reference["masks"][reference["rows"][chosen[first]]]
    )


def test_a_split_holds_nothing_per_transition(tmp_path: Path) -> None:
    """What the training data keeps is per trajectory: it never copies the dataset."""
    path = write_synthetic(tmp_path / "data.jsonl", 40)
    dataset = load_dataset(path, cache_root=tmp_path / "cache")
    data = TransitionTensors(dataset, dataset.split(0.1)[0], torch.device("cpu"), n_step=3)
    held = sum(v.nbytes for v in vars(data).values() if isinstance(v, np.ndarray))
    assert held <= 16 * dataset.num_trajectories
    assert len(data) > 4 * dataset.num_trajectories  # several transitions a trajectory
