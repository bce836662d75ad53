"""Any policy from its name, the one resolver of data generation, evaluation, confirmation
and play: a built-in (`heuristic`), a training checkpoint file (`runs/x/best.pt`) or a
registered MLflow model (`models:/NAME/3`, `models:/NAME@champion`), each optionally with
an exploration suffix, `:eps=E` or `:softmax=T` (`sim.policies.split_policy_name`; on a
learned policy T is relative to its per-decision score range, `algos.policy`).

`pin_policy_name` fixes what a name means before it is recorded (a dataset recipe, its
header, its cache key): an alias becomes the version it points to now, a relative
checkpoint path an absolute one.

MLflow is imported only when a `models:/` name is resolved, so reading a spec or running a
trial with built-in policies loads no MLflow (the search and confirmation stages import
this module; pyproject's import contract lets exactly this module's MLflow import through).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from poke_tune.algos import LearnedPolicy, load_policy
from poke_tune.sim.policies import (
    BUILTIN_POLICIES,
    EpsilonMixturePolicy,
    Exploration,
    Policy,
    make_policy,
    split_policy_name,
)
from poke_tune.tuning.redaction import redact

__all__ = [
    "ModelNotFoundError",
    "fluent_tracking_uri",
    "load_registered_policy",
    "pin_policy_name",
    "resolve_policy",
]

_MODELS = "models:/"


class ModelNotFoundError(ValueError):
    """A `models:/` URI that names no registered model version."""


def resolve_policy(name: str, tracking_uri: str | None = None) -> Policy:
    """The policy `name` names (see the module docstring); `tracking_uri` is the MLflow
    store of `models:/` names (default: MLFLOW_TRACKING_URI)."""
    base, exploration = split_policy_name(name)
    if base in BUILTIN_POLICIES:
        return make_policy(name)
    if base.startswith(_MODELS):
        policy = load_registered_policy(base, tracking_uri)
    else:
        policy = load_policy(_checkpoint(base, name))
    if exploration is None:
        return policy
    return _explore(policy, exploration, f"{policy.name}{name[len(base) :]}")


def pin_policy_name(name: str, tracking_uri: str | None = None, folder: Path | None = None) -> str:
    """`name` with what it means fixed: `models:/NAME@ALIAS` -> `models:/NAME/VERSION` (the
    version the alias points to now), a checkpoint path -> its absolute path (it must
    exist; a relative one is relative to `folder`, default the current folder); the
    suffix kept. A name that names no policy is a `ValueError`."""
    base, _ = split_policy_name(name)
    suffix = name[len(base) :]
    if base in BUILTIN_POLICIES:
        make_policy(name)  # refuses `random:softmax=...`
        return name
    if base.startswith(_MODELS):
        model, at, alias = base[len(_MODELS) :].rpartition("@")
        if not at or "/" in alias:
            return name
        return f"{_MODELS}{model}/{_alias_version(model, alias, tracking_uri)}{suffix}"
    return f"{_checkpoint(str((folder or Path()) / base), name)}{suffix}"


def _checkpoint(base: str, name: str) -> Path:
    """The absolute path of the checkpoint file `base`; `name` in the errors."""
    path = Path(base)
    if path.is_file():
        return path.resolve()
    if path.suffix == ".pt":
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    raise ValueError(
        f"unknown policy {name!r}: expected a built-in ({', '.join(sorted(BUILTIN_POLICIES))}), "
        "a checkpoint file (.pt) or a registered model (models:/NAME/VERSION, "
        "models:/NAME@ALIAS), optionally with ':eps=<0..1>' or ':softmax=<temperature>'"
    )


def _explore(policy: Policy, exploration: Exploration, name: str) -> Policy:
    if exploration.kind == "eps":
        return EpsilonMixturePolicy(base=policy, epsilon=exploration.value, name=name)
    assert isinstance(policy, LearnedPolicy)  # built-ins are make_policy's
    return dataclasses.replace(policy, temperature=exploration.value, name=name)


@contextmanager
def fluent_tracking_uri(uri: str | None) -> Iterator[None]:
    """MLflow's fluent API (`log_model`, `load_model`) reads one process-wide URI, and
    `set_tracking_uri` also exports MLFLOW_TRACKING_URI to every later child process: set
    it for this call only, then unset it again, so that MLFLOW_TRACKING_URI (restored as
    it was, unset stays unset) is what counts afterwards."""
    if not uri:
        yield
        return
    import mlflow

    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None unsets (and unexports)
        if exported is not None:
            os.environ["MLFLOW_TRACKING_URI"] = exported


def load_registered_policy(model_uri: str, tracking_uri: str | None = None) -> LearnedPolicy:
    """The policy of a registered model, e.g. `models:/poke-tune-cql-alpha@champion`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with fluent_tracking_uri(tracking_uri):
            model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as error:
        raise _not_found(model_uri, tracking_uri, error) from None
    policy: LearnedPolicy = model.unwrap_python_model().policy
    policy.name = model_uri
    return policy


def _alias_version(model: str, alias: str, tracking_uri: str | None) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient(tracking_uri).get_model_version_by_alias(model, alias).version)
    except MlflowException as error:
        raise _not_found(f"{_MODELS}{model}@{alias}", tracking_uri, error) from None


def _not_found(model_uri: str, tracking_uri: str | None, error: Exception) -> ModelNotFoundError:
    import mlflow

    first = (str(error).strip().splitlines() or ["not found"])[0]
    return ModelNotFoundError(
        f"{model_uri}: no such registered model version in "
        f"{redact(tracking_uri or mlflow.get_tracking_uri())} ({first[:200]}); "
        "registered models are listed in the MLflow UI (poke-tune ui)"
    )
