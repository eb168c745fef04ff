"""The one way a connector module says that its client library is missing.

Each broker connector's client is an optional extra (``pip install 'rxflow[redis]'``), and
the connector module imports it inside :func:`requires_extra`::

    with requires_extra("postgres"):
        import asyncpg

so that importing a connector without its extra raises
:class:`~rxflow.errors.MissingExtraError`, which names the extra to install, for every
connector alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rxflow.errors import MissingExtraError


@contextlib.contextmanager
def requires_extra(extra: str, *, feature: str | None = None) -> Iterator[None]:
    """Turn a missing module, imported in the block, into an error that says
    ``pip install 'rxflow[<extra>]'``; ``extra`` is also the connector's module name,
    unless ``feature`` names what needs the module (``"Avro (codecs.avro)"``).

    Example:
        >>> try:
        ...     with requires_extra("http"):
        ...         import nosuchlib
        ... except ModuleNotFoundError as error:
        ...     print(error)
        rxflow.connectors.http needs nosuchlib, which is not installed: pip install 'rxflow[http]'
        >>> try:
        ...     with requires_extra("avro", feature="Avro (codecs.avro)"):
        ...         import nosuchlib
        ... except ModuleNotFoundError as error:
        ...     print(error)
        Avro (codecs.avro) needs nosuchlib, which is not installed: pip install 'rxflow[avro]'
    """
    try:
        yield
    except ModuleNotFoundError as error:
        # The package to install, not the submodule that was imported (redis.asyncio).
        missing = error.name.partition(".")[0] if error.name else "its client library"
        what = feature or f"rxflow.connectors.{extra}"
        raise MissingExtraError(
            f"{what} needs {missing}, which is not installed: pip install 'rxflow[{extra}]'",
            name=error.name,
        ) from error
