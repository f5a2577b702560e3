"""The Celery app names its parts by string (the embedded transport, the task module): each
of those strings resolves to what it names."""

from __future__ import annotations

from kombu.utils.imports import symbol_by_name

from service.queue import celery_app
from service.queue.sqlite_broker import Transport
from service.settings import Settings


def test_the_embedded_broker_url_selects_the_sqlite_transport() -> None:
    settings = Settings(_env_file=None, broker_url="sqla+sqlite:///x.db")  # type: ignore[call-arg]
    options = celery_app.broker_options(settings)
    assert options["broker_url"] == "sqlite:///x.db"
    assert symbol_by_name(options["broker_transport"]) is Transport
    assert celery_app.is_embedded_broker(settings)


def test_the_app_includes_the_job_task_under_its_name() -> None:
    app = celery_app.create_celery(Settings(_env_file=None))  # type: ignore[call-arg]
    assert list(app.conf.include) == ["workers.tasks"]
    app.loader.import_default_modules()
    assert celery_app.TASK_NAME in app.tasks
    assert app.tasks[celery_app.TASK_NAME].__module__ == "workers.tasks"


def test_the_module_level_app_is_what_celery_a_finds() -> None:
    assert symbol_by_name("service.queue.celery_app:app") is celery_app.app
