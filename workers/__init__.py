"""The Celery task that moves a job through the core (``workers.tasks``); the Celery app that
includes it is ``service.queue.celery_app``."""
