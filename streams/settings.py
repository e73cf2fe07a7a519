"""Settings of the stream worker.

Defaults are production defaults for one small machine: 12 partitions (room for 12
workers without repartitioning), RocksDB tables, short session timeouts and static
membership so a restarted worker gets its partitions back without a full rebalance.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from fleetpulse.config import refuse_credentials_in_clear


class InfluxV2Sink(BaseModel):
    """InfluxDB 2.x/3.x (or anything speaking its /api/v2/write, e.g. VictoriaMetrics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["influxdb2"] = "influxdb2"
    url: str = "http://127.0.0.1:8428"
    token: SecretStr = SecretStr("")
    org: str = "fleetpulse"
    bucket: str = "fleetpulse"
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0, description="attempts after the first before a batch is given up (counted)")
    allow_insecure: bool = Field(default=False, description="send the token over http:// (a protected network only)")

    @model_validator(mode="after")
    def _token_over_tls(self) -> InfluxV2Sink:
        refuse_credentials_in_clear(self.url, "streams.tsdb.url", bool(self.token), self.allow_insecure)
        return self


class InfluxV1Sink(BaseModel):
    """InfluxDB 1.x through its /write endpoint (1.8+ also accepts the ``influxdb2`` kind)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["influxdb1"] = "influxdb1"
    url: str = "http://127.0.0.1:8086"
    database: str = "fleetpulse"
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0, description="attempts after the first before a batch is given up (counted)")
    allow_insecure: bool = Field(default=False, description="send the password over http:// (a protected network only)")

    @model_validator(mode="after")
    def _password_over_tls(self) -> InfluxV1Sink:
        sends = bool(self.username) or bool(self.password)
        refuse_credentials_in_clear(self.url, "streams.tsdb.url", sends, self.allow_insecure)
        return self


class NoSink(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["none"] = "none"


class StreamSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field(default="fleetpulse", description="Faust app id = consumer group id (prefixed by topic_prefix)")
    partitions: int = Field(default=12, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    store: Literal["memory", "rocksdb"] = "rocksdb"
    data_dir: Path = Path(".local/worker")
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    instance_id: str | None = Field(
        default=None,
        description="static group membership id; default <hostname>-<web_port>, unique per worker on a host",
    )
    batch_max: int = Field(default=2000, ge=1, description="events per scoring batch (read from the channel in bulk)")
    batch_within_s: float = Field(
        default=0.5,
        gt=0,
        description=(
            "longest wait to fill a batch, the latency it adds: a worker keeping up with live reports pays its fixed "
            "costs per batch, so larger batches cost less CPU per report"
        ),
    )
    buffer_maxsize: int = Field(default=4096, ge=1, description="Faust per-partition buffer; full buffers pause fetch")
    fetch_min_bytes: int = Field(
        default=65_536,
        ge=1,
        description=(
            "the broker answers a fetch once this much is ready or fetch_max_wait_s has passed: at a trickle of "
            "reports, a few large fetches instead of one per record (1: answer at once)"
        ),
    )
    fetch_max_wait_s: float = Field(
        default=0.25, gt=0, le=10, description="longest the broker holds a fetch for fetch_min_bytes: added latency"
    )
    state_write_ahead_log: bool = Field(
        default=False,
        description=(
            "RocksDB's write-ahead log for the state store: the changelog topic is the durable copy, so the log only "
            "shortens the replay after a crash, and adds about 75 % to the CPU of each state write"
        ),
    )
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    rebalance_timeout_s: float = Field(default=20.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    producer_linger_s: float = Field(
        default=0.005,
        ge=0,
        description="producer batching delay for changelog, scores and alerts: fewer, larger produce requests",
    )
    producer_batch_bytes: int = Field(default=1_048_576, ge=16_384, description="producer batch size per partition")
    gc_young_threshold: int = Field(
        default=10_000,
        ge=700,
        description=(
            "allocations between young-generation garbage collections (CPython default 700); with start-up "
            "objects frozen, the pure processor ran 1.7x faster in-process: decoding states allocates many short-lived "
            "objects"
        ),
    )
    gc_middle_threshold: int = Field(
        default=1000,
        ge=10,
        description=(
            "young-generation collections between middle-generation ones (CPython default 10); each middle "
            "collection rescans every object that outlived a young one, such as the decoded-state cache. At 1000 "
            "the worker's peak memory measured the same as at 10: cyclic garbage still goes, at the next middle "
            "collection"
        ),
    )
    state_cache_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description=(
            "memory cap of the decoded device states kept between batches (estimated ~13 KB per device with a day "
            "of history, ~18 KB with 90 days; 0: decode every lookup). Once full, a state is kept only in place of "
            "one unused for a week, so a cap below a worker's devices (devices / workers x 18 KB) serves that share "
            "of them from memory and decodes the rest"
        ),
    )
    max_clock_skew: timedelta = Field(
        default=timedelta(minutes=10), description="reports dated further in the future than this are dead-lettered"
    )
    max_backdate: timedelta = Field(
        default=timedelta(days=2),
        description="reports dated further before their device's last event are dead-lettered (clock_skew)",
    )
    max_first_report_age: timedelta | None = Field(
        default=None,
        description=(
            "a device's first report (no state yet, so no last event to compare with) dated further before receive "
            "time is dead-lettered (clock_skew), so a new device cannot write months of made-up history into the "
            "feature log and the TSDB; unset, any date the contract allows is accepted (replaying a simulated or "
            "archived history needs that). Both production layouts set 14 days"
        ),
    )
    max_seq_jump: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "a seq further above the device's last one is refused unless it is below the report's own time in "
            "Unix ms (a new agent spool starts its counter at the clock)"
        ),
    )
    unknown_devices: Literal["accept", "reject"] = Field(
        default="accept",
        description="reports of devices without inventory: accept (counted, tagged 'unknown') or dead-letter",
    )
    rescore_interval: timedelta = Field(
        default=timedelta(minutes=15),
        description=(
            "event time between scorings of a device; reports in between only update state and metrics, "
            "unless they carry a health event (SMART change, crash): features are daily, scores barely move"
        ),
    )
    native_fast_path: bool = Field(
        default=True,
        description=(
            "fold routine reports and evaluate the trained disk model's trees in the native extension where it is "
            "installed (`make native`): same table values, points, scores and counts as the Python path at a "
            "fraction of the CPU; false: the Python path only"
        ),
    )
    event_rescore_gap: timedelta = Field(
        default=timedelta(minutes=1),
        description=(
            "a report carrying a health event is scored at once unless its device was scored less than this "
            "(event time) before; it is then scored with the next due report. Bounds the scoring one device's "
            "reports can cause"
        ),
    )
    state_retention: timedelta = Field(
        default=timedelta(days=180),
        ge=timedelta(days=1),
        description=(
            "a device silent this long (no report, agent inventory or new key; for an MDM phone no sync with the MDM) "
            "loses its histories and alert states if IT's register lists it, and is erased from the worker's "
            "state and its changelog otherwise (a retired or invented device). deploy/retention.yaml states it"
        ),
    )
    retention_check_s: float = Field(
        default=3600.0,
        ge=0,
        description="how often the worker applies state_retention to the devices of its partitions (0: never)",
    )
    baseline_refit_s: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "how often the anomaly scorer's cohort baselines are refitted from recently seen device states "
            "(0: never, priors only; makes anomaly scores independent of processing history)"
        ),
    )
    drift_interval_s: float = Field(
        default=3600.0, ge=0, description="how often PSI drift of recent features/scores goes to the TSDB (0: never)"
    )
    registry_poll_s: float = Field(
        default=30.0,
        ge=0,
        description="how often the registry index is checked for a new champion, loaded without a restart (0: never)",
    )
    baseline_sample: int = Field(default=2000, ge=1, description="recent device states kept for the refit and drift")
    stats_interval_s: float = Field(default=10.0, gt=0, description="how often pipeline stats go to the TSDB")
    commit_stall_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "processed but uncommitted records whose committed offset has not moved for this long make "
            "/health answer 503 'stalled' (a liveness probe then restarts the worker)"
        ),
    )
    tsdb: InfluxV2Sink | InfluxV1Sink | NoSink = Field(default_factory=InfluxV2Sink, discriminator="kind")
