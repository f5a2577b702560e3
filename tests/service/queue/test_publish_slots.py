"""A publish that finds every slot taken (the broker is not answering the ones in flight)
fails after a short wait, not after the broker's timeout: those waiting would otherwise all
fail in the same instant and their answers arrive as one burst. While publishes keep
finishing, those waiting get their turn; so do they behind a process's first publishes,
which connect and load (slow, but not a broker that stopped answering)."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.errors import BrokerUnavailableError
from service.queue import enqueue
from service.queue.celery_app import QUEUE
from service.settings import Settings
from tests.workers.services import free_port


def test_a_publish_without_a_free_slot_fails_before_the_broker_timeout() -> None:
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        broker_url=f"redis://127.0.0.1:{free_port()}/7", broker_timeout_s=30.0)
    breaker = enqueue._breaker(settings)
    breaker.warm = True  # the process has published: the broker answered before
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


def test_publishes_waiting_behind_a_slow_broker_get_their_turn() -> None:
    """Every slot busy but publishes finishing (a healthy broker slowed by a burst, such as the
    embedded SQLite one): those waiting keep waiting, well past ``SLOT_WAIT_S`` in all."""
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        broker_url=f"redis://127.0.0.1:{free_port()}/8", broker_timeout_s=30.0)
    breaker = enqueue._Breaker()
    while breaker.slots.acquire(blocking=False):  # the publishes in flight
        pass
    interval = enqueue.SLOT_WAIT_S / 2.5
    waiters = enqueue.PUBLISHERS

    def finish_one_by_one() -> None:
        for _ in range(waiters):
            time.sleep(interval)
            breaker.give_slot()

    releaser = threading.Thread(target=finish_one_by_one)
    started = time.monotonic()
    releaser.start()
    with ThreadPoolExecutor(waiters) as pool:
        took = list(pool.map(lambda _: breaker.take_slot(settings), range(waiters)))
    releaser.join()
    assert took == [True] * waiters
    assert time.monotonic() - started > 2 * enqueue.SLOT_WAIT_S


def test_publishes_behind_the_first_ones_wait_for_them() -> None:
    """No publish has gone through yet (the first ones connect, declare the queue, load
    Celery's parts): a waiter waits past ``SLOT_WAIT_S`` for a slot, within the broker's
    timeout."""
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        broker_url=f"redis://127.0.0.1:{free_port()}/9", broker_timeout_s=30.0)
    breaker = enqueue._Breaker()
    while breaker.slots.acquire(blocking=False):  # the first publishes, in flight
        pass
    releaser = threading.Timer(3 * enqueue.SLOT_WAIT_S, breaker.give_slot)
    started = time.monotonic()
    releaser.start()
    assert breaker.take_slot(settings)
    assert time.monotonic() - started > 2 * enqueue.SLOT_WAIT_S


def test_the_first_publish_goes_alone() -> None:
    """Concurrent first publishes: one at a time until one has gone through, then
    together."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    breaker = enqueue._Breaker()
    inside = most = 0
    lock = threading.Lock()

    def send() -> str:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        with lock:
            inside -= 1
        return "sent"

    def burst() -> list[str]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda _: breaker.publish(settings, send), range(4)))

    assert burst() == ["sent"] * 4 and breaker.warm
    assert most == 1
    most = 0
    assert burst() == ["sent"] * 4
    assert most > 1



def test_the_broker_check_readies_the_publish_path(tmp_path: Path) -> None:
    """The readiness probe's broker check declares the queue (a first publish's work) and
    marks the path ready: the slot rule then holds from the first publish."""
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        broker_url=f"sqla+sqlite:///{tmp_path}/broker.db")
    breaker = enqueue._breaker(settings)
    assert not breaker.warm
    enqueue.check_broker(settings)
    assert breaker.warm
    with sqlite3.connect(tmp_path / "broker.db") as db:
        queues = [name for (name,) in db.execute("SELECT name FROM kombu_queue")]
    assert queues == [QUEUE]
