"""The one policy resolver: built-ins, checkpoints and registered models as behaviour
policies, with exploration suffixes, pinned before they are recorded (the recipe, its
cache key and the dataset's header)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from poke_tune.algos import LearnedPolicy
from poke_tune.data.generate import generate_dataset
from poke_tune.data.jsonl import read_header, read_trajectories
from poke_tune.sim.encoding import ENCODER_VERSION
from poke_tune.sim.policies import EpsilonMixturePolicy, MaxDamagePolicy
from poke_tune.sim.runtime import find_runtime
from poke_tune.tuning.datasets import prepare_dataset
from poke_tune.tuning.policies import (
    ModelNotFoundError,
    fluent_tracking_uri,
    pin_policy_name,
    resolve_policy,
)
from poke_tune.tuning.spec import SpecError
from poke_tune.tuning.spec_data import GenerateRecipe
from poke_tune.tuning.spec_file import load_spec

TINY = Path(__file__).parent / "tiny.yaml"
POLICY_MODEL = Path(__file__).parents[2] / "poke_tune" / "tuning" / "track" / "policy_model.py"


def test_a_checkpoint_resolves_with_its_exploration(learned_checkpoint: Path) -> None:
    plain = resolve_policy(str(learned_checkpoint))
    assert isinstance(plain, LearnedPolicy) and plain.temperature is None
    warm = resolve_policy(f"{learned_checkpoint}:softmax=0.5")
    assert isinstance(warm, LearnedPolicy) and warm.temperature == 0.5
    assert warm.name == f"{plain.name}:softmax=0.5"
    mixed = resolve_policy(f"{learned_checkpoint}:eps=0.2")
    assert isinstance(mixed, EpsilonMixturePolicy) and mixed.epsilon == 0.2
    assert isinstance(mixed.base, LearnedPolicy)
    assert isinstance(resolve_policy("max-damage"), MaxDamagePolicy)


def test_names_are_pinned_or_refused(
    learned_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(learned_checkpoint, tmp_path / "mine.pt")
    monkeypatch.chdir(tmp_path)
    assert pin_policy_name("mine.pt:eps=0.1") == f"{tmp_path / 'mine.pt'}:eps=0.1"
    assert pin_policy_name("heuristic:softmax=0.3") == "heuristic:softmax=0.3"
    assert pin_policy_name("models:/x/3:softmax=0.1") == "models:/x/3:softmax=0.1"
    with pytest.raises(ValueError, match="unknown policy 'alphago': expected a built-in"):
        pin_policy_name("alphago")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        pin_policy_name("missing.pt")
    with pytest.raises(ValueError, match="softmax"):
        pin_policy_name("random:softmax=1")


def test_a_checkpoint_behaviour_policy_is_recorded_by_path_and_content(
    learned_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = shutil.copy(learned_checkpoint, tmp_path / "behaviour.pt")
    name = pin_policy_name(f"{checkpoint}:softmax=0.5")
    out = tmp_path / "data.jsonl"
    summary = generate_dataset(
        out,
        policies=[name, "max-damage"],
        battles=4,
        seed=3,
        num_workers=1,
        resolver=resolve_policy,
    )
    assert summary.failed_battles == 0 and summary.trajectories == 8
    generator = read_header(out).generator
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    assert generator["policies"] == [f"{tmp_path / 'behaviour.pt'}:softmax=0.5", "max-damage"]
    assert generator["policy_files"] == {name: digest}
    played = {record.policy for record in read_trajectories(out)}
    assert played == {"cql@2:behaviour.pt:softmax=0.5", "max-damage"}

    recipe = GenerateRecipe(battles=4, seed=3, policies=[name, "max-damage"])
    key = recipe.key()
    Path(checkpoint).write_bytes(Path(checkpoint).read_bytes() + b"\0")  # another checkpoint
    assert recipe.key() != key
    builtin = GenerateRecipe(battles=4, policies=["random", "max-damage"])
    values = {**builtin.model_dump(exclude={"league"}), "encoder_version": ENCODER_VERSION}
    unchanged = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    assert builtin.key() == unchanged  # built-in recipes keep their cached datasets


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _register(store: str, name: str, checkpoint: Path | None = None) -> None:
    """Version 1 of `name`, crowned: `checkpoint` logged as the project's pyfunc model (as
    a sweep registers its winner), or a bare version (enough to pin an alias)."""
    client = MlflowClient(store)
    if checkpoint is None:
        client.create_registered_model(name)
        client.create_model_version(name, source=str(Path(store[10:]).parent / "m"))
    else:
        with fluent_tracking_uri(store), mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="policy",
                python_model=str(POLICY_MODEL),
                artifacts={"checkpoint": str(checkpoint)},
                registered_model_name=name,
            )
    client.set_registered_model_alias(name, "champion", "1")


def _spec_file(tmp_path: Path, policies: list[str], store: str) -> Path:
    spec = yaml.safe_load(TINY.read_text())
    spec["dataset"] = {"generate": {"battles": 2, "policies": policies, "seed": 4}}
    spec["mlflow"] = {"tracking_uri": store}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_an_alias_is_pinned_in_the_spec_and_the_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _register(store, "flywheel")
    assert pin_policy_name("models:/flywheel@champion:eps=0.1", store) == (
        "models:/flywheel/1:eps=0.1"
    )
    with pytest.raises(ModelNotFoundError, match="models:/flywheel@nope"):
        pin_policy_name("models:/flywheel@nope", store)
    spec = load_spec(_spec_file(tmp_path, ["models:/flywheel@champion", "max-damage"], store))
    recipe = spec.dataset.generate
    assert recipe is not None and recipe.policies == ["models:/flywheel/1", "max-damage"]
    unpinned = recipe.model_copy(update={"policies": ["models:/flywheel@champion", "max-damage"]})
    assert recipe.key() != unpinned.key()


@pytest.mark.slow  # logs a real pyfunc model and plays battles with it
def test_a_registered_behaviour_policy_is_recorded_by_its_version(
    learned_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POKE_TUNE_SHOWDOWN_DIR", str(find_runtime().package_dir))
    monkeypatch.setenv("POKE_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the store's default artifact root is ./mlruns
    store = _store(tmp_path)
    _register(store, "flywheel", learned_checkpoint)
    policies = ["models:/flywheel@champion:softmax=0.5", "max-damage"]
    spec = load_spec(_spec_file(tmp_path, policies, store))
    recipe = spec.dataset.generate
    assert recipe is not None and recipe.policies[0] == "models:/flywheel/1:softmax=0.5"
    dataset = prepare_dataset(spec.dataset, tracking_uri=store)
    assert dataset.header.generator["policies"] == recipe.policies
    # Keyed with its registry: models:/flywheel/1 of another store is another policy.
    assert (tmp_path / "cache" / "generated" / f"{recipe.key(store)}.json").is_file()
    assert recipe.key(store) != recipe.key()


def test_a_bad_behaviour_policy_in_a_spec_names_its_line(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, ["max-damage", "nothing.pt"], _store(tmp_path))
    with pytest.raises(SpecError, match=r"spec.yaml:\d+: dataset.generate.policies.1: .*nothing"):
        load_spec(path)


def test_a_checkpoint_in_a_spec_is_relative_to_the_spec(
    learned_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(learned_checkpoint, tmp_path / "behaviour.pt")
    monkeypatch.chdir(learned_checkpoint.parent)  # another folder
    spec = load_spec(_spec_file(tmp_path, ["behaviour.pt:eps=0.1"], _store(tmp_path)))
    assert spec.dataset.generate is not None
    assert spec.dataset.generate.policies == [f"{tmp_path / 'behaviour.pt'}:eps=0.1"]
