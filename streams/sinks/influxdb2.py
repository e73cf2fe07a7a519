"""InfluxDB v2 write API sink (InfluxDB 2.x/3.x, VictoriaMetrics) over influxdb-client's asyncio client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from fleetpulse.streams.points import Point
from fleetpulse.streams.settings import InfluxV2Sink

log = logging.getLogger(__name__)


class InfluxV2PointSink:
    """Buffers line protocol and writes it in one HTTP request per flush, with bounded retries.

    After ``retries`` failed attempts the batch is dropped and counted in ``dropped``
    (and logged): a TSDB outage must not stop scoring and alerting, which matter more
    than charts. The retries give backpressure for short outages.
    """

    kind = "influxdb2"

    def __init__(self, config: InfluxV2Sink) -> None:
        self.config = config
        self._lines: list[str] = []
        self._client: Any = None
        self._write_api: Any = None
        self.written = 0
        self.dropped = 0
        self.failures = 0

    def add(self, points: Iterable[Point]) -> None:
        self._lines.extend(p.to_line_protocol() for p in points)

    async def _api(self) -> Any:
        if self._write_api is None:
            # created lazily: the asyncio client binds to the running event loop
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            self._client = InfluxDBClientAsync(
                url=self.config.url,
                token=self.config.token.get_secret_value(),
                org=self.config.org,
                timeout=int(self.config.timeout_s * 1000),
            )
            self._write_api = self._client.write_api()
        return self._write_api

    async def flush(self) -> int:
        if not self._lines:
            return 0
        lines, self._lines = self._lines, []
        body = "\n".join(lines)
        delay = 0.25
        for attempt in range(self.config.retries + 1):
            try:
                api = await self._api()
                await api.write(bucket=self.config.bucket, org=self.config.org, record=body)
                self.written += len(lines)
                return len(lines)
            except Exception as exc:  # the client raises aiohttp, OS and API errors alike
                self.failures += 1
                log.warning(
                    "tsdb write failed",
                    extra={"fields": {"attempt": attempt + 1, "points": len(lines), "error": str(exc)[:300]}},
                )
                if attempt < self.config.retries:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        self.dropped += len(lines)
        log.error("tsdb batch dropped after retries", extra={"fields": {"points": len(lines)}})
        return 0

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = self._write_api = None
