"""The base of every spec section: strict, frozen pydantic models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    # strict: `steps: true` or `num_samples: "8"` is an error, not 1 or 8; no inf/nan bounds.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
