"""Prometheus metrics of the API: request latency, jobs by status, job durations, queue depth.

Job figures are read from the job table at scrape time (``service.store.stats``), so they are
the same whichever API replica is scraped and count the work of every worker. Each app has its
own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from service.errors import BrokerUnavailableError
from service.queue.enqueue import queue_depth
from service.settings import Settings
from service.store.jobs import JobStatus
from service.store.stats import StatsRepo

log = logging.getLogger("quantserve.metrics")

JOB_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class JobsCollector:
    """Collects the job table's figures at each scrape."""

    def __init__(self, stats: StatsRepo, settings: Settings) -> None:
        self.stats = stats
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("quantserve_jobs", "Jobs by status.", labels=["status"])
        durations = HistogramMetricFamily(
            "quantserve_job_duration_seconds",
            "Run time of finished jobs (started to finished), by final status.",
            labels=["status"],
        )
        stats = self.stats.jobs(JOB_DURATION_BUCKETS)
        counts = stats.by_status
        for status in JobStatus:
            by_status.add_metric([status.value], float(counts.get(status.value, 0)))
        for row in stats.durations:
            pairs = [(str(b), float(n)) for b, n in zip(JOB_DURATION_BUCKETS, row.at_most,
                                                        strict=True)]
            pairs.append(("+Inf", float(row.count)))
            durations.add_metric([row.status], buckets=pairs, sum_value=row.total_s)
        yield by_status
        yield durations
        queued = GaugeMetricFamily(
            "quantserve_queue_depth", "Jobs queued and not yet claimed by a worker."
        )
        queued.add_metric([], float(counts.get(JobStatus.QUEUED.value, 0)))
        yield queued
        broker_depth = _broker_depth(self.settings)
        if broker_depth is not None:
            gauge = GaugeMetricFamily(
                "quantserve_broker_queue_depth", "Messages waiting in the broker's job queue."
            )
            gauge.add_metric([], float(broker_depth))
            yield gauge


def _broker_depth(settings: Settings) -> int | None:
    try:
        return queue_depth(settings)
    except BrokerUnavailableError as exc:
        log.warning("broker queue depth not available: %s", exc)
        return None


class Metrics:
    def __init__(self, stats: StatsRepo, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "quantserve_http_request_duration_seconds",
            "Latency of HTTP requests, by method, route template and status.",
            labelnames=["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(JobsCollector(stats, settings))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_latency.labels(method=method, route=route, status=str(status)).observe(
            seconds
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's path template (bounded label values), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
