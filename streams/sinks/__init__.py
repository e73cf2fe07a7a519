"""TSDB sinks: where points go. One small Protocol, one class per ``kind`` of sink config.

A sink buffers points and writes them in one request per :meth:`Sink.flush`. The
processor flushes once per batch, *before* it stores the batch's state, so a crash
can only cause points to be written twice, never lost. Writing twice is harmless:
points are keyed by (measurement, tags, event time) and a TSDB that receives the same
key again overwrites it (InfluxDB) or deduplicates it (VictoriaMetrics with
``-dedup.minScrapeInterval``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from fleetpulse.streams.points import Point
from fleetpulse.streams.settings import InfluxV1Sink, InfluxV2Sink, NoSink


@runtime_checkable
class Sink(Protocol):
    kind: str

    @property
    def written(self) -> int:
        """Points written so far."""

    @property
    def dropped(self) -> Mapping[str, int]:
        """Points given up so far, by reason; ``written`` plus these is every point added."""

    def add(self, points: Iterable[Point]) -> None:
        """Buffer points (no I/O); a point no TSDB can store is dropped here and counted."""

    def add_lines(self, lines: Sequence[bytes]) -> None:
        """Buffer points already written as line protocol, one per item (the native fast path's, escaped as
        :meth:`Point.to_line_protocol` escapes)."""

    async def flush(self) -> int:
        """Write everything buffered; returns points written. Never raises for TSDB outages (counted)."""

    async def close(self) -> None: ...


class NullSink:
    """Counts and discards: for deployments without a TSDB and for benchmarks of the stream alone."""

    kind = "none"

    def __init__(self) -> None:
        self.pending = 0
        self.written = 0
        self.dropped: Counter[str] = Counter()

    def add(self, points: Iterable[Point]) -> None:
        self.pending += sum(1 for _ in points)

    def add_lines(self, lines: Sequence[bytes]) -> None:
        self.pending += len(lines)

    async def flush(self) -> int:
        flushed, self.pending = self.pending, 0
        self.written += flushed
        return flushed

    async def close(self) -> None:
        return None


def build_sink(config: InfluxV2Sink | InfluxV1Sink | NoSink) -> Sink:
    if isinstance(config, InfluxV2Sink):
        from fleetpulse.streams.sinks.influxdb2 import InfluxV2PointSink

        return InfluxV2PointSink(config)
    if isinstance(config, InfluxV1Sink):
        from fleetpulse.streams.sinks.influxdb1 import InfluxV1PointSink

        return InfluxV1PointSink(config)
    return NullSink()
