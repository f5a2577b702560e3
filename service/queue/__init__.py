"""The task queue: the Celery app built from the settings, publishing and revoking jobs, and
the embedded SQLite transport. The job task itself lives in ``workers.tasks``."""
