"""Evaluation: win rates of policies in real, seeded simulator battles."""

from __future__ import annotations

from poke_tune.eval.winrate import EVAL_SEED, EvaluationError, WinRate, evaluate, wilson_interval

__all__ = ["EVAL_SEED", "EvaluationError", "WinRate", "evaluate", "wilson_interval"]
