"""The service around the core: settings, logs and errors shared by its layers, then
``store`` (database and storage) and ``queue`` (Celery), then ``api`` (HTTP) and ``cli``."""
