"""Offline RL algorithms (BC, IQL, CQL: `table.ALGORITHMS`) for discrete actions with
legal-action masks.

Layer: imports `poke_tune.sim` and `poke_tune.data`, never `eval`, `tuning` or `cli`.
"""

from __future__ import annotations

from poke_tune.algos.bc import BC, BCConfig
from poke_tune.algos.checkpoint import CheckpointError, read_checkpoint
from poke_tune.algos.common import Algorithm, Batch
from poke_tune.algos.cql import CQL, CQLConfig
from poke_tune.algos.iql import IQL, IQLConfig
from poke_tune.algos.networks import NetworkConfig
from poke_tune.algos.policy import LearnedPolicy, load_policy
from poke_tune.algos.table import ALGORITHMS, AlgoConfig, build_algorithm, parse_algo_config
from poke_tune.algos.trainer import DivergedError, TrainConfig, Trainer, run_training

__all__ = [
    "ALGORITHMS",
    "BC",
    "CQL",
    "IQL",
    "AlgoConfig",
    "Algorithm",
    "BCConfig",
    "Batch",
    "CQLConfig",
    "CheckpointError",
    "DivergedError",
    "IQLConfig",
    "LearnedPolicy",
    "NetworkConfig",
    "TrainConfig",
    "Trainer",
    "build_algorithm",
    "load_policy",
    "parse_algo_config",
    "read_checkpoint",
    "run_training",
]
