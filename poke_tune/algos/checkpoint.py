"""The checkpoint file format, its writer and its reader in one place.

A checkpoint holds everything needed to continue a run bit for bit: weights, optimizer and
schedule states, the step, the RNG states, the configs, the dataset key and the encoder
version and action layout it was trained on. `write_checkpoint` writes it atomically;
`read_checkpoint` loads it safely (weights_only) and refuses any other file with one
`CheckpointError` line; `check_compatible` is the one check of a checkpoint against a
dataset.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from poke_tune.data.compiled import OfflineDataset
from poke_tune.sim.actions import ACTION_LAYOUT
from poke_tune.sim.encoding import ENCODER_VERSION

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "check_compatible",
    "check_dataset",
    "checkpoint_state",
    "read_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = 2  # 2: Q ensembles store stacked [critics, in, out] weights


class CheckpointError(ValueError):
    """A file that is not a loadable poke-tune checkpoint; the message names the file."""


_CHECKPOINT_KEYS = (
    "encoder_version",
    "action_layout",
    "observation_size",
    "num_actions",
    "algo_config",
    "train_config",
    "step",
    "algorithm",
)


def check_dataset(dataset: OfflineDataset) -> None:
    """Refuse to train on a dataset of another encoder or action layout: every checkpoint
    is stamped with this poke-tune's (see `checkpoint_state`)."""
    header = dataset.header
    if (header.encoder_version, header.action_layout) != (ENCODER_VERSION, ACTION_LAYOUT):
        raise ValueError(
            f"dataset {dataset.source} uses {header.encoder_version}/{header.action_layout};"
            f" this poke-tune trains on {ENCODER_VERSION}/{ACTION_LAYOUT}"
        )


def checkpoint_state(
    *,
    dataset: OfflineDataset,
    algo_config: BaseModel,
    train_config: BaseModel,
    step: int,
    algorithm: dict[str, Any],
    fqe: dict[str, Any],
    rng: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Everything to continue a run bit for bit (loadable with weights_only=True).

    `algorithm` and `fqe` are their state dicts; `rng` holds the generator states under
    `sampler`, `fqe_sampler` and `torch`.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "encoder_version": ENCODER_VERSION,
        "action_layout": ACTION_LAYOUT,
        "observation_size": dataset.observation_size,
        "num_actions": dataset.num_actions,
        "dataset_key": dataset.key,
        "algo_config": algo_config.model_dump(mode="json"),
        "train_config": train_config.model_dump(mode="json"),
        "step": step,
        "algorithm": algorithm,
        "fqe": fqe,
        "rng": rng,
    }


def write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically (a crash never leaves a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only) and check its format and encoder version.

    Raises `CheckpointError` (one line, naming the file) for a missing, empty, truncated,
    corrupt or unsafe file: weights_only refuses pickled objects that could run code.
    """
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickling_detail(error)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"checkpoint {path} refused: {detail} (checkpoints hold only tensors and plain "
                "data; loading other objects could run code)"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a checkpoint: {detail}"
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError) as error:
        # EOFError: truncated pickle; RuntimeError: a damaged zip archive.
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: {_first_line(error)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a poke-tune checkpoint (format {CHECKPOINT_FORMAT})")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    if (state["encoder_version"], state["action_layout"]) != (ENCODER_VERSION, ACTION_LAYOUT):
        raise CheckpointError(
            f"{path} was trained on {state['encoder_version']}/{state['action_layout']}; "
            f"this poke-tune encodes {ENCODER_VERSION}/{ACTION_LAYOUT}"
        )
    if state["algo_config"].get("algo") == "iql":
        # Saved before the setting existed: those runs weighted the raw advantage.
        state["algo_config"].setdefault("normalize_advantage", False)
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].split(". ")[0]


def _unpickling_detail(error: BaseException) -> str:
    """The one informative line of torch's weights_only refusal (it wraps the reason in
    advice to load with weights_only=False, which is exactly what must not be done)."""
    lines = [line.strip() for line in str(error).splitlines()]
    found = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return (found[0] if found else _first_line(error)).rstrip(".")


def check_compatible(state: dict[str, Any], dataset: OfflineDataset) -> None:
    """A checkpoint and a dataset must share encoder version, sizes and action layout."""
    header = dataset.header
    ours = (state["encoder_version"], state["action_layout"], state["observation_size"])
    theirs = (header.encoder_version, header.action_layout, header.observation_size)
    if ours != theirs:
        raise ValueError(f"checkpoint {ours} and dataset {dataset.source} {theirs} do not match")
