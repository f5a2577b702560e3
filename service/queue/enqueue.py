"""What the API calls to hand a job to the workers, cancel it and look at the queue.

The API process publishes through a producer-only Celery app per broker URL (cached: the
connection pool is reused across requests). Publishing fails fast: a broker that does not
answer within ``broker_timeout_s`` (to connect, or to a command: a frozen Redis accepts
connections and never answers) raises ``BrokerUnavailableError`` (the API's 503), never
minutes of retries while the caller waits. And once a publish has failed, the next ones
fail at once for ``broker_timeout_s`` (a circuit breaker): under load, requests must not
pile up in the thread pool each waiting out the broker's timeout. At most
``PUBLISHERS`` publishes wait on the broker at once; one more waits for its turn while
publishes keep finishing, and fails once none has finished for ``SLOT_WAIT_S`` (or after
``broker_timeout_s`` in all). A healthy broker finishes a publish in milliseconds (the
embedded SQLite one in up to ~0.3 s under a burst of 50, its writes taking turns), so no
slot freed for that long means it is not answering; had the waiters waited out the broker's
timeout too, they would all fail in the same instant, and the burst of answers held up every
other request of the process (``/healthz`` p99 170 ms under 50 clients with Redis frozen),
where failing each in turn spreads them out.

That rule holds once the publish path is ready: a process's first publish also connects,
declares the queue and loads Celery's parts (0.12 s alone; eight at once under a burst took
0.4-1.8 s, and the waiters behind them gave up on a healthy broker). The readiness probe
(``check_broker``, at start-up) readies it; until it or a publish has gone through, one
publish goes at a time (the others wait for it, within ``broker_timeout_s``) and a waiter
waits out ``broker_timeout_s`` rather than ``SLOT_WAIT_S``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from celery import Celery
from kombu.exceptions import OperationalError

from service.errors import BrokerUnavailableError
from service.queue.celery_app import QUEUE, TASK_NAME, create_celery, is_embedded_broker
from service.settings import Settings

log = logging.getLogger(__name__)


_apps: dict[tuple[str, float, float, float], Celery] = {}
_apps_lock = threading.Lock()

PUBLISHERS = 8  # publishes in flight at once per process (below kombu's pool of 10)
SLOT_WAIT_S = 0.5  # longest a waiting publish sees no publish in flight finish


class _Breaker:
    """Fails publishes at once for a while after one failed; bounds those in flight."""

    def __init__(self) -> None:
        self.open_until = 0.0
        self.slots = threading.BoundedSemaphore(PUBLISHERS)
        self.finished = 0  # publishes that gave their slot back: a waiter's sign of progress
        self.warm = False  # the path is connected and loaded (a probe or publish went through)
        self.warming = threading.Lock()  # held by the first publish while it is not

    def take_slot(self, settings: Settings) -> bool:
        """Wait for a free slot while publishes in flight keep finishing; False once none
        has finished for ``SLOT_WAIT_S`` (when warm), or after ``broker_timeout_s``."""
        deadline = time.monotonic() + settings.broker_timeout_s
        while True:
            seen = self.finished
            stall = SLOT_WAIT_S if self.warm else settings.broker_timeout_s
            wait = min(stall, deadline - time.monotonic())
            if self.slots.acquire(timeout=max(0.0, wait)):
                return True
            if self.finished == seen or time.monotonic() >= deadline:
                return False

    def publish(self, settings: Settings, send: Callable[[], str]) -> str:
        """``send()``, alone while no publish has gone through."""
        if self.warm:
            return send()
        if not self.warming.acquire(timeout=settings.broker_timeout_s):
            raise _unavailable(settings, "its first publish has not gone through")
        try:
            self.check(settings)  # the first publish may have failed meanwhile
            task_id = send()
            self.warm = True
            return task_id
        finally:
            self.warming.release()

    def give_slot(self) -> None:
        self.finished += 1  # a lost increment under a race only shortens one wait
        self.slots.release()

    def check(self, settings: Settings) -> None:
        if time.monotonic() < self.open_until:
            raise _unavailable(settings, "it did not answer a moment ago")

    def trip(self, settings: Settings) -> None:
        self.open_until = time.monotonic() + settings.broker_timeout_s


_breakers: dict[str, _Breaker] = {}


def _breaker(settings: Settings) -> _Breaker:
    with _apps_lock:
        return _breakers.setdefault(settings.broker_url, _Breaker())


def producer_app(settings: Settings) -> Celery:
    """The cached Celery app that publishes for these settings."""
    key = (settings.broker_url, settings.job_soft_time_limit_s, settings.job_time_limit_s,
           settings.broker_timeout_s)
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = create_celery(settings, producer=True)
        return app


def _unavailable(settings: Settings, exc: BaseException | str) -> BrokerUnavailableError:
    # The URL may carry a password: name only its scheme in the message.
    scheme = settings.broker_url.split("://", 1)[0]
    return BrokerUnavailableError(f"the job broker ({scheme}) is unreachable: {exc}")


def new_task_id() -> str:
    """A Celery task id, chosen before publishing so that the job row can carry it."""
    return str(uuid.uuid4())


def enqueue_job(job_id: str, settings: Settings, *, task_id: str | None = None) -> str:
    """Publish the job (its id only) to the workers' queue; returns the Celery task id.

    ``task_id`` is the id the task gets (one is made up when ``None``): the submission stores
    it in the job row with the insert, so publishing needs no second write.
    Call it after the job row is committed: a worker may pick the job up at once.
    Raises ``BrokerUnavailableError`` when the broker cannot take the message.
    """
    app = producer_app(settings)
    breaker = _breaker(settings)
    breaker.check(settings)
    if not breaker.take_slot(settings):
        raise _unavailable(settings, "too many publishes are waiting for it")

    def send() -> str:
        return str(app.send_task(TASK_NAME, args=[job_id], queue=QUEUE, retry=False,
                                 task_id=task_id or new_task_id()).id)

    try:
        breaker.check(settings)
        return breaker.publish(settings, send)
    except broker_errors(app) as exc:
        breaker.trip(settings)
        raise _unavailable(settings, exc) from exc
    finally:
        breaker.give_slot()


def revoke(task_id: str, settings: Settings) -> bool:
    """Ask the workers to drop the task; True when the request was broadcast.

    Best effort by design: the cancelled job row is what stops the job (the task checks it
    before starting and at every progress step), so a broker without remote control (the
    embedded one) or a broker that is down only loses the early stop of a queued message.
    """
    if is_embedded_broker(settings):
        return False
    app = producer_app(settings)
    try:
        app.control.revoke(task_id)
    except broker_errors(app) as exc:
        log.warning("revoke of task %s not broadcast: %s", task_id, exc)
        return False
    return True


_errors: dict[int, tuple[type[BaseException], ...]] = {}


def broker_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """What the broker's client raises when the broker cannot take a message (kombu's
    errors, the socket's, and the transport's own, such as redis-py's timeouts)."""
    errors = _errors.get(id(app))
    if errors is None:
        conn = app.connection_for_write()
        errors = _errors[id(app)] = (OperationalError, OSError, *conn.connection_errors,
                                     *conn.channel_errors)
    return errors


def check_broker(settings: Settings) -> None:
    """Open a connection to the broker; raises ``BrokerUnavailableError`` if it fails.

    The first check that succeeds also readies the publish path (the readiness probe runs
    it at start-up): a process's first publish then takes milliseconds, not 0.1-1.8 s."""
    app = producer_app(settings)
    breaker = _breaker(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=settings.broker_timeout_s)
            if settings.broker_is_redis:  # a frozen Redis connects: ask it something
                conn.default_channel.client.ping()
        if not breaker.warm:
            _ready_to_publish(app)
            breaker.warm = True
    except broker_errors(app) as exc:
        raise _unavailable(settings, exc) from exc


def _ready_to_publish(app: Celery) -> None:
    """What a first ``send_task`` does besides sending: load the (disabled) result backend,
    open a pooled producer's connection and declare the queue on it."""
    app.backend  # noqa: B018 (a property that loads the backend)
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(app.amqp.queues[QUEUE])


def queue_depth(settings: Settings) -> int:
    """Jobs waiting in the queue (not yet handed to a worker)."""
    app = producer_app(settings)
    try:
        with app.connection_for_read() as conn:
            ok = conn.default_channel.queue_declare(QUEUE, passive=False, durable=True)
            return int(ok.message_count)
    except broker_errors(app) as exc:
        raise _unavailable(settings, exc) from exc


def messages_held(settings: Settings) -> int:
    """Job messages the broker holds: waiting, or taken by a worker and not yet acknowledged
    (a running job's, until it ends)."""
    app = producer_app(settings)
    try:
        with app.connection_for_read() as conn:
            return int(conn.default_channel.messages_held(QUEUE))
    except broker_errors(app) as exc:
        raise _unavailable(settings, exc) from exc
