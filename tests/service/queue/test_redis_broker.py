"""The Redis transport when Redis went away under a consumer (real Redis).

Celery's consumer, on a lost connection, releases it (``Connection.collect``: the transport
forgets its client) and closes it. A channel whose first close failed on the broken socket is
still open then, holding the worker's unacknowledged jobs; closing it again, or acknowledging a
job on it, must fail as a connection error (which celery's clean-up ignores) and leave the jobs
in Redis for the visibility sweep, never raise what kills the worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue
from kombu.common import ignore_errors
from kombu.utils.imports import symbol_by_name

from service.queue import celery_app
from service.queue.redis_broker import Channel, Transport
from service.settings import Settings


@pytest.fixture
def queue() -> Queue:
    name = f"test-redis-broker-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


@pytest.fixture
def held(redis_url: str, queue: Queue) -> Iterator[tuple[Connection, Message]]:
    """A connection whose consumer took one message without acknowledging it."""
    conn = Connection(redis_url, transport=Transport,
                      transport_options={"visibility_timeout": 1})
    Producer(conn.channel()).publish({"job": 1}, exchange=queue.exchange,
                                     routing_key=queue.routing_key, declare=[queue])
    taken: list[Message] = []
    consumer = Consumer(conn.default_channel, [queue],
                        on_message=taken.append)
    consumer.consume()
    conn.drain_events(timeout=5)
    assert len(taken) == 1
    try:
        yield conn, taken[0]
    finally:
        ignore_errors(conn, conn.default_channel.close)  # not restored at the process's exit
        redis.Redis.from_url(redis_url).delete(queue.name)


def _release(conn: Connection) -> None:
    """The transport forgets its client, as ``Connection.collect`` leaves it."""
    conn.transport.client = None


def test_closing_a_channel_of_a_released_connection_is_a_connection_error(
    held: tuple[Connection, Message], redis_url: str, queue: Queue,
) -> None:
    conn, message = held
    channel = conn.default_channel
    assert isinstance(channel, Channel)
    _release(conn)
    with pytest.raises(redis.exceptions.ConnectionError, match="released"):
        channel.close()
    ignore_errors(conn, channel.close)  # celery's clean-up: silent

    # The job is still held in Redis, and the visibility sweep hands it out again.
    tag = message.delivery_tag
    assert redis.Redis.from_url(redis_url).hexists(channel.unacked_key, tag)
    time.sleep(1.2)
    with Connection(redis_url, transport=Transport,
                    transport_options={"visibility_timeout": 1}) as again:
        again.default_channel.qos.restore_visible()
        taken: list[Message] = []
        Consumer(again.default_channel, [queue], on_message=taken.append).consume()
        again.drain_events(timeout=5)
        assert [m.payload for m in taken] == [{"job": 1}]
        taken[0].ack()


def test_acknowledging_on_a_released_connection_is_a_connection_error(
    held: tuple[Connection, Message],
) -> None:
    conn, message = held
    channel = conn.default_channel
    assert isinstance(channel, Channel)
    channel._disconnect_pools()  # the channel's close got this far
    _release(conn)
    with pytest.raises(conn.connection_errors):
        message.ack()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1"])
def test_redis_urls_select_the_mended_transport(url: str) -> None:
    settings = Settings(_env_file=None, broker_url=url)  # type: ignore[call-arg]
    options = celery_app.broker_options(settings)
    assert symbol_by_name(options["broker_transport"]) is Transport
    app = celery_app.create_celery(settings)
    with app.connection_for_write() as conn:
        info = conn.info()
        assert type(conn.transport) is Transport
        assert (info["hostname"], info["port"]) == (url.split("//")[1].split(":")[0],
                                                    int(url.rsplit(":", 1)[1].split("/")[0]))
        assert bool(conn.ssl) == url.startswith("rediss://")
