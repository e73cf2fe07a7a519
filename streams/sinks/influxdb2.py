"""InfluxDB v2 write API sink (InfluxDB 2.x/3.x, InfluxDB 1.8+, VictoriaMetrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fleetpulse.streams.settings import InfluxV2Sink
from fleetpulse.streams.sinks.lineprotocol import HttpWriter, LineProtocolSink, flush_deadline


class InfluxV2PointSink(LineProtocolSink):
    def __init__(self, config: InfluxV2Sink, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        writer = HttpWriter(
            f"{config.url.rstrip('/')}/api/v2/write",
            params={"org": config.org, "bucket": config.bucket, "precision": "ns"},
            headers={"Authorization": f"Token {config.token.get_secret_value()}"} if config.token else {},
            timeout_s=config.timeout_s,
            secrets=[config.token.get_secret_value()] if config.token else [],
        )
        super().__init__(config.kind, writer, config.retries, sleep=sleep, deadline_s=flush_deadline(config))
