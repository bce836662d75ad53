"""The checkpoint format: `read_checkpoint` refuses every file that is not a sound poke-tune
checkpoint with one `CheckpointError` line naming the file (never a torch traceback, never
code execution), a checkpoint of another encoder is refused, older checkpoints still load,
and `check_compatible` matches a checkpoint to a dataset."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from poke_tune.algos import (
    BCConfig,
    CQLConfig,
    IQLConfig,
    NetworkConfig,
    TrainConfig,
    Trainer,
    load_policy,
)
from poke_tune.algos.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_compatible,
    read_checkpoint,
)
from poke_tune.data.compiled import OfflineDataset

SMALL = NetworkConfig(hidden_sizes=(64, 64), dropout=0.1)


def _trainer(config: BCConfig | IQLConfig | CQLConfig, dataset: OfflineDataset) -> Trainer:
    return Trainer(config, TrainConfig(steps=40, eval_interval=20, fqe_steps=10), dataset)


class _RunsCode:
    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, ("touch /tmp/poke-tune-pwned",))


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


BAD_FILES: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", "is empty"),
    "truncated": (
        lambda: _torch_bytes({"format": 2, "w": torch.zeros(256)})[:300],
        "is truncated or corrupt",
    ),
    "random-bytes": (lambda: bytes(range(256)) * 16, "is corrupt or not a checkpoint"),
    "unsafe-pickle": (lambda: _torch_bytes({"format": 2, "x": _RunsCode()}), "refused"),
    "plain-pickle": (lambda: pickle.dumps(_RunsCode()), "not a checkpoint"),
    "not-a-dict": (lambda: _torch_bytes([1, 2, 3]), "is not a poke-tune checkpoint"),
    "missing-keys": (lambda: _torch_bytes({"format": 2}), "lacks encoder_version"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_checkpoint_is_one_line_naming_the_file(tmp_path: Path, kind: str) -> None:
    make, text = BAD_FILES[kind]
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(make())
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and text in message
    assert "\n" not in message
    assert "weights_only` set to `False`" not in message  # torch's advice to load unsafely
    assert not Path("/tmp/poke-tune-pwned").exists()
    with pytest.raises(CheckpointError):
        load_policy(path)


def test_a_directory_or_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_errors_are_value_errors() -> None:
    assert issubclass(CheckpointError, ValueError)  # the CLI maps ValueError to exit 2


def test_a_sound_checkpoint_loads(synthetic_dataset: OfflineDataset, tmp_path: Path) -> None:
    config = BCConfig(network=NetworkConfig(hidden_sizes=(16,)))
    trainer = Trainer(
        config, TrainConfig(steps=4, eval_interval=4, fqe_steps=0), synthetic_dataset
    )
    trainer.train(2)
    trainer.save(tmp_path / "ok.pt")
    assert read_checkpoint(tmp_path / "ok.pt")["step"] == 2


def test_checkpoint_with_another_encoder_is_refused(
    synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    trainer = _trainer(BCConfig(network=SMALL), synthetic_dataset)
    state = trainer.state_dict()
    state["encoder_version"] = "obs-v0"
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="obs-v0"):
        read_checkpoint(tmp_path / "old.pt")
    with pytest.raises(ValueError, match="obs-v0"):
        load_policy(tmp_path / "old.pt")


def test_a_checkpoint_saved_before_network_kinds_loads_as_flat(
    synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    trainer = _trainer(IQLConfig(network=SMALL), synthetic_dataset)
    trainer.train(5)
    state = trainer.state_dict()
    network = state["algo_config"]["network"]
    for key in ("kind", "slot_embedding", "head_sizes"):  # what older checkpoints lack
        del network[key]
    del state["algo_config"]["normalize_advantage"]
    torch.save(state, tmp_path / "old.pt")
    assert read_checkpoint(tmp_path / "old.pt")["algo_config"]["normalize_advantage"] is False
    policy = load_policy(tmp_path / "old.pt")
    trainer.algorithm.train(False)  # no dropout
    observations = torch.randn(4, synthetic_dataset.observation_size)
    torch.testing.assert_close(
        policy.scores(observations), trainer.algorithm.action_scores(observations)
    )


def test_a_checkpoint_missing_some_keys_names_them(
    synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    state = _trainer(BCConfig(network=SMALL), synthetic_dataset).state_dict()
    del state["step"], state["algorithm"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"checkpoint {path} lacks step, algorithm"


def test_a_checkpoint_of_another_format_is_refused(
    synthetic_dataset: OfflineDataset, tmp_path: Path
) -> None:
    state = _trainer(BCConfig(network=SMALL), synthetic_dataset).state_dict()
    assert state["format"] == CHECKPOINT_FORMAT
    state["format"] = CHECKPOINT_FORMAT - 1  # before Q ensembles were stacked
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(
        CheckpointError, match=f"not a poke-tune checkpoint \\(format {CHECKPOINT_FORMAT}\\)"
    ):
        read_checkpoint(tmp_path / "old.pt")


def test_a_checkpoint_matches_only_a_dataset_of_its_sizes(
    synthetic_dataset: OfflineDataset,
    synthetic_full_size_dataset: OfflineDataset,
    tmp_path: Path,
) -> None:
    trainer = _trainer(BCConfig(network=SMALL), synthetic_dataset)
    trainer.save(tmp_path / "bc.pt")
    state = read_checkpoint(tmp_path / "bc.pt")
    check_compatible(state, synthetic_dataset)
    with pytest.raises(ValueError, match="do not match"):
        check_compatible(state, synthetic_full_size_dataset)
