"""``/metrics`` in Prometheus' text format, read from Redis at each scrape.

Counters live in Redis (``workers/counters.py``), written by whichever worker did the work, so the figures
are the installation's whatever the number of worker processes and hosts; gauges (runs in flight, parked
waits, the queue, budgets, job progress, heartbeats) are read off the run store as it stands. Prometheus
sends a viewer key as its bearer token (``authorization: {credentials: KEY}`` in its scrape config).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from workers.counters import Counters
from workers.run_store import FINAL

from .auth import Viewer
from .services import Services
from .state import budgets, wait_prefixes

__all__ = ["router"]

router = APIRouter()
_P = "hcloud_flow_"


class _FromRedis:
    """A prometheus-client collector whose every figure is read from Redis when scraped."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        s = self.services
        counters = Counters(s.redis)
        yield from self._counter(
            counters, "runs", "runs_total", "Runs ended, by workflow and state", ["workflow", "state"]
        )
        yield from self._counter(
            counters, "steps", "steps_total", "Steps ended, by workflow, action and outcome",
            ["workflow", "action", "outcome"],
        )  # fmt: skip
        yield from self._counter(
            counters, "api_requests", "api_requests_total", "Hetzner API answers, by method and HTTP status",
            ["method", "status"],
        )  # fmt: skip
        limited = sum(n for (m, status), n in counters.read("api_requests").items() if status == "429")
        yield CounterMetricFamily(
            _P + "api_rate_limited", "Hetzner API answers 429 rate_limit_exceeded", value=limited
        )
        yield from self._counter(
            counters,
            "api_retries",
            "api_retries_total",
            "API requests sent again after a retryable failure",
            ["method"],
        )
        yield from self._counter(
            counters, "window_firings", "window_firings_total", "Window firings, by window and outcome",
            ["window", "outcome"],
        )  # fmt: skip
        durations = HistogramMetricFamily(
            _P + "action_duration_seconds",
            "How long actions took, from their step's start to success",
            labels=["action"],
        )
        for (action,), h in counters.histogram("action_seconds").items():
            durations.add_metric([action], [(le, float(n)) for le, n in h["buckets"]], h["sum"])
        yield durations

        now = s.clock()
        budget = GaugeMetricFamily(
            _P + "budget_remaining", "API requests left in the project's budget", labels=["project"]
        )
        limit = GaugeMetricFamily(
            _P + "budget_limit", "The project's API requests an hour", labels=["project"]
        )
        for b in budgets(s.redis, now, s.refill):
            budget.add_metric([b["project"]], b["remaining"])
            limit.add_metric([b["project"]], b["limit"])
        yield budget
        yield limit

        active = GaugeMetricFamily(_P + "runs_active", "Runs queued or running now", labels=["state"])
        states: dict[str, int] = {}
        for run in s.runs.list(active=True, limit=5000):
            states[run["state"]] = states.get(run["state"], 0) + 1
        for state, n in sorted(states.items()):
            active.add_metric([state], n)
        yield active
        yield GaugeMetricFamily(
            _P + "waits_parked",
            "Steps parked waiting for their action (actions in flight)",
            value=sum(int(s.redis.zcard(f"{p}:waits")) for p in wait_prefixes(s.redis)),
        )
        live = s.liveness.read()
        yield GaugeMetricFamily(
            _P + "queue_length", "Messages waiting in the hcloud_flow queue", value=live["queue_length"]
        )
        yield GaugeMetricFamily(_P + "workers", "Workers that answered a ping", value=live["workers"])
        for name, key, help_text in (
            (
                "monitor_seconds_since_seen",
                "monitor_seen_seconds",
                "Seconds since a monitor loop last ran (any worker)",
            ),
            (
                "monitor_seconds_since_round",
                "monitor_last_round_seconds",
                "Seconds since the monitor's last poll round",
            ),
            ("beat_seconds_since_tick", "beat_last_tick_seconds", "Seconds since beat last ticked"),
        ):
            value = live[key]
            # Never seen: report a large age, so an alert on "too old" fires rather than going quiet.
            yield GaugeMetricFamily(_P + name, help_text, value=1e9 if value is None else value)

        jobs = GaugeMetricFamily(
            _P + "job_servers",
            "Servers of running fleet jobs, by outcome so far",
            labels=["job_id", "outcome"],
        )
        waiting = GaugeMetricFamily(
            _P + "jobs_awaiting_approval", "Fleet jobs held at an approval gate (job approve or reject)"
        )
        held = 0
        for job in s.jobs.list(50):
            if job["state"] in FINAL:
                continue
            held += job["state"] == "awaiting_approval"
            for outcome, n in sorted(job["counts"].items()):
                jobs.add_metric([job["id"], outcome], n)
        waiting.add_metric([], held)
        yield jobs
        yield waiting

    @staticmethod
    def _counter(
        counters: Counters, family: str, name: str, help_text: str, labels: list[str]
    ) -> Iterator[Metric]:
        metric = CounterMetricFamily(_P + name.removesuffix("_total"), help_text, labels=labels)
        for values, n in sorted(counters.read(family).items()):
            if len(values) == len(labels):
                metric.add_metric(list(values), n)
        yield metric


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, key: Viewer) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FromRedis(request.app.state.services))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
