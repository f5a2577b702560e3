"""Celery app and tasks: thin wrappers that move a job through the core."""
