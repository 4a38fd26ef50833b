"""Prometheus metrics of the API and of the workers, each in a registry of its own.

A registry per app or worker (not the library's global one) keeps two apps
in one process, as in the tests, from counting into each other. Labels are
bounded sets only: route templates (never raw paths), statuses, resolutions,
providers and outcomes; nothing a person wrote, no ids.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from schemas.sync import MutationResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Sync batches take tens to hundreds of milliseconds; logins take longer on purpose (Argon2).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "kindsync_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.sync_batches = Counter(
            "kindsync_sync_batches",
            "Sync batches applied (replays of a stored batch not counted).",
            registry=self.registry,
        )
        self.sync_mutations = Counter(
            "kindsync_sync_mutations", "Sync mutations by result status.", ["status"], registry=self.registry
        )
        self.sync_merges = Counter(
            "kindsync_sync_merges",
            "Conflicting fields by how they were resolved.",
            ["resolution"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "kindsync_outbox_backlog",
            "Events not yet handed to the queue (read at scrape time).",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kindsync_queue_depth", "Jobs waiting in the arq queue (read at scrape time).", registry=self.registry
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).observe(seconds)

    def observe_sync(self, results: Sequence[MutationResult]) -> None:
        self.sync_batches.inc()
        # Counted first (by Counter's counting in C), then added: one labelled update per status,
        # not one per mutation.
        statuses = collections.Counter(result.status for result in results)
        resolutions = collections.Counter(
            conflict.resolution for result in results if result.conflicts for conflict in result.conflicts
        )
        for status, count in statuses.items():
            self.sync_mutations.labels(status).inc(count)
        for resolution, count in resolutions.items():
            self.sync_merges.labels(resolution).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.push_results = Counter(
            "kindsync_push_results",
            "Push deliveries to devices by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.insight_runs = Counter(
            "kindsync_insight_runs",
            "Weekly insight runs by trigger (due evenings, requested).",
            ["trigger"],
            registry=self.registry,
        )
        self.insights_people = Counter(
            "kindsync_insight_people",
            "People whose weekly insight a run computed.",
            ["trigger"],
            registry=self.registry,
        )

    def observe_insight_run(self, trigger: str, people: int) -> None:
        self.insight_runs.labels(trigger).inc()
        self.insights_people.labels(trigger).inc(people)
