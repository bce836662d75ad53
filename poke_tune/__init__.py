"""poke-tune: hyperparameter tuning for offline-RL Pokémon Showdown policies."""

from __future__ import annotations

__version__ = "0.1.0"
