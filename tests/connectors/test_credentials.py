"""Credentials never show: every connector, failing to connect with a URL (or DSN) that
carries a password and a token, says where it failed without either, in its exception
(``str``, ``repr``, chained causes) and in any log record, its own or its client's.

Then the masking itself (``rxflow.connectors._redact``), and HTTP answers that quote the
URL (an error status, httpx's own request log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from rxflow.connectors._redact import mask_dsn, mask_url, mask_urls_in
from rxflow.connectors.http import http_post_sink, poll_source, sse_source
from rxflow.connectors.nats import jetstream_source
from rxflow.connectors.postgres import (
    postgres_listen_source,
    postgres_sink,
    postgres_table_source,
)
from rxflow.connectors.rabbitmq import rabbitmq_sink, rabbitmq_source
from rxflow.connectors.redis import redis_stream_source
from rxflow.errors import HttpResponseError
from rxflow.strategies import Retry
from tests.connectors import support
from tests.connectors.conftest import require_service
from tests.connectors.http_server import Exchange, serving
from tests.connectors.support import PASSWORD, TOKEN, assert_no_secret, failure_of, take

pytestmark = pytest.mark.anyio

ONE_TRY = Retry(attempts=1)  # an HTTP connector's failure at once, without retrying


@pytest.fixture
def refused_port() -> int:
    return support.refused_port()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every logger: the connectors' and their clients'
    return caplog


# -- every connector, refused -------------------------------------------------------------
# A plain user:password URL of each broker, source and sink: the contract suite. Here: tokens,
# credentials in the query, key/value DSNs, HTTP.


def connectors(port: int) -> dict[str, Callable[[], AbstractAsyncContextManager[Any]]]:
    redis_token = f"redis://:{TOKEN}@127.0.0.1:{port}/0"
    nats_token = f"nats://{TOKEN}@127.0.0.1:{port}"
    amqp = f"amqp://bob:{PASSWORD}@127.0.0.1:{port}/orders?token={TOKEN}"
    postgres = f"postgresql://bob:{PASSWORD}@127.0.0.1:{port}/test?sslpassword={TOKEN}"
    postgres_kv = f"host=127.0.0.1 port={port} user=bob password={PASSWORD} dbname=test"
    http = f"http://bob:{PASSWORD}@127.0.0.1:{port}/events?token={TOKEN}&page=2"
    return {
        "redis source, token": lambda: redis_stream_source(redis_token, "s", "g", "c"),
        "nats source, token": lambda: jetstream_source(
            nats_token, "S", "s.>", "d", connect_timeout=0.5
        ),
        "rabbitmq source": lambda: rabbitmq_source(amqp, "q"),
        "rabbitmq sink": lambda: rabbitmq_sink(amqp, routing_key="q"),
        "postgres listen": lambda: postgres_listen_source(postgres, "c", connect_timeout=0.5),
        "postgres table": lambda: postgres_table_source(
            postgres, "t", id_column="id", connect_timeout=0.5
        ),
        "postgres sink": lambda: postgres_sink(postgres, "t", ["a"], connect_timeout=0.5),
        "postgres key/value DSN": lambda: postgres_table_source(
            postgres_kv, "t", id_column="id", connect_timeout=0.5
        ),
        "poll": lambda: poll_source(http, interval=1, retry=ONE_TRY),
        "sse": lambda: sse_source(http, retries=0),
        "post": lambda: http_post_sink(http, retry=ONE_TRY),
    }


@pytest.mark.parametrize("name", list(connectors(1)))
async def test_a_refused_connection_names_the_server_without_credentials(
    name: str, refused_port: int, logs: pytest.LogCaptureFixture
) -> None:
    error = await failure_of(connectors(refused_port)[name])
    assert_no_secret(error, logs)
    if name != "postgres key/value DSN":  # asyncpg refuses those before connecting
        assert f"127.0.0.1:{refused_port}" in str(error), error


async def test_a_rabbitmq_login_refused_does_not_quote_the_password(
    logs: pytest.LogCaptureFixture,
) -> None:
    host, port = require_service("rabbitmq")
    url = f"amqp://guest:{PASSWORD}@{host}:{port}/?token={TOKEN}"
    error = await failure_of(lambda: rabbitmq_source(url, "q"))
    assert "ACCESS_REFUSED" in str(error)
    assert_no_secret(error, logs)


# -- HTTP answers -------------------------------------------------------------------------


async def test_an_http_error_answer_and_httpx_log_mask_the_token(
    logs: pytest.LogCaptureFixture,
) -> None:
    async def missing(exchange: Exchange) -> None:
        await exchange.respond(b"no", status=404, content_type="text/plain")

    async with serving({"GET /x": missing, "POST /x": missing}) as server:
        url = server.url("/x") + f"?token={TOKEN}&page=2"
        for opened in (
            lambda: poll_source(url, interval=1, retry=ONE_TRY),
            lambda: sse_source(url, retries=0),
            lambda: http_post_sink(url, retry=ONE_TRY),
        ):
            error = await failure_of(opened)
            assert isinstance(error, HttpResponseError)
            assert error.status_code == 404
            assert error.url.endswith("/x?token=***&page=2")
            assert_no_secret(error, logs)
        # The server did get the token: only what is shown is masked.
        assert [r.query.get("token") for r in server.requests] == [TOKEN] * 3
    assert any(r.name == "httpx" and "token=***" in r.getMessage() for r in logs.records)


async def test_poll_sends_the_query_of_its_url_along_with_params_and_cursor() -> None:
    async def items(exchange: Exchange) -> None:
        since = int(exchange.request.query.get("since", "0"))
        await exchange.respond_json([n for n in (1, 2, 3) if n > since][:2])

    async with serving({"GET /items": items}) as server:
        url = server.url("/items") + f"?token={TOKEN}"
        async with poll_source(
            url, interval=0, params={"page_size": 2}, cursor=lambda n: {"since": n}
        ) as source:
            assert [m.value for m in await take(source, 3)] == [1, 2, 3]
    queries = [request.query for request in server.requests[:2]]
    assert queries == [
        {"token": TOKEN, "page_size": "2"},
        {"token": TOKEN, "page_size": "2", "since": "2"},
    ]


async def test_a_decode_error_names_the_poll_source_without_the_token() -> None:
    async def garbage(exchange: Exchange) -> None:
        await exchange.respond(b"{not json")

    async with serving({"GET /g": garbage}) as server:
        url = server.url("/g").replace("http://", f"http://bob:{PASSWORD}@") + f"?sig={TOKEN}"
        error = await failure_of(lambda: poll_source(url, interval=1))
    assert "poll:http://bob:***@127.0.0.1" in str(error)
    assert "sig=***" in str(error)
    assert PASSWORD not in str(error)
    assert TOKEN not in str(error)


# -- the masking itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://u:p@h/x?token=t&page=2", "https://u:***@h/x?token=***&page=2"),
        ("nats://t0ken@h:4222", "nats://***@h:4222"),
        ("redis://:p@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://guest:guest@h:5672/%2F", "amqp://guest:***@h:5672/%2F"),
        ("mqtts://u:p%40ss@h", "mqtts://u:***@h"),
        (
            "http://h/p?access_token=a&api_key=b&apikey=c&key=d&password=e&secret=f"
            "&signature=g&sig=h&auth=i&X-Amz-Credential=j&client_secret=k&q=keep",
            "http://h/p?access_token=***&api_key=***&apikey=***&key=***&password=***"
            "&secret=***&signature=***&sig=***&auth=***&X-Amz-Credential=***"
            "&client_secret=***&q=keep",
        ),
        ("http://h/p?monkey=1&keyboard=2&auth_mechanism=PLAIN", None),  # nothing secret
        ("http://u:p@h:notaport/x?token=t", "http://u:***@h:notaport/x?token=***"),
        ("http://h/plain", None),
    ],
)
def test_mask_url(url: str, masked: str | None) -> None:
    assert mask_url(url) == (masked or url)


def test_mask_dsn_handles_urls_and_key_value_strings() -> None:
    assert mask_dsn("postgresql://app@db/orders") == "postgresql://app@db/orders"
    assert mask_dsn("postgresql://app:pw@db/orders") == "postgresql://app:***@db/orders"
    assert (
        mask_dsn(r"host=db password='p w\'x' sslpassword=y user=app")
        == "host=db password=*** sslpassword=*** user=app"
    )


def test_mask_urls_in_text() -> None:
    text = "Connecting to: amqp://bob:******@h:1/?token=t failed; see http://h/x?page=2"
    assert mask_urls_in(text) == (
        "Connecting to: amqp://bob:***@h:1/?token=*** failed; see http://h/x?page=2"
    )
