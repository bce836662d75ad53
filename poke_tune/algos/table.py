"""The algorithm table: one line per algorithm, and everything that lists algorithms.

`ALGORITHMS` maps each name (the `algo` tag of its config) to its config class and its
algorithm class. From it derive the `AlgoConfig` discriminated union (spec files, `--set`,
checkpoints), `parse_algo_config`, `build_algorithm`, the names the spec and the CLI
accept, and which algorithms learn a TD critic (those whose config is a `TDConfig`).

Adding an algorithm is one module (`algos/<name>.py`: its config with an
`algo: Literal["<name>"]` tag, its losses, its class implementing `Algorithm`) and one
line here.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeAlias, TypeVar

import torch
from pydantic import Field, TypeAdapter

from poke_tune.algos.bc import BC, BCConfig
from poke_tune.algos.common import AlgoConfigBase, Algorithm, TDConfig
from poke_tune.algos.cql import CQL, CQLConfig
from poke_tune.algos.iql import IQL, IQLConfig

__all__ = [
    "ALGORITHMS",
    "AlgoConfig",
    "AlgorithmEntry",
    "build_algorithm",
    "parse_algo_config",
]

ConfigT = TypeVar("ConfigT", bound=AlgoConfigBase)
ConfigT_contra = TypeVar("ConfigT_contra", bound=AlgoConfigBase, contravariant=True)


class AlgorithmFactory(Protocol[ConfigT_contra]):
    """How every algorithm class is constructed (from its config and the data's sizes)."""

    def __call__(
        self,
        config: ConfigT_contra,
        *,
        observation_size: int,
        num_actions: int,
        total_steps: int,
        warmup_steps: int = 0,
        device: torch.device | str = "cpu",
    ) -> Algorithm: ...


@dataclass(frozen=True)
class AlgorithmEntry(Generic[ConfigT]):
    """One algorithm: its config class and the class that trains it."""

    config: type[ConfigT]
    algorithm: AlgorithmFactory[ConfigT]

    @property
    def learns_critic(self) -> bool:
        """Whether it learns a critic by temporal differences (and reports its TD error)."""
        return issubclass(self.config, TDConfig)


ALGORITHMS: dict[str, AlgorithmEntry[Any]] = {
    "bc": AlgorithmEntry(BCConfig, BC),
    "iql": AlgorithmEntry(IQLConfig, IQL),
    "cql": AlgorithmEntry(CQLConfig, CQL),
}
"""Every algorithm, by the name its config's `algo` tag holds."""

if TYPE_CHECKING:
    # A type checker cannot build a Union from a table, so statically an algorithm config
    # is the base every config extends (which declares the `algo` tag); at run time it is
    # the discriminated union of the table's configs, which pydantic validates against.
    AlgoConfig: TypeAlias = AlgoConfigBase
else:
    AlgoConfig = Annotated[
        functools.reduce(operator.or_, (entry.config for entry in ALGORITHMS.values())),
        Field(discriminator="algo"),
    ]
_ALGO_CONFIG: TypeAdapter[AlgoConfig] = TypeAdapter(AlgoConfig)


def parse_algo_config(values: dict[str, Any]) -> AlgoConfig:
    """Validate an algorithm config dict (with its `algo` key) into its typed model."""
    return _ALGO_CONFIG.validate_python(values)


def build_algorithm(
    config: AlgoConfig,
    *,
    observation_size: int,
    num_actions: int,
    total_steps: int,
    warmup_steps: int = 0,
    device: torch.device | str = "cpu",
) -> Algorithm:
    """The algorithm object for a config (built by its line of the table)."""
    return ALGORITHMS[config.algo].algorithm(
        config,
        observation_size=observation_size,
        num_actions=num_actions,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        device=device,
    )
