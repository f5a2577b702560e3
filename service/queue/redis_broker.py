"""kombu's Redis transport, with a released connection failing as a connection error.

When Redis goes away under a worker, celery's consumer releases the broken connection
(``Connection.collect``: the transport forgets its client) and closes it. If the first close
of the consumer's channel failed on the broken socket, the channel is still open when it is
closed again, and its close restores the jobs the worker holds unacknowledged: kombu then
builds a Redis client from the released connection and fails with an ``AttributeError``
(``'NoneType' object has no attribute 'hostname'``; celery/kombu#582 and #970). That error is
neither a connection nor a channel error, so it escapes celery's clean-up, and the worker
logs "Unrecoverable error" and exits while Redis restarts; an acknowledgement sent on the old
channel after the release fails the same way.

Here a client asked of a released connection raises ``redis.exceptions.ConnectionError``:
kombu's and celery's clean-up ignore it, the consumer reconnects, and nothing is lost. The
held jobs stay in Redis's index of unacknowledged messages, which any worker's consumer
sweeps back into the queue after the visibility timeout (a copy whose job already finished
is dropped by ``JobsRepo.claim``).

Selected by ``service.queue.celery_app`` for ``redis://`` and ``rediss://`` broker URLs.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection was released (Redis went away)")
        params: dict[str, Any] = super()._connparams(asynchronous)
        return params

    def messages_held(self, queue: str) -> int:
        """The messages of ``queue`` waiting, and every message taken and not yet
        acknowledged (Redis keeps one index of those for all queues)."""
        with self.conn_or_acquire() as client:
            return int(self._size(queue)) + int(client.hlen(self.unacked_key))


class Transport(kombu_redis.Transport):
    Channel = Channel
