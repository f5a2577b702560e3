"""The Celery application, built from the service's settings.

Nothing about the infrastructure is written here: the broker URL and the time limits come
from ``service.settings.Settings``, so the same code runs on the embedded SQLite broker and
on Redis. There is no result backend: a job's state lives in the service's own job table.

Delivery guarantees (what keeps a job alive when its worker dies):

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only when
  the task has finished; a pool process killed mid-job puts the message back.
- ``worker_prefetch_multiplier = 1``: a worker holds only the jobs it is running, so a job
  never waits behind another one in a busy worker's buffer.
- Redis ``visibility_timeout`` (``broker_visibility_timeout_s``, 60 s by default): a
  message not acknowledged by then is handed out again (a dead worker's held messages). A
  job can run longer than that: the copy finds the job running with a fresh heartbeat and
  is dropped (see ``JobsRepo.claim``); a job whose worker died is taken back sooner by the reaper
  (``workers.reaper``), from its heartbeat. The embedded broker redelivers the messages of a
  dead worker at once (``service.queue.sqlite_broker``).
- A producer (the API) waits at most ``broker_timeout_s`` for the broker, to connect or for
  an answer, then gives up (503).

The module-level ``app`` (``celery -A service.queue.celery_app:app``, which ``quantserve worker``
starts) reads the settings from the environment; ``create_celery`` builds one for explicit
settings. Both include ``workers.tasks``, named by string: the queue never imports the workers,
and a process that only publishes never loads the task module.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from service.settings import Settings, get_settings

TASK_NAME = "quantserve.run_job"
QUEUE = "quantserve.jobs"

EMBEDDED_TRANSPORT = "service.queue.sqlite_broker:Transport"
REDIS_TRANSPORT = "service.queue.redis_broker:Transport"
# Seconds a worker's own broker connection waits for an answer (above the 1 s BRPOP).
WORKER_SOCKET_TIMEOUT_S = 10.0


def visibility_timeout_s(settings: Settings) -> int:
    """Seconds after which Redis hands an unacknowledged job to another worker."""
    return settings.broker_visibility_timeout_s


def broker_options(settings: Settings, *, producer: bool = False) -> dict[str, Any]:
    """Celery ``broker_*`` settings for the configured broker URL.

    ``sqla+<SQLAlchemy URL>`` selects the embedded transport (the SQLite file of the default
    settings); ``redis://`` and ``rediss://`` select kombu's Redis transport as
    ``service.queue.redis_broker`` mends it (TLS for ``rediss://``, the server's certificate
    verified); any other URL is passed to kombu as it is.
    A producer (the API) reconnects once, at once, then gives up: a request must not wait
    out a retry schedule; a worker keeps retrying (see ``create_celery``).
    """
    url = settings.broker_url
    retries: dict[str, Any] = {"max_retries": 1, "interval_start": 0} if producer else {}
    if url.startswith(("sqla+", "sqlalchemy+")):
        return {
            "broker_url": url.split("+", 1)[1],
            "broker_transport": EMBEDDED_TRANSPORT,
            # How long SQLite waits for a writer's lock is the transport's own default
            # (``sqlite_broker.BUSY_TIMEOUT_S``), for every caller.
            "broker_transport_options": retries,
        }
    visibility = visibility_timeout_s(settings)
    transport: dict[str, Any] = {}
    if settings.broker_is_redis:
        transport["broker_transport"] = REDIS_TRANSPORT
        if url.startswith("rediss://"):
            # Named by the URL's scheme, kombu would turn TLS on itself (without verifying
            # the certificate); a transport named by class needs it said.
            transport["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return {
        "broker_url": url,
        **transport,
        "broker_transport_options": {
            **retries,
            "visibility_timeout": visibility,
            # Sweep for abandoned messages often enough for the timeout to matter.
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": settings.broker_timeout_s,
            "socket_timeout": (settings.broker_timeout_s if producer
                               else max(WORKER_SOCKET_TIMEOUT_S, settings.broker_timeout_s)),
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
    }


def is_embedded_broker(settings: Settings) -> bool:
    return settings.broker_url.startswith(("sqla+", "sqlalchemy+"))


def create_celery(settings: Settings, *, producer: bool = False) -> Celery:
    """A Celery app for these settings, with the job task registered.

    ``producer=True`` builds the API's publishing app (fail-fast connections).
    """
    app = Celery("quantserve", include=["workers.tasks"])
    embedded = is_embedded_broker(settings)
    app.conf.update(
        broker_options(settings, producer=producer),
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool process whose peak memory passed 3/4 of its limit is replaced after its job.
        worker_max_memory_per_child=(settings.worker_memory_limit_mb * 768 or None),
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_time_limit=settings.job_time_limit_s,
        broker_connection_timeout=settings.broker_timeout_s,
        broker_connection_retry_on_startup=True,
        # A worker keeps trying to reach a broker that went away, for as long as it takes.
        broker_connection_max_retries=None,
        # A job keeps running through a broker outage; its acknowledgement is then lost and
        # the message comes back after the visibility timeout, to find the job final.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The SQLite transport has no fanout exchange, hence no remote control (revoke is
        # then carried by the job row, which the task checks at every progress step).
        worker_enable_remote_control=not embedded,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return app


app = create_celery(get_settings())
