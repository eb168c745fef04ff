"""Credentials out of what connectors say: URLs and DSNs fit for errors and logs.

Every connector names its server in errors (and client libraries log the URLs they are
given), so the one rule lives here: the password of a URL's userinfo (all of it, when the
userinfo is a bare token as in ``nats://TOKEN@host``) and the values of query parameters
whose names look like secrets (``token``, ``api_key``, ``sig``...) become ``***``; so does
``password=`` in a libpq key/value DSN. URLs are taken apart with the standard library's
``urllib.parse``; the rest of the text is left as it is.

Example:
    >>> mask_url("https://bob:hunter2@api.example/v1?token=abc&page=2")
    'https://bob:***@api.example/v1?token=***&page=2'
    >>> mask_dsn("host=db user=app password='s e c r e t' dbname=orders")
    'host=db user=app password=*** dbname=orders'
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Final

__all__ = [
    "MASK",
    "is_secret_name",
    "key_value_pairs",
    "mask_dsn",
    "mask_url",
    "mask_urls_in",
    "redact_logs_of",
]

MASK: Final = "***"

# Query parameter names that carry a secret: exact names, then parts of names.
_SECRET_NAMES: Final = frozenset(
    {"key", "sig", "auth", "pass", "pwd", "jwt", "session", "sessionid"}
)
_SECRET_PARTS: Final = (
    "token",
    "secret",
    "passw",
    "signature",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "accesskey",
    "private",
    "credential",
    "authorization",
)


def is_secret_name(name: str) -> bool:
    """Whether a query parameter (or DSN keyword) named so is taken to hold a secret.

    Example:
        >>> [is_secret_name(n) for n in ("access_token", "X-Amz-Signature", "page", "sig")]
        [True, True, False, True]
    """
    lowered = name.lower()
    if lowered in _SECRET_NAMES or lowered.endswith(("_key", "-key")):
        return True
    return any(part in lowered for part in _SECRET_PARTS)


def mask_url(url: object, *, bare_user_is_secret: bool = True) -> str:
    """``url`` (a str or a URL object such as ``httpx.URL``) with its credentials masked.

    A userinfo without a password is masked whole (it is often a token in the user's
    place, as NATS takes it), unless ``bare_user_is_secret=False`` (PostgreSQL's
    ``postgresql://app@db/orders`` names a user).

    A URL that does not parse (a port that is not a number) is masked all the same, by
    pattern.

    Example:
        >>> mask_url("nats://s3cr3t-token@127.0.0.1:4222")
        'nats://***@127.0.0.1:4222'
        >>> mask_url("redis://:pw@localhost:6379/0")
        'redis://:***@localhost:6379/0'
    """
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return _mask_by_pattern(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:{MASK}@{hostport}"
        elif bare_user_is_secret:
            netloc = f"{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(name) for name, _ in pairs):
            query = "&".join(
                f"{urllib.parse.quote(name, safe='')}="
                + (MASK if is_secret_name(name) else urllib.parse.quote(value, safe=""))
                for name, value in pairs
            )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


_USERINFO: Final = re.compile(r"//([^/?#@:]*)(:[^/?#@]*)?@")
_QUERY_PAIR: Final = re.compile(r"([?&;])([^=&#;]+)=([^&#;]*)")


def _mask_by_pattern(text: str) -> str:
    """What :func:`mask_url` does, for text that ``urlsplit`` refuses."""
    text = _USERINFO.sub(
        lambda m: f"//{m.group(1)}:{MASK}@" if m.group(2) else f"//{MASK}@", text, count=1
    )
    return _QUERY_PAIR.sub(
        lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if is_secret_name(m.group(2)) else m.group(0),
        text,
    )


# A libpq key/value pair: keyword = value, the value bare or single-quoted with \' escapes.
_KEY_VALUE: Final = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def key_value_pairs(dsn: str) -> dict[str, str]:
    r"""The settings of a libpq key/value DSN (quotes and backslash escapes undone).

    Example:
        >>> key_value_pairs(r"host=db port = 5433 password='it\'s'")
        {'host': 'db', 'port': '5433', 'password': "it's"}
    """
    pairs = {}
    for match in _KEY_VALUE.finditer(dsn):
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[match.group(1)] = value
    return pairs


def mask_dsn(dsn: str) -> str:
    """A PostgreSQL DSN, URL (``postgresql://u:pw@host/db``) or key/value (``host=db
    password=pw``), with its password and other secret-looking settings masked.

    Example:
        >>> mask_dsn("postgresql://app:pw@db:5432/orders?sslpassword=x")
        'postgresql://app:***@db:5432/orders?sslpassword=***'
    """
    if "://" in dsn:
        return mask_url(dsn, bare_user_is_secret=False)

    def masked(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{name}={MASK}" if is_secret_name(name) else match.group(0)

    return _KEY_VALUE.sub(masked, dsn)


_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def mask_urls_in(text: str) -> str:
    """Every URL in a piece of text masked with :func:`mask_url` (for messages that quote
    one: a client library's log line).

    Example:
        >>> mask_urls_in("GET http://api/x?token=abc answered 200")
        'GET http://api/x?token=*** answered 200'
    """
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)


class _MaskingFilter(logging.Filter):
    """Masks the URLs in the records of a client library's logger (httpx logs each
    request's URL, aiormq each connection's, query string included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_urls_in(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER: Final = _MaskingFilter()


def redact_logs_of(*logger_names: str) -> None:
    """Mask the URLs in what these loggers log (once per logger, however often called).

    A filter on the logger itself, so that it runs before the record reaches any handler,
    the application's or pytest's.

    Example:
        >>> redact_logs_of("httpx")
        >>> _FILTER in logging.getLogger("httpx").filters
        True
    """
    for name in logger_names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
