"""A trained policy as an MLflow pyfunc model (logged as "models from code").

`predict({"observation": [N, obs], "action_mask": [N, actions]})` returns the masked argmax
action of each row. The model's artifact is the training checkpoint itself, loaded with
`torch.load(weights_only=True)`; `poke-tune eval models:/NAME@champion` plays it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc.model import PythonModel

from poke_tune.algos import LearnedPolicy, load_policy
from poke_tune.algos.networks import masked_argmax

__all__ = ["PolicyModel"]


class PolicyModel(PythonModel):
    policy: LearnedPolicy

    def load_context(self, context: Any) -> None:
        self.policy = load_policy(Path(context.artifacts["checkpoint"]))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # Unannotated on purpose: MLflow reads type hints as a schema (and rejects a dict
        # of arrays); the signature comes from the input example instead.
        observations = torch.as_tensor(np.asarray(model_input["observation"], np.float32))
        mask = torch.as_tensor(np.asarray(model_input["action_mask"], bool))
        with torch.inference_mode():
            return masked_argmax(self.policy.scores(observations), mask).numpy()


mlflow.models.set_model(PolicyModel())
