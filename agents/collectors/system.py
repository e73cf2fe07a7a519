"""Load and free space: cheap context for the health signals (a full disk explains many crashes)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from fleetpulse.agents.collectors.base import CollectorContext, Section
from fleetpulse.contract import Platform, SystemLoad


class SystemCollector:
    name = "system"

    def __init__(self, ctx: CollectorContext, timeout_s: float, path: Path | None) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.path = path or Path(
            os.environ.get("SYSTEMDRIVE", "C:") + "\\" if ctx.platform == Platform.WINDOWS else "/"
        )
        psutil.cpu_percent(interval=None)  # primes the counter: later calls average over the report interval

    def collect(self) -> Section:
        return {
            "system": SystemLoad(
                cpu_percent=min(100.0, psutil.cpu_percent(interval=None)),
                memory_percent=psutil.virtual_memory().percent,
                disk_free_bytes=psutil.disk_usage(str(self.path)).free,
            )
        }
