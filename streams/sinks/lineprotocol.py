"""Line-protocol delivery shared by the InfluxDB 1.x and 2.x/VictoriaMetrics sinks.

Every point is accounted for: ``written`` plus the per-reason ``dropped`` counts equal the
points handed to :meth:`LineProtocolSink.add`. Retries follow the project's one policy
(:mod:`fleetpulse.retry`): outages and 5xx are retried with capped, jittered backoff; a 4xx
is never retried. A batch the TSDB rejects as malformed (400, 413, 422) is split in halves
until the offending points stand alone, so one bad point never costs the others.

The worker stores a batch's state only after its points are flushed, so a TSDB (or a proxy before
it) must not hold a flush for long: each request has a deadline, the whole flush has one, and only
the first :data:`MAX_ERROR_BODY` bytes of an error answer are read, its text scrubbed of the sink's
secrets before it reaches an exception or a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

import httpx

from fleetpulse.redact import scrub
from fleetpulse.retry import RetryPolicy, is_permanent_status
from fleetpulse.streams.points import Point, UnencodablePoint
from fleetpulse.streams.settings import InfluxV1Sink, InfluxV2Sink

log = logging.getLogger(__name__)

TSDB_RETRY = RetryPolicy(base_s=0.25, cap_s=5.0)
MAX_ERROR_BODY = 4096
"""Bytes of an error answer read for its message: a TSDB or proxy answering with more costs nothing more."""
ANSWER_DEADLINE_TIMEOUTS = 3
"""A request's whole answer must arrive within this many ``timeout_s`` (which bounds each read only: a server
sending a byte now and then would otherwise hold the request, and the worker's batch, for good)."""

# Statuses that blame the request's content: splitting the batch isolates the bad points.
# Other 4xx (401, 403, 404) refuse every request alike: splitting would only multiply them.
_SPLITTABLE = frozenset({400, 413, 422})
_SPLIT_REQUESTS_PER_HALVING = 16  # enough to isolate about 8 bad points exactly in any batch


def _count(chunk: list[bytes], pending: list[list[bytes]]) -> int:
    return len(chunk) + sum(map(len, pending))


def flush_deadline(config: InfluxV1Sink | InfluxV2Sink) -> float:
    """The longest a flush may take: every attempt of one request at its deadline, and the retries' waits."""
    attempts = config.retries + 1
    return attempts * ANSWER_DEADLINE_TIMEOUTS * config.timeout_s + config.retries * TSDB_RETRY.cap_s


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
    """POSTs line protocol to one write endpoint; the client is created lazily, in the running loop.

    ``secrets`` (the token, the password) are scrubbed from every error text: a proxy's error page may echo
    the request's Authorization header."""

    def __init__(
        self,
        url: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        timeout_s: float,
        auth: tuple[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.params = dict(params)
        # identity: an error answer is read in its first bytes, which a compressed one would not spell
        self.headers = {"Content-Type": "text/plain; charset=utf-8", "Accept-Encoding": "identity", **headers}
        self.timeout_s = timeout_s
        self.auth = auth
        self.transport = transport
        self.secrets = tuple(secrets)
        self._client: httpx.AsyncClient | None = None

    async def write(self, body: bytes) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, auth=self.auth, transport=self.transport)
        deadline_s = ANSWER_DEADLINE_TIMEOUTS * self.timeout_s
        try:
            status, message = await asyncio.wait_for(self._post(self._client, body), deadline_s)
        except asyncio.TimeoutError:
            raise WriteFailed(f"no complete answer within {deadline_s:g} s") from None
        except httpx.HTTPError as exc:  # timeouts, refused connections, broken responses
            raise WriteFailed(scrub(f"{type(exc).__name__}: {exc}", self.secrets)) from None
        if status is None:
            return
        if is_permanent_status(status):
            raise WriteRejected(status, message)
        raise WriteFailed(f"HTTP {status}: {message}")

    async def _post(self, client: httpx.AsyncClient, body: bytes) -> tuple[int | None, str]:
        """(None, "") on success, else the status and the scrubbed start of the answer."""
        async with client.stream("POST", self.url, params=self.params, headers=self.headers, content=body) as answer:
            if answer.is_success:
                return None, ""
            head = b""
            async for chunk in answer.aiter_raw():
                head += chunk
                if len(head) >= MAX_ERROR_BODY:
                    break
        return answer.status_code, scrub(head[:MAX_ERROR_BODY].decode("utf-8", "replace"), self.secrets)[:300]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class LineProtocolSink:
    """Buffers encoded points and writes them in one request per flush (split only on rejection).

    A TSDB that stays unavailable through ``retries`` retries costs the batch (counted as
    ``unavailable``): an outage must not stop scoring and alerting, which matter more than
    charts, while the retries give backpressure for short outages. So does a flush that takes
    longer than ``deadline_s`` (a TSDB refusing the halves of a batch slowly, one after another).
    """

    def __init__(
        self,
        kind: str,
        writer: Writer,
        retries: int,
        policy: RetryPolicy = TSDB_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        deadline_s: float | None = None,
    ) -> None:
        self.kind = kind
        self.deadline_s = deadline_s
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

    def add_lines(self, lines: Sequence[bytes]) -> None:
        self._lines += lines

    async def flush(self) -> int:
        """Write everything buffered; returns the points written (the rest are counted in ``dropped``)."""
        lines, self._lines = self._lines, []
        written = 0
        pending = [lines] if lines else []
        # Isolating k bad points costs about 2k*log2(n) requests; a TSDB refusing every point
        # (a field type conflict on a whole measurement) must not turn each batch into 2n requests.
        budget = _SPLIT_REQUESTS_PER_HALVING * len(lines).bit_length()
        clock = asyncio.get_running_loop().time
        deadline = None if self.deadline_s is None else clock() + self.deadline_s
        while pending:
            chunk = pending.pop()
            if budget == 0:  # only parts of rejected requests are left
                self._drop("unisolated", _count(chunk, pending), error="split budget spent")
                break
            budget -= 1
            try:
                write = self._write_with_retries(chunk)
                await (write if deadline is None else asyncio.wait_for(write, max(deadline - clock(), 0.0)))
            except asyncio.TimeoutError:
                self._drop("unavailable", _count(chunk, pending), error=f"no flush within {self.deadline_s:g} s")
                break
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
