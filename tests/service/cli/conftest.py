"""The CLI's end-to-end tests start the service the way the workers' tests do."""

from tests.workers.conftest import service_factory

__all__ = ["service_factory"]
