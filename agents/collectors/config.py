"""Collector configuration: a list of ``{kind = "...", ...}`` tables, each with a ``build()``.

Adding a collector = a module with a class satisfying :class:`~.base.Collector` plus a config
model here with its own ``kind`` literal; the discriminated union does the rest.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetpulse.agents.collectors.base import Collector, CollectorContext, Throttled


class _Config(BaseModel, ABC):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(default=20.0, gt=0, le=600, description="the collector is abandoned after this")
    interval_s: float | None = Field(default=None, ge=0, description="run at most this often; None: every report")

    def build_throttled(self, ctx: CollectorContext) -> Collector:
        collector = self.build(ctx)
        return Throttled(collector, self.interval_s) if self.interval_s else collector

    @abstractmethod
    def build(self, ctx: CollectorContext) -> Collector: ...


class SmartConfig(_Config):
    kind: Literal["smart"] = "smart"
    timeout_s: float = Field(default=120.0, gt=0, le=600)
    smartctl: str = Field(
        default="smartctl",
        description="absolute path, or a bare name looked up in the system's tool folders (never $PATH)",
    )
    devices: list[str] | None = Field(default=None, description="None: every device smartctl --scan-open finds")
    max_disks: int = Field(default=16, ge=1, le=32)

    @field_validator("smartctl")
    @classmethod
    def _absolute_or_bare(cls, value: str) -> str:
        if not os.path.isabs(value) and (os.sep in value or (os.altsep is not None and os.altsep in value)):
            raise ValueError("must be an absolute path or a bare name")
        return value

    def build(self, ctx: CollectorContext) -> Collector:
        from fleetpulse.agents.collectors.smart import SmartCollector

        return SmartCollector(ctx, self.smartctl, self.timeout_s, self.devices, self.max_disks)


class BatteryConfig(_Config):
    kind: Literal["battery"] = "battery"
    interval_s: float | None = Field(
        default=900.0, ge=0, description="wear changes slowly; powercfg/ioreg cost a process"
    )

    def build(self, ctx: CollectorContext) -> Collector:
        from fleetpulse.agents.collectors.battery import BatteryCollector

        return BatteryCollector(ctx, self.timeout_s)


class ThermalConfig(_Config):
    kind: Literal["thermal"] = "thermal"

    def build(self, ctx: CollectorContext) -> Collector:
        from fleetpulse.agents.collectors.thermal import ThermalCollector

        return ThermalCollector(ctx, self.timeout_s)


class MemoryConfig(_Config):
    kind: Literal["memory"] = "memory"
    interval_s: float | None = Field(default=900.0, ge=0, description="cumulative counters; wevtutil costs a process")

    def build(self, ctx: CollectorContext) -> Collector:
        from fleetpulse.agents.collectors.memory import MemoryCollector

        return MemoryCollector(ctx, self.timeout_s)


class StabilityConfig(_Config):
    kind: Literal["stability"] = "stability"
    crash_dirs: list[Path] | None = Field(default=None, description="None: the platform's kernel crash folders")

    def build(self, ctx: CollectorContext) -> Collector:
        from fleetpulse.agents.collectors.stability import StabilityCollector

        dirs = tuple(self.crash_dirs) if self.crash_dirs is not None else None
        return StabilityCollector(ctx, self.timeout_s, dirs)


class SystemConfig(_Config):
    kind: Literal["system"] = "system"
    path: Path | None = Field(default=None, description="filesystem whose free space is reported; None: system drive")

    def build(self, ctx: CollectorContext) -> Collector:
        from fleetpulse.agents.collectors.system import SystemCollector

        return SystemCollector(ctx, self.timeout_s, self.path)


CollectorConfig = Annotated[
    SmartConfig | BatteryConfig | ThermalConfig | MemoryConfig | StabilityConfig | SystemConfig,
    Field(discriminator="kind"),
]


def default_collectors() -> list[CollectorConfig]:
    return [SmartConfig(), BatteryConfig(), ThermalConfig(), MemoryConfig(), StabilityConfig(), SystemConfig()]
