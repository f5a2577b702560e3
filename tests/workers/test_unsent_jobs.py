"""The reaper publishes again the queued jobs whose message the broker lost (real brokers: the
embedded SQLite one and a private Redis; a real SQLite job store).

A job row committed as queued whose publish never happened (its API process died between the
two) or whose message the broker lost (a Redis restarted without its data) would stay queued
for ever; once the broker holds no job message at all, the reaper's pass publishes it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from kombu import Consumer, Message

from service.queue.celery_app import QUEUE, create_celery
from service.queue.enqueue import enqueue_job, messages_held, new_task_id
from service.settings import Settings
from service.store.db import Database
from service.store.jobs import JobStatus
from service.store.models import DEFAULT_TEAM_ID, Job, Model, utcnow
from tests.workers.services import RedisServer
from workers.reaper import UNSENT_AFTER_S, Reaper


@pytest.fixture(params=["embedded", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    server = None
    if request.param == "redis":
        server = RedisServer(tmp_path / "redis")
        server.start()
        broker = server.url
    else:
        broker = f"sqla+sqlite:///{tmp_path}/broker.db"
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/jobs.db",  # type: ignore[call-arg]
                        broker_url=broker)
    Database.from_settings(settings).migrate()
    try:
        yield settings
    finally:
        if server is not None:
            server.stop()


def queued_job(settings: Settings, age_s: float) -> tuple[str, str]:
    """A queued job row submitted ``age_s`` ago, with no message published: (id, task id)."""
    task_id = new_task_id()
    with Database.from_settings(settings).session() as session:
        model = Model(team_id=DEFAULT_TEAM_ID, sha256=uuid.uuid4().hex * 2, size_bytes=10,
                      format="onnx", n_tensors=1, n_params=4, tensors=[],
                      storage_key="blobs/x.onnx")
        session.add(model)
        session.flush()
        job = Job(team_id=DEFAULT_TEAM_ID, kind="quantize", status=JobStatus.QUEUED.value,
                  progress=0.0, attempts=0, model_id=model.id, spec={"bits": 4},
                  task_id=task_id, created_at=utcnow() - timedelta(seconds=age_s))
        session.add(job)
        session.commit()
        return job.id, task_id


def take_all(settings: Settings) -> list[tuple[str, list[str]]]:
    """Every job message in the broker, taken and acknowledged: (task id, args)."""
    app = create_celery(settings)
    taken: list[Message] = []
    with app.connection_for_read() as conn:
        queue = app.amqp.queues[QUEUE]
        with Consumer(conn, [queue], on_message=taken.append, accept=["json"]):
            while True:
                try:
                    conn.drain_events(timeout=1.5)
                except TimeoutError:
                    break
        for message in taken:
            message.ack()
    return [(m.headers["id"], m.decode()[0]) for m in taken]


def test_a_queued_job_with_no_message_is_published_again(settings: Settings) -> None:
    lost, lost_task = queued_job(settings, age_s=UNSENT_AFTER_S + 30)
    young, _ = queued_job(settings, age_s=1)  # its publish may still be under way
    assert messages_held(settings) == 0

    report = Reaper(settings).run_once()
    assert report.held_lease and report.republished == [lost]
    assert messages_held(settings) == 1
    assert Reaper(settings).run_once().republished == []  # its message is there now
    assert take_all(settings) == [(lost_task, [lost])]
    assert young not in report.republished


def test_nothing_is_published_while_the_broker_holds_job_messages(settings: Settings) -> None:
    waiting, waiting_task = queued_job(settings, age_s=UNSENT_AFTER_S + 30)
    enqueue_job(waiting, settings, task_id=waiting_task)
    lost, lost_task = queued_job(settings, age_s=UNSENT_AFTER_S + 30)

    assert Reaper(settings).run_once().republished == []  # it may be behind that message
    assert take_all(settings) == [(waiting_task, [waiting])]
    # The queue drained (the job it held ran): now the lost one is published again.
    with Database.from_settings(settings).session() as session:
        session.get(Job, waiting).status = JobStatus.SUCCEEDED.value  # type: ignore[union-attr]
        session.commit()
    assert Reaper(settings).run_once().republished == [lost]
    assert take_all(settings) == [(lost_task, [lost])]
