"""What the dashboard shows over time, kept in the server: per-second samples, events, recent errors.

Nothing here runs per request on the success path. A sampler thread wakes once a second, reads
the counters the server keeps anyway (request counts and latency buckets of
:class:`~modelpod.serving.metrics.Metrics`, the batch-size histogram, each version's queue and
in-flight count) and turns their change since the last second into one sample per model: rps,
errors by status, p50/p99 latency (from the histogram buckets, interpolated as Prometheus'
``histogram_quantile`` does), queue depth, in flight, mean batch size. It also compares what the
repository holds with what it held a second earlier and writes events: loaded, replaced (a
zero-drop swap), draining, unloaded, failed (warm-up or load, with the reason), worker restarted.
Error answers are noted by the app as they happen (the error path only). Ring buffers bound all
of it: ``HISTORY_S`` samples per model, ``MAX_EVENTS`` events, ``MAX_ERRORS`` errors per model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from modelpod.serving.metrics import LATENCY_BUCKETS

#: seconds of per-second samples kept per model
HISTORY_S = 300
MAX_EVENTS = 500
MAX_ERRORS = 50
MAX_MESSAGE = 500


@dataclass
class _Previous:
    """Cumulative counters of one model at the last sample."""

    count: float = 0.0
    buckets: list[float] = field(default_factory=list)
    statuses: dict[int, float] = field(default_factory=dict)
    batch_sum: float = 0.0
    batch_count: float = 0.0


def quantile(q: float, buckets: list[float]) -> float | None:
    """The ``q`` quantile in ms of per-bucket counts over :data:`LATENCY_BUCKETS` (+inf last),
    linearly interpolated inside its bucket; None without observations."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank, seen, lower = q * total, 0.0, 0.0
    for upper, count in zip((*LATENCY_BUCKETS, float("inf")), buckets):
        if count and seen + count >= rank:
            if upper == float("inf"):
                return lower * 1000
            return (lower + (upper - lower) * (rank - seen) / count) * 1000
        seen += count
        lower = upper
    return lower * 1000


class Monitor:
    """The per-second sampler and the event and error logs of one server."""

    def __init__(self, repository: Any, metrics: Any, manager: Any = None, interval_s: float = 1.0) -> None:
        self.repository = repository
        self.metrics = metrics
        self.manager = manager
        self.interval_s = interval_s
        self.started = time.time()
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.errors: dict[str, deque[dict[str, Any]]] = {}
        self._previous: dict[str, _Previous] = {}
        self._versions: dict[tuple[str, int], tuple[int, str, int]] = {}  # -> (id, state, restarts)
        self._failures: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Take the first sample now and start the sampler thread."""
        self.sample()
        self._thread = threading.Thread(target=self._run, name="modelpod-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a dashboard must never take the server down
                continue

    # -- what the app tells it ---------------------------------------------------------------
    def error(self, model: str, status: int, message: str) -> None:
        """An error answer for a served model (called on the error path only)."""
        if model not in self.repository.models:
            return
        log = self.errors.get(model)
        if log is None:
            log = self.errors[model] = deque(maxlen=MAX_ERRORS)
        log.append({"t": time.time(), "status": status, "message": message[:MAX_MESSAGE]})

    def event(self, kind: str, model: str, version: str, message: str = "") -> None:
        self.events.append({"t": time.time(), "kind": kind, "model": model, "version": version,
                            "message": message[:MAX_MESSAGE]})

    # -- sampling ----------------------------------------------------------------------------
    def sample(self) -> None:
        """One sample per model, and the events since the last one."""
        with self._lock:
            now = time.time()
            self._sample_versions()
            self._sample_failures()
            for name, sample in self._requests().items():
                sample["t"] = now
                ring = self.history.get(name)
                if ring is None:
                    ring = self.history[name] = deque(maxlen=int(HISTORY_S / self.interval_s))
                ring.append(sample)
            for name in [n for n in self.history if n not in self.repository.models]:
                del self.history[name]
                self._previous.pop(name, None)

    def _requests(self) -> dict[str, dict[str, Any]]:
        """Per model: what its counters did since the last sample."""
        rows = self.metrics.request_rows() if self.metrics is not None else {}
        totals: dict[str, _Previous] = {}
        width = len(LATENCY_BUCKETS) + 1
        for (model, _version, _protocol, status), row in rows.items():
            if not model:
                continue
            total = totals.get(model)
            if total is None:
                total = totals[model] = _Previous(buckets=[0.0] * width)
            total.count += row[-1]
            for i in range(width):
                total.buckets[i] += row[i]
            total.statuses[status] = total.statuses.get(status, 0.0) + row[-1]
        for model, (batch_sum, batch_count) in self._batches().items():
            total = totals.setdefault(model, _Previous(buckets=[0.0] * width))
            total.batch_sum, total.batch_count = batch_sum, batch_count
        samples = {}
        for name, entry in dict(self.repository.models).items():
            total = totals.get(name, _Previous(buckets=[0.0] * width))
            before = self._previous.get(name)
            self._previous[name] = total
            if before is None:  # the first sample of a model is the baseline
                before = _Previous(count=total.count, buckets=list(total.buckets), statuses=dict(total.statuses),
                                   batch_sum=total.batch_sum, batch_count=total.batch_count)
            delta = [now - then for now, then in zip(total.buckets, before.buckets)]
            errors = {str(s): c - before.statuses.get(s, 0.0) for s, c in total.statuses.items()
                      if s >= 400 and c - before.statuses.get(s, 0.0) > 0}
            calls = total.batch_count - before.batch_count
            versions = list(entry.versions.values())
            requests = total.count - before.count
            if calls <= 0 and requests > 0 and any(v.inline for v in versions):
                batch = 1.0  # inline models run each request as its own call
            else:
                batch = (total.batch_sum - before.batch_sum) / calls if calls > 0 else None
            samples[name] = {
                "rps": requests / self.interval_s,
                "p50_ms": quantile(0.5, delta), "p99_ms": quantile(0.99, delta),
                "errors": errors,
                "queue": sum(len(v.scheduler.queue) if v.scheduler is not None else 0 for v in versions),
                "in_flight": sum(v.in_flight for v in versions),
                "batch": batch,
            }
        return samples

    def _batches(self) -> dict[str, tuple[float, float]]:
        """Per model: (rows, model calls) from the batch-size histogram."""
        found: dict[str, list[float]] = {}
        if self.metrics is None:
            return {}
        for family in self.metrics.batch_size.collect():
            for sample in family.samples:
                model = sample.labels.get("model", "")
                if sample.name.endswith("_sum"):
                    found.setdefault(model, [0.0, 0.0])[0] += sample.value
                elif sample.name.endswith("_count"):
                    found.setdefault(model, [0.0, 0.0])[1] += sample.value
        return {model: (v[0], v[1]) for model, v in found.items()}

    def _sample_versions(self) -> None:
        seen: dict[tuple[str, int], tuple[int, str, int]] = {}
        for entry in list(dict(self.repository.models).values()):
            for served in list(entry.versions.values()):
                key = (served.name, served.version)
                now = (id(served), served.state, served.restarts)
                seen[key] = now
                before = self._versions.get(key)
                label = served.version_label
                if before is None:
                    self._state_event(served, "loaded" if served.state == "READY" else None)
                elif before[0] != now[0]:
                    self.event("replaced", served.name, label, "a new package swapped in (zero-drop)")
                    self._state_event(served, None)
                elif before[1] != now[1]:
                    self._state_event(served, None)
                if before is not None and before[0] == now[0] and now[2] > before[2]:
                    self.event("worker restarted", served.name, label,
                               f"{now[2] - before[2]} worker process(es) restarted ({now[2]} in all)")
        for key in self._versions.keys() - seen.keys():
            self.event("unloaded", key[0], str(key[1]))
        self._versions = seen

    def _state_event(self, served: Any, default: str | None) -> None:
        state = served.state
        if state == "FAILED":
            self.event("failed", served.name, served.version_label, served.reason)
        elif state == "UNLOADING":
            self.event("draining", served.name, served.version_label)
        elif state == "READY":
            self.event(default or "ready", served.name, served.version_label, served.mode)
        elif state == "LOADING":
            self.event("loading", served.name, served.version_label)

    def _sample_failures(self) -> None:
        failures = dict(getattr(self.manager, "failures", {}) or {})
        for key, reason in failures.items():
            if self._failures.get(key) != reason:
                self.event("load failed", key[0], str(key[1]), reason)
        self._failures = failures

    # -- what the dashboard reads ------------------------------------------------------------
    def series(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.history.get(model, ()))

    def recent_errors(self, model: str) -> list[dict[str, Any]]:
        return list(self.errors.get(model, ()))

    def recent_events(self, visible: Any = None) -> list[dict[str, Any]]:
        """Events, newest last; ``visible(model)`` filters the models the caller may see."""
        events = list(self.events)
        return [e for e in events if visible is None or visible(e["model"])]
