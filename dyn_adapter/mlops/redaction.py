"""Credentials never reach MLflow: their values are replaced by ``***`` wherever they appear.

Replaced: the values of credential-like environment variables (names matching ``*SECRET*``,
``*TOKEN*``, ``*PASSWORD*``, ``*KEY_ID*`` and the like) and passwords in URLs
(``scheme://user:password@host``); config keys that name a credential lose their whole value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

REDACTED = "***"


CREDENTIAL_ENV_VARS = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
    }
)


CREDENTIAL_NAME_PARTS = (
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "KEY_ID",
    "ACCESS_KEY",
    "API_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
)


# Shorter values are not treated as secrets: replacing "1" or "false" everywhere would mangle
# every log (TOKENIZERS_PARALLELISM=false matches *TOKEN*), and real credentials are longer.
MIN_SECRET_LENGTH = 6


_NOT_SECRETS = frozenset({"enabled", "disabled"})


# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


# Config keys whose values are credentials, by word: "aws_secret_access_key", "api-token",
# "password"; not "reg_tokens" or "backward_keeps".
_CREDENTIAL_KEY_WORDS = frozenset(
    {"secret", "secrets", "token", "password", "passwd", "credential", "credentials"}
)


_CREDENTIAL_KEY_PAIRS = frozenset({("key", "id"), ("access", "key"), ("api", "key")})


def is_credential_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential."""
    upper = name.upper()
    return upper in CREDENTIAL_ENV_VARS or any(part in upper for part in CREDENTIAL_NAME_PARTS)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the credential-like environment variables, longest first.

    Args:
        environ: The environment to read; ``os.environ`` by default.
    """
    env = os.environ if environ is None else environ
    values = {
        v
        for k, v in env.items()
        if is_credential_name(k) and len(v) >= MIN_SECRET_LENGTH and v.lower() not in _NOT_SECRETS
    }
    # Longest first, so a secret containing another one is replaced whole.
    return sorted(values, key=len, reverse=True)


def redact(value: object, secrets: Sequence[str] | None = None) -> str:
    """``value`` as a string with every credential replaced by ``***``.

    Replaced: the values of credential-like environment variables (names matching
    ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``, ``*KEY_ID*`` and the like, see
    :func:`is_credential_name`; values shorter than ``MIN_SECRET_LENGTH`` are not secrets) and
    passwords in URLs (``scheme://user:password@host``).

    Args:
        value: Anything; it is converted with ``str``.
        secrets: The secret values to replace; read from ``os.environ`` when None.
    """
    text = str(value)
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)


def is_credential_key(key: str) -> bool:
    """Whether a config/tag key names a credential (its value is then never logged)."""
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    return any(w in _CREDENTIAL_KEY_WORDS for w in words) or any(
        pair in _CREDENTIAL_KEY_PAIRS for pair in zip(words, words[1:], strict=False)
    )


def redact_items(
    items: Mapping[str, object], secrets: Sequence[str] | None = None
) -> dict[str, str]:
    """Redact keys and values of params or tags; credential-named keys lose their whole value."""
    secrets = secret_values() if secrets is None else secrets
    return {
        redact(k, secrets): REDACTED if is_credential_key(k) else redact(v, secrets)
        for k, v in items.items()
    }
