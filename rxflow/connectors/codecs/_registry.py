"""A Confluent-compatible schema registry as an Avro reader's lookup, through httpx."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import mask_url, mask_urls_in
from rxflow.connectors.codecs._avro import AvroSchema
from rxflow.errors import HttpResponseError, RecordInvalidError, ServiceUnavailableError


class SchemaRegistry:
    """Fetches writer schemas by id, ``GET {url}/schemas/ids/{id}``, and remembers each.

    Give it to :func:`~rxflow.connectors.codecs.avro_reader` as ``lookup=``; it is asked
    once per id the reader does not know (ids name one schema forever, so a schema is
    kept for the reader's life). An id the registry does not have (404) is not kept: a
    record with it is a decode failure, and the next one asks again.

    Credentials go in ``auth=`` or in the URL's userinfo; errors show the URL masked.

    Args:
        url: the registry, ``"https://registry:8081"``.
        auth: ``(user, password)`` for HTTP basic authentication.
        headers: more request headers (a bearer token, say).
        timeout: seconds for each request.

    Raises (when asked, from the source):
        ServiceUnavailableError: the registry could not be reached.
        HttpResponseError: it answered other than 200 or 404 (401, 500...).

    Example:
        A source reading Avro whose schemas live in a registry::

            codec = avro_reader(lookup=SchemaRegistry("http://registry:8081"))
            async with jetstream_source(url, "ORDERS", "orders.>", "billing", codec=codec) as s:
                ...
    """

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        with requires_extra("http", feature="SchemaRegistry (rxflow.connectors.codecs)"):
            import httpx
        self._httpx = httpx
        self._url = url.rstrip("/")
        self._shown = mask_url(self._url)
        self._auth = auth
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._schemas: dict[int, AvroSchema] = {}

    def __repr__(self) -> str:
        return f"SchemaRegistry({self._shown!r})"

    async def __call__(self, schema_id: int) -> AvroSchema | None:
        """The writer schema with this id, or None if the registry has no such id."""
        known = self._schemas.get(schema_id)
        if known is not None:
            return known
        httpx = self._httpx
        where = f"schema registry {self._shown}"
        # A client per lookup: lookups are once per id, and nothing is left open between.
        async with httpx.AsyncClient(
            auth=self._auth, headers=self._headers, timeout=self._timeout
        ) as client:
            try:
                response = await client.get(f"{self._url}/schemas/ids/{schema_id}")
            except httpx.TransportError as error:
                raise ServiceUnavailableError(
                    f"{where}: could not fetch schema id {schema_id} "
                    f"({type(error).__name__}: {mask_urls_in(str(error))}); "
                    "check the URL and that the registry is up"
                ) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise HttpResponseError(
                f"{where}: GET /schemas/ids/{schema_id} answered {response.status_code}: "
                f"{response.text[:200]!r}; check the URL and the credentials",
                url=self._shown,
                status_code=response.status_code,
            )
        schema = self._schema_of(schema_id, response.json())
        self._schemas[schema_id] = schema
        return schema

    def _schema_of(self, schema_id: int, answer: Any) -> AvroSchema:
        kind = answer.get("schemaType", "AVRO") if isinstance(answer, dict) else None
        if kind != "AVRO":
            # A record that names a Protobuf or JSON schema is not Avro: the record's fault.
            raise RecordInvalidError(
                f"not a valid Avro record: schema id {schema_id} is a {kind} schema "
                f"in {self._shown}"
            )
        schema: AvroSchema = json.loads(answer["schema"])
        return schema
