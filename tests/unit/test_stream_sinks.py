"""Conformance of every TSDB sink kind: buffers without I/O, flush never raises, outages are counted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetpulse.streams.points import Point, pipeline_point
from fleetpulse.streams.settings import InfluxV2Sink, NoSink
from fleetpulse.streams.sinks import Sink, build_sink
from fleetpulse.streams.sinks.influxdb2 import InfluxV2PointSink

AT = datetime(2026, 11, 1, tzinfo=UTC)
POINTS = [Point("risk", {"device_id": "pc-1"}, {"risk": 0.5}, AT), pipeline_point("w1", AT, {"events_total": 3})]
UNREACHABLE = InfluxV2Sink(url="http://127.0.0.1:9", timeout_s=0.5, retries=1)


@pytest.mark.parametrize("config", [NoSink(), UNREACHABLE], ids=lambda c: c.kind)
async def test_sink_conformance(config: InfluxV2Sink | NoSink) -> None:
    sink = build_sink(config)
    assert isinstance(sink, Sink)
    assert sink.kind == config.kind
    assert await sink.flush() == 0  # nothing buffered: no request at all
    sink.add(POINTS)
    written = await sink.flush()  # an unreachable TSDB is retried, then counted, never raised
    assert written == (len(POINTS) if config.kind == "none" else 0)
    assert await sink.flush() == 0  # the buffer was handed over, not kept growing
    await sink.close()


async def test_influx_sink_counts_dropped_points_after_retries() -> None:
    sink = InfluxV2PointSink(UNREACHABLE)
    sink.add(POINTS)
    await sink.flush()
    assert sink.dropped == len(POINTS)
    assert sink.failures == 2
    await sink.close()
