"""The JetStream source reads a delivery's reply subject as nats-py's Msg.metadata does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from rxflow.connectors.nats._reply import Delivery, delivery_of

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**63 - 1)
nanoseconds = st.integers(min_value=0, max_value=4_102_444_800 * 10**9)  # up to 2100


def message(reply: str) -> Msg:
    return Msg(_client=None, subject="orders.new", reply=reply, data=b"{}")


def same_as_nats_py(got: Delivery, msg: Msg) -> bool:
    """nats-py's timestamp is a datetime, to the microsecond; ours keeps what a float can."""
    metadata = msg.metadata
    return (
        got.timestamp == pytest.approx(metadata.timestamp.timestamp(), abs=1e-6)
        and got.stream_sequence == metadata.sequence.stream
        and got.num_delivered == metadata.num_delivered
    )


@given(names, names, counts, counts, counts, nanoseconds, counts)
def test_the_short_form(
    stream: str, consumer: str, delivered: int, sseq: int, cseq: int, ns: int, pending: int
) -> None:
    reply = f"$JS.ACK.{stream}.{consumer}.{delivered}.{sseq}.{cseq}.{ns}.{pending}"
    got = delivery_of(message(reply))
    assert same_as_nats_py(got, message(reply))
    assert (got.stream_sequence, got.num_delivered) == (sseq, delivered)


@given(names, names, names, counts, counts, nanoseconds, st.booleans())
def test_the_form_with_domain_and_account(
    domain: str, stream: str, consumer: str, delivered: int, sseq: int, ns: int, token: bool
) -> None:
    reply = f"$JS.ACK.{domain}.ACCHASH.{stream}.{consumer}.{delivered}.{sseq}.7.{ns}.0"
    reply += ".r4nd0m" if token else ""
    got = delivery_of(message(reply))
    assert same_as_nats_py(got, message(reply))
    assert (got.stream_sequence, got.num_delivered) == (sseq, delivered)


def test_a_server_timestamp_reads_as_seconds_since_the_epoch() -> None:
    reply = "$JS.ACK.orders.workers.2.41.40.1733400000123456789.5"
    assert delivery_of(message(reply)) == Delivery(1733400000.1234567, 41, 2)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.orders.workers.1.2"])
def test_a_reply_that_is_not_a_jetstream_delivery_is_refused_as_nats_py_refuses_it(
    reply: str,
) -> None:
    with pytest.raises(NotJSMessageError):
        delivery_of(message(reply))
