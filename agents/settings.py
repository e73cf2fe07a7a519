"""Settings of the endpoint agent: one TOML file (``deploy/agent/agent.toml``) plus environment.

Environment variables use the prefix ``FLEETPULSE_AGENT_`` and ``__`` for nesting, e.g.
``FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS`` or ``FLEETPULSE_AGENT_IDENTITY__SECRET``.
Only the CLI loads these; library code receives the objects.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetpulse.agents.collectors.config import CollectorConfig, default_collectors
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceKind

MB = 1024 * 1024


def default_spool_dir() -> Path:
    """Where a service keeps state on each platform (systemd's StateDirectory on Linux)."""
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "fleetpulse-agent"
    if sys.platform == "darwin":
        return Path("/Library/Application Support/fleetpulse-agent")
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/fleetpulse-agent"))


class IdentitySettings(BaseModel):
    """Pseudonymous identity: the device id is an HMAC of the machine id under the fleet secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: SecretStr | None = Field(
        default=None, description="fleet secret held by IT; without it ids are only unlinkable by obscurity"
    )
    device_id: str | None = Field(default=None, description="explicit override (tests, lab machines)")
    machine_id_file: Path | None = Field(default=None, description="override where the machine id is read")


class DeliverySettings(BaseModel):
    """Producer tuning. Defaults favour a quiet, durable agent over latency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    compression: Literal["gzip", "none"] = "gzip"
    linger_ms: int = Field(default=200, ge=0)
    batch_size: int = Field(default=64 * 1024, ge=1024)
    max_block_ms: int = Field(default=10_000, ge=100, description="how long send() may wait for metadata")
    delivery_timeout_ms: int = Field(default=60_000, ge=1_000)
    flush_timeout_s: float = Field(default=30.0, gt=0)
    max_batch_records: int = Field(default=200, ge=1, description="spooled records sent per attempt")
    backoff_initial_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEETPULSE_AGENT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    log_level: str = "INFO"
    kafka: KafkaSettings = KafkaSettings()
    identity: IdentitySettings = IdentitySettings()
    delivery: DeliverySettings = DeliverySettings()
    interval_s: float = Field(default=60.0, ge=0.05, description="seconds between health reports")
    smart_interval_s: float = Field(
        default=3600.0, ge=0.0, description="SMART is polled at most this often: it can wake disks and costs I/O"
    )
    inventory_interval_s: float = Field(default=86_400.0, ge=0.0)
    spool_dir: Path = Field(default_factory=default_spool_dir)
    spool_max_bytes: int = Field(default=50 * MB, ge=64 * 1024)
    device_kind: DeviceKind | None = Field(default=None, description="None: laptop if a battery is present")
    collectors: Annotated[list[CollectorConfig], Field(max_length=32)] = Field(default_factory=default_collectors)
