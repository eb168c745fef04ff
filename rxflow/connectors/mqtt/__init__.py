"""MQTT: a topic subscription as a source with manual acks, a topic as a confirmed sink.

The client is aiomqtt on paho-mqtt (asyncio only); under trio it runs on an
:class:`AsyncioHost`. The connection speaks MQTT 5.

Source: subscribes at QoS 1 (default) and acks each message by hand (``PUBACK``, sent when
the message is settled rather than on arrival). At most ``receive_maximum`` messages are held
unacked: the client announces that *Receive Maximum* to the broker, and keeps it itself too
(mosquitto 2.0 sends a new window per ack, eclipse-mosquitto/mosquitto#2301), by not reading
its socket while that many are unacked, so that TCP flow control holds the rest at the
broker. A slow consumer means fewer deliveries, and the local buffer never holds more. While
the client does not read, a dropped connection is noticed at the next ack; and a window held
unacked for about two ``keepalive`` periods ends the connection (paho misses the broker's
ping answers), after which the messages come again. With a ``client_id`` the session
is persistent: messages that were not acked when the connection closed or dropped, and those
published meanwhile, are delivered when a source with the same ``client_id`` connects again
(within ``session_expiry`` seconds).

What a closing source had received and not handed out (its read-ahead, at most
``receive_maximum`` with what is in hand) is not acked either: MQTT has no way to hand a
message back, so with a ``client_id`` the session keeps it and delivers it again on the
next connection, and without one it ends with the session (QoS 1 without a persistent
session is at-least-once only while the connection lasts). A session keeps only what the
broker allows: Mosquitto drops a client's QoS 1 and 2 messages past ``max_queued_messages``
(1000 by default) beyond its in-flight window, while it is away or slow, and only logs it;
raise that limit for a session that may fall so far behind.

MQTT messages have no id that survives a redelivery (a packet id is reused), so
``message.identity`` is None unless the source's ``identity=`` function reads one the
publisher set (a payload field, an MQTT 5 user property). Without it, a checkpointed
:class:`rxflow.Flow` cannot recognise a message it has counted already when the session
delivers it again after a crash, and counts it twice.

Both take the broker as a URL: ``mqtt://[user:password@]host[:port]`` (port 1883 by
default) or ``mqtts://`` for TLS (port 8883, the system's trusted CAs unless you pass
``tls_context=``). The older ``mqtt_source(host, port, topic)`` still works in this
release, with a ``DeprecationWarning``.

Sink: publishes at QoS 1; ``send`` and ``send_batch`` return once the broker acknowledged
every message (``PUBACK``).

Example (needs an MQTT broker)::

    async with mqtt_source("mqtt://127.0.0.1:1883", "sensors/#", client_id="ingest") as readings:
        async for message in readings:
            print(message.key, message.value)  # topic, payload
            await message.ack()
"""

from __future__ import annotations

from rxflow.connectors.mqtt.sink import MQTTSink, mqtt_sink
from rxflow.connectors.mqtt.source import MQTTSettlement, MQTTSource, mqtt_source

__all__ = ["MQTTSettlement", "MQTTSink", "MQTTSource", "mqtt_sink", "mqtt_source"]
