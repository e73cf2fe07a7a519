"""Line-protocol delivery shared by the InfluxDB 1.x and 2.x/VictoriaMetrics sinks.

Every point is accounted for: ``written`` plus the per-reason ``dropped`` counts equal the
points handed to :meth:`LineProtocolSink.add`. Retries follow the project's one policy
(:mod:`fleetpulse.retry`): outages and 5xx are retried with capped, jittered backoff; a 4xx
is never retried. A batch the TSDB rejects as malformed (400, 413, 422) is split in halves
until the offending points stand alone, so one bad point never costs the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

import httpx

from fleetpulse.retry import RetryPolicy, is_permanent_status
from fleetpulse.streams.points import Point, UnencodablePoint

log = logging.getLogger(__name__)

TSDB_RETRY = RetryPolicy(base_s=0.25, cap_s=5.0)

# Statuses that blame the request's content: splitting the batch isolates the bad points.
# Other 4xx (401, 403, 404) refuse every request alike: splitting would only multiply them.
_SPLITTABLE = frozenset({400, 413, 422})
_SPLIT_REQUESTS_PER_HALVING = 16  # enough to isolate about 8 bad points exactly in any batch


def _count(chunk: list[bytes], pending: list[list[bytes]]) -> int:
    return len(chunk) + sum(map(len, pending))


class WriteFailed(Exception):
    """The TSDB could not be reached or failed (timeout, connection error, 5xx): worth retrying."""


class WriteRejected(Exception):
    """The TSDB answered with a status retrying cannot change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Writer(Protocol):
    async def write(self, body: bytes) -> None:
        """Send one request; raises :class:`WriteFailed` or :class:`WriteRejected`."""

    async def close(self) -> None: ...


class HttpWriter:
    """POSTs line protocol to one write endpoint; the client is created lazily, in the running loop."""

    def __init__(
        self,
        url: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        timeout_s: float,
        auth: tuple[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.params = dict(params)
        self.headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        self.timeout_s = timeout_s
        self.auth = auth
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    async def write(self, body: bytes) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, auth=self.auth, transport=self.transport)
        try:
            response = await self._client.post(self.url, params=self.params, headers=self.headers, content=body)
        except httpx.HTTPError as exc:  # timeouts, refused connections, broken responses
            raise WriteFailed(f"{type(exc).__name__}: {exc}") from None
        if response.is_success:
            return
        message = response.text[:300]
        if is_permanent_status(response.status_code):
            raise WriteRejected(response.status_code, message)
        raise WriteFailed(f"HTTP {response.status_code}: {message}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class LineProtocolSink:
    """Buffers encoded points and writes them in one request per flush (split only on rejection).

    A TSDB that stays unavailable through ``retries`` retries costs the batch (counted as
    ``unavailable``): an outage must not stop scoring and alerting, which matter more than
    charts, while the retries give backpressure for short outages.
    """

    def __init__(
        self,
        kind: str,
        writer: Writer,
        retries: int,
        policy: RetryPolicy = TSDB_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.kind = kind
        self.writer = writer
        self.retries = retries
        self.policy = policy
        self.sleep = sleep
        self._lines: list[bytes] = []
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.failures = 0
        self.requests = 0

    def add(self, points: Iterable[Point]) -> None:
        for point in points:
            try:
                self._lines.append(point.to_line_protocol().encode())
            except UnencodablePoint as exc:
                self._drop(exc.reason, 1, measurement=point.measurement, error=str(exc)[:300])

    async def flush(self) -> int:
        """Write everything buffered; returns the points written (the rest are counted in ``dropped``)."""
        lines, self._lines = self._lines, []
        written = 0
        pending = [lines] if lines else []
        # Isolating k bad points costs about 2k*log2(n) requests; a TSDB refusing every point
        # (a field type conflict on a whole measurement) must not turn each batch into 2n requests.
        budget = _SPLIT_REQUESTS_PER_HALVING * len(lines).bit_length()
        while pending:
            chunk = pending.pop()
            if budget == 0:  # only parts of rejected requests are left
                self._drop("unisolated", _count(chunk, pending), error="split budget spent")
                break
            budget -= 1
            try:
                await self._write_with_retries(chunk)
            except WriteRejected as exc:
                if exc.status not in _SPLITTABLE:
                    self._drop("refused", _count(chunk, pending), status=exc.status, error=exc.message)
                    pending.clear()
                elif len(chunk) == 1:
                    self._drop("rejected", 1, status=exc.status, error=exc.message)
                else:
                    middle = len(chunk) // 2
                    pending += [chunk[middle:], chunk[:middle]]  # first half next: order kept
                continue
            except WriteFailed as exc:
                self._drop("unavailable", _count(chunk, pending), error=str(exc)[:300])
                pending.clear()
                continue
            written += len(chunk)
            self.written += len(chunk)
        return written

    async def _write_with_retries(self, chunk: list[bytes]) -> None:
        body = b"\n".join(chunk)
        failures = 0
        while True:
            self.requests += 1
            try:
                await self.writer.write(body)
                return
            except WriteFailed as exc:
                failures += 1
                self.failures += 1
                if failures > self.retries:
                    raise
                delay = self.policy.delay(failures)
                log.warning(
                    "tsdb write failed, retrying",
                    extra={"fields": {"attempt": failures, "points": len(chunk), "delay_s": delay, "error": str(exc)}},
                )
                await self.sleep(delay)

    def _drop(self, reason: str, points: int, **context: object) -> None:
        self.dropped[reason] += points
        log.error("tsdb points dropped", extra={"fields": {"reason": reason, "points": points, **context}})

    async def close(self) -> None:
        await self.writer.close()
