"""URLs that could carry credentials: refused where they would be written down, stripped where
shown. (Credentials in free text, such as logs, are :mod:`dyn_adapter.mlops.redaction`'s job.)"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import ConfigError


def check_no_credentials(url: str, where: str, instead: str) -> None:
    """Refuse ``url`` if it carries a user name or password: it would end up in files and logs.

    Args:
        url: The URL a setting holds.
        where: The setting, as the message names it.
        instead: The environment variables that should carry the credentials.

    Raises:
        ConfigError: ``user[:password]@`` in the URL.
    """
    if "@" in urlsplit(url).netloc:
        raise ConfigError(
            f"{where}: the URL carries credentials; remove them and set {instead} in the "
            "environment instead"
        )


def redact_uri(url: str) -> str:
    """``url`` without user info and query string: safe to write down."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"
