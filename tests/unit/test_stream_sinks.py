"""Conformance of every TSDB sink kind, and the line-protocol sink's retries, splitting and drop accounting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tracemalloc
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

import httpx
import pytest

from fleetpulse.compat import UTC
from fleetpulse.streams.metrics import PipelineMetrics
from fleetpulse.streams.points import Point, pipeline_point
from fleetpulse.streams.settings import InfluxV1Sink, InfluxV2Sink, NoSink
from fleetpulse.streams.sinks import Sink, build_sink
from fleetpulse.streams.sinks.influxdb2 import InfluxV2PointSink
from fleetpulse.streams.sinks.lineprotocol import TSDB_RETRY, HttpWriter, LineProtocolSink, WriteFailed, WriteRejected

AT = datetime(2026, 11, 1, tzinfo=UTC)
POINTS = [Point("risk", {"device_id": "pc-1"}, {"risk": 0.5}, AT), pipeline_point("w1", AT, {"events_total": 3})]
UNREACHABLE_V2 = InfluxV2Sink(url="http://127.0.0.1:9", timeout_s=0.5, retries=1)
UNREACHABLE_V1 = InfluxV1Sink(url="http://127.0.0.1:9", timeout_s=0.5, retries=1)


async def no_sleep(_: float) -> None:
    return None


def total(sink: Sink) -> int:
    return sink.written + sum(sink.dropped.values())


@pytest.mark.parametrize("config", [NoSink(), UNREACHABLE_V2, UNREACHABLE_V1], ids=lambda c: c.kind)
async def test_sink_conformance(config: InfluxV2Sink | InfluxV1Sink | NoSink) -> None:
    sink = build_sink(config)
    assert isinstance(sink, Sink)
    assert sink.kind == config.kind
    assert await sink.flush() == 0  # nothing buffered: no request at all
    sink.add(POINTS)
    written = await sink.flush()  # an unreachable TSDB is retried, then counted, never raised
    assert written == (len(POINTS) if config.kind == "none" else 0)
    assert total(sink) == len(POINTS)  # every point is either written or dropped with a reason
    assert await sink.flush() == 0  # the buffer was handed over, not kept growing
    await sink.close()


async def test_unreachable_tsdb_is_retried_then_counted_as_unavailable() -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    sink = InfluxV2PointSink(UNREACHABLE_V2, sleep=sleep)
    sink.add(POINTS)
    assert await sink.flush() == 0
    assert sink.dropped == {"unavailable": len(POINTS)}
    assert sink.failures == 2
    assert len(delays) == 1
    assert TSDB_RETRY.base_s / 2 <= delays[0] <= TSDB_RETRY.base_s
    await sink.close()


class FakeWriter:
    """A TSDB whose answer to each body is decided by ``answer``; records every body it was sent."""

    def __init__(self, answer: Callable[[bytes], None]) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []

    async def write(self, body: bytes) -> None:
        self.bodies.append(body)
        self.answer(body)

    async def close(self) -> None:
        return None


def numbered(n: int, bad: Collection[int] = ()) -> list[Point]:
    return [Point("risk", {"device_id": f"{'bad' if i in bad else 'pc'}-{i}"}, {"risk": 0.5}, AT) for i in range(n)]


async def test_ten_thousand_failures_stay_capped_and_then_deliver() -> None:
    failures_left = 10_000

    def answer(_: bytes) -> None:
        nonlocal failures_left
        if failures_left:
            failures_left -= 1
            raise WriteFailed("HTTP 503: overloaded")

    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    sink = LineProtocolSink("fake", FakeWriter(answer), retries=10_000, sleep=sleep)
    sink.add(POINTS)
    assert await sink.flush() == len(POINTS)  # no OverflowError at failure 1,024 or anywhere after
    assert len(delays) == 10_000
    assert all(TSDB_RETRY.cap_s / 2 <= d <= TSDB_RETRY.cap_s for d in delays[100:])
    assert sink.dropped == {}


async def test_rejected_points_are_isolated_and_counted_exactly(caplog: pytest.LogCaptureFixture) -> None:
    bad = {3, 517, 998}

    def answer(body: bytes) -> None:
        if b"device_id=bad" in body:
            raise WriteRejected(400, "partial write: field type conflict dropped=1")

    writer = FakeWriter(answer)
    sink = LineProtocolSink("fake", writer, retries=3, sleep=no_sleep)
    metrics = PipelineMetrics()
    metrics.track_sink(sink)
    sink.add(numbered(1000, bad))
    with caplog.at_level(logging.ERROR):
        assert await sink.flush() == 997
    assert sink.dropped == {"rejected": 3}
    written = {line for body in writer.bodies[1:] for line in body.split(b"\n") if b"device_id=pc" in line}
    assert len(written) == 997  # every honest point reached the TSDB in an accepted request
    assert len(writer.bodies) <= 1 + 2 * len(bad) * 10  # bisection: about 2 requests per bad point per halving
    drops = [r for r in caplog.records if r.getMessage() == "tsdb points dropped"]
    assert [(r.fields["reason"], r.fields["points"], r.fields["status"]) for r in drops] == [("rejected", 1, 400)] * 3  # type: ignore[attr-defined]
    exposition = metrics.exposition().decode()
    assert 'fleetpulse_stream_tsdb_dropped_total{reason="rejected"} 3.0' in exposition
    assert "fleetpulse_stream_tsdb_points_total 997.0" in exposition


async def test_a_tsdb_rejecting_every_point_costs_a_bounded_number_of_requests() -> None:
    def answer(_: bytes) -> None:
        raise WriteRejected(400, "partial write: field type conflict")

    writer = FakeWriter(answer)
    sink = LineProtocolSink("fake", writer, retries=3, sleep=no_sleep)
    sink.add(numbered(5000))
    assert await sink.flush() == 0
    assert len(writer.bodies) == 16 * 13  # not 2 * 5000: the split stops after its budget
    assert sum(sink.dropped.values()) == 5000  # still every point counted, by what is known of it
    assert set(sink.dropped) == {"rejected", "unisolated"}


async def test_refused_requests_are_neither_retried_nor_split() -> None:
    def answer(_: bytes) -> None:
        raise WriteRejected(401, "unauthorized access")

    writer = FakeWriter(answer)
    sink = LineProtocolSink("fake", writer, retries=3, sleep=no_sleep)
    sink.add(numbered(100))
    assert await sink.flush() == 0
    assert len(writer.bodies) == 1
    assert sink.dropped == {"refused": 100}


async def test_points_no_tsdb_can_store_are_skipped_and_counted() -> None:
    writer = FakeWriter(lambda _: None)
    sink = LineProtocolSink("fake", writer, retries=0, sleep=no_sleep)
    sink.add(
        [
            Point("device", {"device_id": "pc-1"}, {}, AT),  # was written as the invalid line 'device,... <ts>'
            Point("device", {"device_id": "pc-1"}, {"cpu_percent": 2**70}, AT),
            Point("device", {"device_id": "pc-1"}, {"cpu_percent": 1.0}, datetime(2026, 11, 1)),  # noqa: DTZ001
            *POINTS,
        ]
    )
    assert await sink.flush() == len(POINTS)
    assert sink.dropped == {"no_fields": 1, "invalid": 2}
    assert writer.bodies[0].count(b"\n") == len(POINTS) - 1


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (204, None),
        (500, WriteFailed),
        (503, WriteFailed),
        (429, WriteFailed),
        (400, WriteRejected),
        (401, WriteRejected),
    ],
)
async def test_http_statuses_are_classified_by_the_retry_policy(status: int, outcome: type[Exception] | None) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, stream=httpx.ByteStream(b"" if status == 204 else b"no"))

    writer = HttpWriter("http://tsdb/api/v2/write", {"bucket": "b"}, {}, 1.0, transport=httpx.MockTransport(handler))
    if outcome is None:
        await writer.write(b"m f=1 1")
    else:
        with pytest.raises(outcome):
            await writer.write(b"m f=1 1")
    assert seen[0].url.params["bucket"] == "b"
    await writer.close()


class HostileTsdb:
    """A TSDB (or a proxy before it) on 127.0.0.1 that reads each write request whole, then answers with
    ``answer(request head, writer)``."""

    def __init__(self, answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        with contextlib.suppress(OSError):
            await self.answer(head, writer)
            writer.close()


async def drip(_: bytes, writer: asyncio.StreamWriter) -> None:
    """Headers, then a byte of the body now and then: every read is answered within the read timeout."""
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000000\r\n\r\n")
    while True:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


async def test_a_tsdb_dripping_its_answer_cannot_hold_the_flush() -> None:
    """timeout_s bounds each read only: the worker stores a batch's state after its flush, so a TSDB answering a
    byte now and then held scoring and alerting of every partition for as long as it went on."""
    async with HostileTsdb(drip) as url:
        sink = InfluxV2PointSink(InfluxV2Sink(url=url, timeout_s=0.3, retries=0))
        sink.add(POINTS)
        assert await asyncio.wait_for(sink.flush(), 30) == 0, "bounded by the answer's deadline, not by this guard"
        await sink.close()
    assert sink.dropped == {"unavailable": len(POINTS)}


async def huge_error(_: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % (256 * 2**20))
    chunk = b"x" * 2**20
    for _ in range(256):
        writer.write(chunk)
        await writer.drain()


async def test_a_huge_error_answer_costs_the_worker_no_memory() -> None:
    """The error body was read whole, then decoded whole, to keep 300 characters of it."""
    async with HostileTsdb(huge_error) as url:
        sink = InfluxV2PointSink(InfluxV2Sink(url=url, timeout_s=5, retries=0))
        sink.add(POINTS)
        tracemalloc.start()
        try:
            await asyncio.wait_for(sink.flush(), 60)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        await sink.close()
    assert sink.dropped == {"unavailable": len(POINTS)}
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB for a 256 MiB error answer"


TOKEN = "s3cr3t-influx-token"


async def echo_headers(head: bytes, writer: asyncio.StreamWriter) -> None:
    """A proxy's error page that echoes the request's Authorization header."""
    authorization = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization"))
    body = b"<html>502 Bad Gateway. Request headers: " + authorization + b"</html>"
    writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


async def test_an_error_page_echoing_the_token_puts_no_token_in_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fleetpulse")
    async with HostileTsdb(echo_headers) as url:
        config = InfluxV2Sink(url=url, token=TOKEN, allow_insecure=True, retries=1)
        sink = InfluxV2PointSink(config, sleep=no_sleep)
        sink.add(POINTS)
        await sink.flush()
        await sink.close()
    logged = [f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in caplog.records]
    assert any("502 Bad Gateway" in line for line in logged), logged
    assert not any(TOKEN in line for line in logged)


async def test_a_tsdb_refusing_each_half_slowly_cannot_hold_the_flush() -> None:
    """Each request within its deadline, yet the halves of a large batch, one after another, added up."""

    class SlowRefusal(FakeWriter):
        async def write(self, body: bytes) -> None:
            self.bodies.append(body)
            await asyncio.sleep(0.05)
            raise WriteRejected(400, "bad point")

    sink = LineProtocolSink("fake", SlowRefusal(lambda _: None), retries=0, sleep=no_sleep, deadline_s=0.5)
    sink.add(numbered(4096))
    assert await asyncio.wait_for(sink.flush(), 30) == 0
    assert sink.dropped["unavailable"] > 0
    assert sum(sink.dropped.values()) == 4096, "every point accounted for"
