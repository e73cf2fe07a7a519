"""InfluxDB 1.x write API sink (``/write?db=``), for deployments whose dashboards read InfluxDB 1.x."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fleetpulse.streams.settings import InfluxV1Sink
from fleetpulse.streams.sinks.lineprotocol import HttpWriter, LineProtocolSink, flush_deadline


class InfluxV1PointSink(LineProtocolSink):
    def __init__(self, config: InfluxV1Sink, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        writer = HttpWriter(
            f"{config.url.rstrip('/')}/write",
            params={"db": config.database, "precision": "ns"},
            headers={},
            timeout_s=config.timeout_s,
            secrets=[config.password.get_secret_value()] if config.username else [],
            auth=(config.username, config.password.get_secret_value()) if config.username else None,
        )
        super().__init__(config.kind, writer, config.retries, sleep=sleep, deadline_s=flush_deadline(config))
