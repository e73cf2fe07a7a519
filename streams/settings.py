"""Settings of the stream worker."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class InfluxV2Sink(BaseModel):
    """InfluxDB 2.x/3.x (or anything speaking its /api/v2/write, e.g. VictoriaMetrics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["influxdb2"] = "influxdb2"
    url: str = "http://127.0.0.1:8428"
    token: str = ""
    org: str = "fleetpulse"
    bucket: str = "fleetpulse"


class NoSink(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["none"] = "none"


class StreamSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = "fleetpulse"
    partitions: int = Field(default=12, ge=1)
    store: Literal["memory", "rocksdb"] = "rocksdb"
    data_dir: Path = Path(".local/worker")
    web_port: int = 6066
    tsdb: InfluxV2Sink | NoSink = Field(default_factory=InfluxV2Sink, discriminator="kind")
