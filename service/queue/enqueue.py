"""What the API calls to hand a job to the workers, cancel it and look at the queue.

The API process publishes through a producer-only Celery app per broker URL (cached: the
connection pool is reused across requests). Publishing fails fast: a broker that does not
answer within ``CONNECT_TIMEOUT_S`` raises ``BrokerUnavailableError`` (the API's 503),
never minutes of retries while the caller waits.
"""

from __future__ import annotations

import logging
import threading
import uuid

from celery import Celery
from kombu.exceptions import OperationalError

from service.errors import BrokerUnavailableError
from service.queue.celery_app import QUEUE, TASK_NAME, create_celery, is_embedded_broker
from service.settings import Settings

log = logging.getLogger(__name__)


_apps: dict[tuple[str, float, float], Celery] = {}
_apps_lock = threading.Lock()


def producer_app(settings: Settings) -> Celery:
    """The cached Celery app that publishes for these settings."""
    key = (settings.broker_url, settings.job_soft_time_limit_s, settings.job_time_limit_s)
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = create_celery(settings, producer=True)
        return app


def _unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailableError:
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
    try:
        result = app.send_task(TASK_NAME, args=[job_id], queue=QUEUE, retry=False,
                               task_id=task_id or new_task_id())
    except (OperationalError, OSError) as exc:
        raise _unavailable(settings, exc) from exc
    return str(result.id)


def revoke(task_id: str, settings: Settings) -> bool:
    """Ask the workers to drop the task; True when the request was broadcast.

    Best effort by design: the cancelled job row is what stops the job (the task checks it
    before starting and at every progress step), so a broker without remote control (the
    embedded one) or a broker that is down only loses the early stop of a queued message.
    """
    if is_embedded_broker(settings):
        return False
    try:
        producer_app(settings).control.revoke(task_id)
    except (OperationalError, OSError) as exc:
        log.warning("revoke of task %s not broadcast: %s", task_id, exc)
        return False
    return True


def check_broker(settings: Settings) -> None:
    """Open a connection to the broker; raises ``BrokerUnavailableError`` if it fails."""
    try:
        with producer_app(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=2.0)
    except (OperationalError, OSError) as exc:
        raise _unavailable(settings, exc) from exc


def queue_depth(settings: Settings) -> int:
    """Jobs waiting in the queue (not yet handed to a worker)."""
    try:
        with producer_app(settings).connection_for_read() as conn:
            ok = conn.default_channel.queue_declare(QUEUE, passive=False, durable=True)
            return int(ok.message_count)
    except (OperationalError, OSError) as exc:
        raise _unavailable(settings, exc) from exc
