"""poke-tune policies on a real Showdown server: a local server, a poke-env player, matches.

The only package that imports poke-env (the training and tuning path never does). Its
poke-env parts load on first use, so `LocalServer` costs nothing extra (a policy by name
is `poke_tune.tuning.policies.resolve_policy`)::

    from poke_tune.play import PolicyPlayer
    player = PolicyPlayer("models:/poke-tune-cql-alpha@champion")
    await player.ladder(10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poke_tune.play.server import LocalServer, free_port, websocket_url

if TYPE_CHECKING:
    from poke_tune.play.factory import make_player
    from poke_tune.play.match import MatchResult, play_match
    from poke_tune.play.player import PolicyPlayer

__all__ = [
    "LocalServer",
    "MatchResult",
    "PolicyPlayer",
    "free_port",
    "make_player",
    "play_match",
    "websocket_url",
]

_LAZY = {
    "PolicyPlayer": "poke_tune.play.player",
    "MatchResult": "poke_tune.play.match",
    "make_player": "poke_tune.play.factory",
    "play_match": "poke_tune.play.match",
}


def __getattr__(name: str) -> Any:
    """Load the poke-env parts on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
