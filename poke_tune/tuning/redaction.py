"""Credentials never leave the process: URIs and command lines are kept, logged and
pickled with their passwords and secret-looking query values replaced by `***`."""

from __future__ import annotations

import re

from poke_tune.tuning.spec import SearchSpec

__all__ = ["is_redacted", "redact", "redacted"]

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@\s/]*@")
_SECRET_QUERY = re.compile(r"(?i)((?:password|secret|token|access_key|key)=)[^&\s]+")
_HIDDEN = "***"


def redact(text: str) -> str:
    """Hide passwords in URIs (`http://alice:pw@host` -> `http://alice:***@host`) and
    secret-looking query values, wherever a URI or a command line is kept or printed."""
    text = _CREDENTIALS.sub(rf"\g<scheme>\g<user>:{_HIDDEN}@", text)
    return _SECRET_QUERY.sub(rf"\1{_HIDDEN}", text)


def is_redacted(uri: str | None) -> bool:
    """A URI stored or pickled without its credentials (the live one must come from
    MLFLOW_TRACKING_URI)."""
    return uri is not None and _HIDDEN in uri


def redacted(spec: SearchSpec) -> SearchSpec:
    """The spec with its tracking URI's credentials hidden: what Tune pickles, what the
    experiment folder keeps and what MLflow records (trials never need the tracking URI)."""
    uri = spec.mlflow.tracking_uri
    if uri is None or redact(uri) == uri:
        return spec
    return spec.model_copy(
        update={"mlflow": spec.mlflow.model_copy(update={"tracking_uri": redact(uri)})}
    )
