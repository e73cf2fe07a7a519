"""Operational metrics of one stream worker: Prometheus exposition plus the TSDB ``pipeline`` point.

Each worker owns a registry (not the global default) so several apps can live in
one process (tests) without metric name clashes.
"""

from __future__ import annotations

import gc
import time
from collections import Counter as PyCounter
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class SinkCounts(Protocol):
    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> Mapping[str, int]: ...


class SinkCollector(Collector):
    """Exports the sink's own counts, so every point is in exactly one series and none is double-counted.

    ``fleetpulse_stream_tsdb_dropped_total{reason}``: ``no_fields``/``invalid`` (no TSDB can store
    the point), ``rejected`` (the TSDB refused that one point), ``unisolated`` (in a rejected part
    of a batch left when splitting stopped), ``refused`` (the TSDB refused every request:
    credentials, bucket), ``unavailable`` (still failing after the retries).
    """

    def __init__(self, sink: SinkCounts) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "fleetpulse_stream_tsdb_points", "points written to the TSDB", value=self.sink.written
        )
        dropped = CounterMetricFamily("fleetpulse_stream_tsdb_dropped", "points given up, by reason", labels=["reason"])
        for reason, points in sorted(self.sink.dropped.items()):
            dropped.add_metric([reason], points)
        yield dropped


class CacheCounts(Protocol):
    hits: int
    misses: int
    size_bytes: int

    def __len__(self) -> int: ...


class StateCacheCollector(Collector):
    """Exports the decoded-state cache's own counts: lookups served without decoding, and its estimated size."""

    def __init__(self, cache: CacheCounts) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "fleetpulse_stream_state_cache_lookups",
            "stored device states looked up, by result (hit: served decoded; miss: decoded)",
            labels=["result"],
        )
        lookups.add_metric(["hit"], self.cache.hits)
        lookups.add_metric(["miss"], self.cache.misses)
        yield lookups
        yield GaugeMetricFamily(
            "fleetpulse_stream_state_cache_bytes",
            "estimated memory of the decoded-state cache ([streams] state_cache_bytes caps it)",
            value=self.cache.size_bytes,
        )
        yield GaugeMetricFamily(
            "fleetpulse_stream_state_cache_entries", "devices in the decoded-state cache", value=len(self.cache)
        )


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class PipelineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("fleetpulse_stream_events", "records consumed", ["topic"], registry=r)
        self.outcomes = Counter("fleetpulse_stream_outcomes", "records by outcome", ["outcome"], registry=r)
        self.dead_letters = Counter("fleetpulse_stream_dead_letters", "dead letters by kind", ["kind"], registry=r)
        self.scores = Counter("fleetpulse_stream_scores", "risk scores emitted", registry=r)
        self.alerts = Counter("fleetpulse_stream_alerts", "alerts emitted", registry=r)
        self.fast_path = Counter(
            "fleetpulse_stream_fast_path_reports",
            "reports the native fast path folded (also counted as accepted); 0 where the extension is not built",
            registry=r,
        )
        self.lag = Gauge("fleetpulse_stream_consumer_lag", "messages behind the partition end", registry=r)
        self.models = Gauge(
            "fleetpulse_stream_model_info",
            "1 per model the worker serves (role champion or challenger); changes when a new champion is loaded",
            ["component", "role", "model_name", "model_version"],
            registry=r,
        )
        self.scorer_errors = Counter(
            "fleetpulse_stream_scorer_errors",
            "device states a scorer failed to score (that model's scores are missing for them; the other models' "
            "are published)",
            ["component", "role", "model_name", "model_version"],
            registry=r,
        )
        self.model_reloads = Counter(
            "fleetpulse_stream_model_reloads", "registry changes by result (served, refused)", ["result"], registry=r
        )
        self.retention = Counter(
            "fleetpulse_stream_state_retention",
            "device states the retention rule changed ([streams] state_retention): thinned, erased, or dated (an "
            "enrolment stored without its time)",
            ["action"],
            registry=r,
        )
        self.commit_age = Gauge(
            "fleetpulse_stream_commit_age_seconds",
            "longest time an input partition's committed offset has stayed behind the processed records "
            "(0: everything processed is committed); /health answers 503 from [streams] commit_stall_s",
            registry=r,
        )
        self.batch_size = Histogram(
            "fleetpulse_stream_batch_size",
            "records per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.scoring_latency = Histogram(
            "fleetpulse_stream_scoring_seconds", "process_batch time", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "fleetpulse_stream_batch_seconds",
            "batch time incl. emits and state writes",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_latency = Histogram(
            "fleetpulse_stream_event_latency_seconds",
            "report collected_at to score emitted",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pauses = Counter(
            "fleetpulse_stream_gc_pause_seconds", "time in cyclic garbage collection", ["generation"], registry=r
        )
        self._gc_started = 0.0
        self.totals: PyCounter[str] = PyCounter()
        self._scoring_ms: deque[float] = deque(maxlen=2048)
        self._last_batch = 0
        self._window_start = time.monotonic()
        self._window_events = 0
        self.last_batch_at: float | None = None
        self.current_lag = 0

    def track_sink(self, sink: SinkCounts) -> None:
        self.registry.register(SinkCollector(sink))

    def track_state_cache(self, cache: CacheCounts) -> None:
        self.registry.register(StateCacheCollector(cache))

    def watch_gc(self) -> None:
        """Count collector pauses: once per process (callbacks are global), from the worker's entry point."""
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.labels(str(info["generation"])).inc(time.perf_counter() - self._gc_started)

    def set_models(self, served: Sequence[tuple[str, str, str, str]]) -> None:
        """(component, role, name, version) of every served model; the previous set is forgotten."""
        self.models.clear()
        for labels in served:
            self.models.labels(*labels).set(1)

    def set_lag(self, lag: int) -> None:
        self.current_lag = lag
        self.lag.set(lag)

    def record_batch(
        self,
        topic_counts: Mapping[str, int],
        outcomes: Mapping[str, int],
        scores: int,
        alerts: int,
        scoring_s: float,
        batch_s: float,
    ) -> None:
        size = sum(topic_counts.values())
        for topic, n in topic_counts.items():
            self.events.labels(topic).inc(n)
        for outcome, n in outcomes.items():
            if outcome.startswith("dead_letter."):
                self.dead_letters.labels(outcome.removeprefix("dead_letter.")).inc(n)
                self.totals["dead_letters"] += n
            else:
                self.outcomes.labels(outcome).inc(n)
            if outcome in ("dead_letter.duplicate", "dead_letter.stale_replay"):
                self.totals["duplicates"] += n
        self.scores.inc(scores)
        self.alerts.inc(alerts)
        self.batch_size.observe(size)
        self.scoring_latency.observe(scoring_s)
        self.batch_latency.observe(batch_s)
        self.totals["events"] += size
        self._window_events += size
        self._scoring_ms.append(scoring_s * 1000.0)
        self._last_batch = size
        self.last_batch_at = time.monotonic()

    def record_fast_path(self, reports: int) -> None:
        """Reports of a batch the native fast path folded."""
        self.fast_path.inc(reports)

    def record_scorer_errors(self, failed: Mapping[tuple[str, str, str, str], int]) -> None:
        """States each failing scorer of a batch left unscored, by (component, role, name, version)."""
        for labels, states in failed.items():
            self.scorer_errors.labels(*labels).inc(states)

    def snapshot(self) -> dict[str, float | int]:
        """Fields of the ``pipeline`` TSDB point; resets the events/s window."""
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-9)
        rate = self._window_events / elapsed
        self._window_start, self._window_events = now, 0
        ordered = sorted(self._scoring_ms)
        stats: dict[str, float | int] = {
            "events_per_s": rate,
            "events_total": self.totals["events"],
            "dead_letters_total": self.totals["dead_letters"],
            "duplicates_total": self.totals["duplicates"],
            "consumer_lag": self.current_lag,
            "batch_size": self._last_batch,
        }
        if ordered:
            stats["scoring_latency_p50_ms"] = ordered[len(ordered) // 2]
            stats["scoring_latency_p99_ms"] = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return stats

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
