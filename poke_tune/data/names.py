"""Player names and source paths, hashed before anything leaves an import.

The key: `POKE_TUNE_NAME_KEY` (at least `MIN_KEY_CHARS` characters), else the cache's
`import-name-key`, made once, atomically (32 random bytes as 64 hex digits written to a
private temporary file, then linked into place: a crash leaves no half-written key) with
mode 0600. A key file that is empty or short (a disk that filled up before this rule) is
refused, never used and never replaced: datasets may already hold hashes made with it, and
only its owner can say whether to delete it.

Source paths: `display_path` keeps a path component only if it cannot hold a username (a
number or date, a format id, a server room id, with their extensions, or a generic folder
name such as `logs` or `replays`); any other component
is replaced by `#` and a keyed hash of it, so a replay saved as `alice-vs-bob.json` is
named `#1f0c...json` in messages, provenance and the dataset header.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from poke_tune.sim.dex import to_id
from poke_tune.sim.runtime import cache_dir

__all__ = [
    "KEY_FILE",
    "MIN_KEY_CHARS",
    "NAME_KEY_ENV",
    "NameKeyError",
    "display_path",
    "name_hash",
    "name_key",
    "redact",
]

NAME_KEY_ENV = "POKE_TUNE_NAME_KEY"
"""Environment variable holding the key player names are hashed with (else a cache secret)."""
KEY_FILE = "import-name-key"
MIN_KEY_CHARS = 32
"""A shorter key is refused: a list of usernames would reverse its hashes."""

_SAFE_COMPONENT = re.compile(
    r"^(\d[\d._-]*|(battle-)?gen\d+[a-z0-9]*(-\d+)?)(\.log\.json|\.jsonl\.gz|\.jsonl|\.json)?$"
)
_EXTENSIONS = (".log.json", ".jsonl.gz", ".jsonl", ".json")
_GENERIC = frozenset(
    {"logs", "server-logs", "replays", "battles", "data", "recorded", "imported", "downloads"}
)
"""Folder names too common to name anyone, kept so messages stay readable."""


class NameKeyError(ValueError):
    """The name key is unusable (empty or too short); the message says what to do."""


def name_key() -> bytes:
    """The name-hashing key (see the module docstring); raises `NameKeyError` for an empty
    or short one."""
    from_env = os.environ.get(NAME_KEY_ENV)
    if from_env is not None:
        if len(from_env.strip()) < MIN_KEY_CHARS:
            raise NameKeyError(
                f"{NAME_KEY_ENV} holds {len(from_env.strip())} characters; a name key needs "
                f"at least {MIN_KEY_CHARS} (e.g. `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`)"
            )
        return from_env.strip().encode()
    path = cache_dir() / KEY_FILE
    if not path.exists():
        _create_key(path)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if len(text) < MIN_KEY_CHARS:
        raise NameKeyError(
            f"{path}: the name key holds {len(text)} characters, at least {MIN_KEY_CHARS} "
            "expected (a write cut short?). It is not used: delete the file to have a new key "
            "made (hashes in datasets imported with the old one will not match the new ones), "
            f"or set {NAME_KEY_ENV}"
        )
    return text.encode()


def _create_key(path: Path) -> None:
    """Write a new key under a temporary name and link it into place: readers see either
    no key or a whole one; a concurrent creator's key wins (the link fails)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # made by another import meanwhile
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def name_hash(name: str, key: bytes) -> str:
    """Keyed hash of a player's name (of its Showdown user id: case and spaces ignored)."""
    return _hash(to_id(name).encode("utf-8", "surrogatepass"), key)


def _hash(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:16]


def display_component(component: str, key: bytes) -> str:
    """`component` if it cannot be a name (see the module docstring), else `#HASH.EXT`."""
    if _SAFE_COMPONENT.match(component) or component in _GENERIC:
        return component
    extension = next((e for e in _EXTENSIONS if component.endswith(e)), "")
    stem = component[: len(component) - len(extension)]
    return f"#{_hash(os.fsencode(stem), key)[:12]}{extension}"


def display_path(root: Path, path: Path, key: bytes) -> str:
    """How a source file is named wherever an import shows or stores it: the source root's
    own name, then the path below it, each component hashed unless it cannot be a name."""
    parts = [root.name or "/"]
    if path != root:
        parts.extend(path.relative_to(root).parts)
    return "/".join(display_component(part, key) for part in parts)


def redact(text: str, names: dict[str, str], key: bytes) -> str:
    """`text` with each of `names` (clear name -> side) replaced by `SIDE#HASH`: a message
    about a battle never prints who played it."""
    for name in sorted(names, key=len, reverse=True):
        if name.strip() and name != names[name]:  # a player named after its side hides nothing
            text = text.replace(name, f"{names[name]}#{name_hash(name, key)[:8]}")
    return text
