"""A publish that finds every slot taken (the broker is not answering the ones in flight)
fails after a short wait, not after the broker's timeout: those waiting would otherwise all
fail in the same instant and their answers arrive as one burst."""

from __future__ import annotations

import time

import pytest

from service.errors import BrokerUnavailableError
from service.queue import enqueue
from service.settings import Settings
from tests.workers.services import free_port


def test_a_publish_without_a_free_slot_fails_before_the_broker_timeout() -> None:
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        broker_url=f"redis://127.0.0.1:{free_port()}/7", broker_timeout_s=30.0)
    breaker = enqueue._breaker(settings)
    taken = 0
    while breaker.slots.acquire(blocking=False):  # the publishes in flight
        taken += 1
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match="too many publishes are waiting"):
            enqueue.enqueue_job("job-1", settings)
        assert time.monotonic() - started < settings.broker_timeout_s / 3
        assert taken == enqueue.PUBLISHERS
    finally:
        for _ in range(taken):
            breaker.slots.release()
