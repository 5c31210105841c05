"""Prometheus metrics of one server (its own registry: no process globals) and the access log.

Exposed on ``GET /metrics``:

* ``modelpod_requests_total{model,version,protocol,status}`` - every answered request;
* ``modelpod_request_seconds{model,protocol}`` - end to end inside the server;
* ``modelpod_queue_seconds``, ``modelpod_batch_wait_seconds`` ``{model,version}`` - where queued
  requests spend their time; ``modelpod_compute_seconds{model,version}`` - model calls, queued
  and inline (an inline call: its input check, the model and its output check);
* ``modelpod_batch_size{model,version}`` - rows per model call;
* ``modelpod_queue_depth{model,version}``, ``modelpod_in_flight{model,version}`` - right now;
* ``modelpod_expired_total{model,version}`` - requests dropped unrun because their deadline passed;
* ``modelpod_rejected_total{model,version}`` - refused because the queue was full;
* ``modelpod_instance_restarts_total{model,version}`` - worker processes restarted after dying;
* ``modelpod_sequences{model,version}`` - live sequences of a stateful model, right now.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from modelpod.serving.http.messages import Request, Response

if TYPE_CHECKING:
    from modelpod.serving.models.repository import Repository

access_log = logging.getLogger("modelpod.access")
_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: the upper bounds (seconds) of the request latency buckets
LATENCY_BUCKETS = _LATENCY
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _LiveState:
    """Collects queue depth / in-flight / scheduler counters from the repository at scrape time."""

    def __init__(self, repository: "Repository") -> None:
        self.repository = repository

    def collect(self) -> Any:
        depth = GaugeMetricFamily("modelpod_queue_depth", "Requests waiting per model version",
                                  labels=["model", "version"])
        flight = GaugeMetricFamily("modelpod_in_flight", "Queued + running requests per model version",
                                   labels=["model", "version"])
        expired = CounterMetricFamily("modelpod_expired", "Requests dropped unrun after their deadline",
                                      labels=["model", "version"])
        rejected = CounterMetricFamily("modelpod_rejected", "Requests refused because the queue was full",
                                       labels=["model", "version"])
        restarts = CounterMetricFamily("modelpod_instance_restarts", "Worker processes restarted",
                                       labels=["model", "version"])
        live = GaugeMetricFamily("modelpod_sequences", "Live sequences of a stateful model version",
                                 labels=["model", "version"])
        for served in self.repository.all():
            labels = [served.name, served.version_label]
            sched = served.scheduler
            depth.add_metric(labels, len(sched.queue) if sched else 0)
            flight.add_metric(labels, served.in_flight)
            expired.add_metric(labels, sched.stats.expired if sched else 0)
            rejected.add_metric(labels, sched.stats.rejected if sched else 0)
            restarts.add_metric(labels, served.restarts)
            if getattr(served, "sequences", None) is not None:
                live.add_metric(labels, served.sequences.live)
        yield from (depth, flight, expired, rejected, restarts, live)


class _RequestStats:
    """Request counts and latency histograms kept in one plain dict: the per-request cost is one
    dict lookup and a bisect; Prometheus reads and sums them only at scrape time."""

    def __init__(self) -> None:
        # (model, version, protocol, status) -> [bucket counts..., sum of seconds, count]
        self.rows: dict[tuple[str, str, str, int], list[float]] = {}

    def collect(self) -> Any:
        requests = CounterMetricFamily("modelpod_requests", "Answered requests",
                                       labels=["model", "version", "protocol", "status"])
        latency_rows: dict[tuple[str, str], list[float]] = {}
        for (model, version, protocol, status), row in self.rows.items():
            requests.add_metric([model, version, protocol, str(status)], row[-1])
            total = latency_rows.setdefault((model, protocol), [0.0] * len(row))
            for i, value in enumerate(row):
                total[i] += value
        latency = HistogramMetricFamily("modelpod_request_seconds", "Time inside the server per request",
                                        labels=["model", "protocol"])
        for labels, row in latency_rows.items():
            latency.add_metric(list(labels), _cumulative(row), row[-2])
        yield requests
        yield latency


def _cumulative(row: list[float]) -> list[tuple[str, float]]:
    """Prometheus' cumulative ``le`` buckets of a row of per-bucket counts over :data:`_LATENCY` (+inf)."""
    cumulative, buckets = 0.0, []
    for bound, count in zip((*_LATENCY, float("inf")), row[: len(_LATENCY) + 1]):
        cumulative += count
        buckets.append((floatToGoString(bound), cumulative))
    return buckets


class _ComputeStats:
    """``modelpod_compute_seconds`` kept as :class:`_RequestStats` keeps request latencies: models run
    inline record every call on the request path, so a record is one bisect and two additions."""

    def __init__(self) -> None:
        # (model, version) -> [count per latency bucket..., sum of seconds]
        self.rows: dict[tuple[str, str], list[float]] = {}

    def recorder(self, model: str, version: str) -> Callable[[float], None]:
        """Record one model call of ``seconds`` for this model version (the same row after a swap)."""
        row = self.rows.setdefault((model, version), [0.0] * (len(_LATENCY) + 2))

        def record(seconds: float, row: list[float] = row, bisect: Any = bisect_left,
                   bounds: tuple[float, ...] = _LATENCY, first: float = _LATENCY[0]) -> None:
            row[0 if seconds <= first else bisect(bounds, seconds)] += 1  # most inline calls: the first
            row[-1] += seconds

        return record

    def collect(self) -> Any:
        compute = HistogramMetricFamily("modelpod_compute_seconds", "Model call time", labels=["model", "version"])
        for labels, row in list(self.rows.items()):
            compute.add_metric(list(labels), _cumulative(row), row[-1])
        yield compute


class Metrics:
    """The server's metrics registry plus cheap per-request recording."""

    def __init__(self, repository: "Repository", access_log_enabled: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.access_log = access_log_enabled
        r = self.registry
        requests = _RequestStats()
        self._rows = requests.rows
        r.register(requests)
        self.queue = Histogram("modelpod_queue_seconds", "Time waiting in the model queue",
                               ["model", "version"], buckets=_LATENCY, registry=r)
        self.batch_wait = Histogram("modelpod_batch_wait_seconds", "Time collecting a batch",
                                    ["model", "version"], buckets=_LATENCY, registry=r)
        self._compute = _ComputeStats()
        r.register(self._compute)
        self.batch_size = Histogram("modelpod_batch_size", "Rows per model call", ["model", "version"],
                                    buckets=_BATCH, registry=r)
        r.register(_LiveState(repository))

    def record(self, protocol: str, model: str, version: str, status: int, seconds: float,
               request: Request | None = None) -> None:
        """Count one answered request (and write its access-log line when enabled)."""
        key = (model, version, protocol, status)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0.0] * (len(_LATENCY) + 3)
        row[bisect_left(_LATENCY, seconds)] += 1
        row[-2] += seconds
        row[-1] += 1
        if self.access_log:
            access_log.info(orjson.dumps({
                "ts": round(time.time(), 6), "client": request.client if request else "",
                "method": request.method if request else "POST", "path": request.path[:1024] if request else "",
                "protocol": protocol, "model": model, "version": version, "status": status,
                "ms": round(seconds * 1000, 3),
            }).decode())

    def request_rows(self) -> dict[tuple[str, str, str, int], list[float]]:
        """A copy of the request counters: (model, version, protocol, status) -> [count per
        latency bucket..., sum of seconds, count] (the rows themselves are live)."""
        return dict(self._rows)

    def observer(self, model: str, version: int) -> Callable[..., None]:
        """A callback for the scheduler: queue / batch wait / compute times and batch size."""
        labels = (model, str(version))
        queue, wait = self.queue.labels(*labels), self.batch_wait.labels(*labels)
        compute, size = self._compute.recorder(*labels), self.batch_size.labels(*labels)

        def observe(queue_s: list[float], batch_wait_s: float, compute_s: float, batch_size: int) -> None:
            for q in queue_s:
                queue.observe(q)
            wait.observe(batch_wait_s)
            compute(compute_s)
            size.observe(batch_size)

        return observe

    def compute_recorder(self, model: str, version: int) -> Callable[[float], None]:
        """A callback for a model run inline: records one call's seconds in ``modelpod_compute_seconds``."""
        return self._compute.recorder(model, str(version))

    def response(self, hidden: Collection[str] = ()) -> Response:
        """The exposition text, less every series labelled with a model in ``hidden``."""
        text = generate_latest(self.registry)
        if hidden:
            marks = tuple(f'model="{_label_text(name)}"'.encode() for name in hidden)
            text = b"\n".join(line for line in text.split(b"\n") if not any(m in line for m in marks))
        return Response(200, text, content_type=CONTENT_TYPE_LATEST)


def _label_text(value: str) -> str:
    """A label value as the Prometheus text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
