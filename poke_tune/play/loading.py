"""Any poke-tune policy from its name: what `poke-tune eval` and `poke-tune play` accept."""

from __future__ import annotations

from pathlib import Path

from poke_tune.algos import load_policy
from poke_tune.sim.policies import Policy, make_policy

__all__ = ["resolve_policy"]


def resolve_policy(name: str, tracking_uri: str | None = None) -> Policy:
    """A built-in policy name, a training checkpoint file, or a registered MLflow model
    (`models:/NAME@champion`, `models:/NAME/3`)."""
    if name.startswith("models:/"):
        from poke_tune.tuning.track.registry import load_registered_policy

        return load_registered_policy(name, tracking_uri)
    path = Path(name)
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return load_policy(path.resolve())
    return make_policy(name)
