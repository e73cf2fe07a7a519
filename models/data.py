"""Real training/evaluation data, replayed through the serving code path.

Every Backblaze row becomes a ``DiskHealth`` snapshot inside a ``HealthReport`` and
goes through :func:`~fleetpulse.models.state.apply_report_in_place` and
:func:`~fleetpulse.models.features.disk_vector` exactly as in the stream processor.
The result is one feature row per *instant* (drive x report) plus per-drive facts
(end of observation, failed or not) from which labels are derived later, so labels
can be censored at any cut-off without replaying again.

Two sources (see ``../shared/data/backblaze/README.md``):

* the 2013 daily full-fleet file: one instant per drive-day (calendar days);
* the 2013-2016 start-stop survival table: one instant per interval start plus one
  at the drive's last hour. Its time axis is **power-on hours**; instants are
  placed at ``min_date + (hours - min_hours) / 24`` days, i.e. POH-days, which is
  close to calendar time for always-on data-centre drives but not identical.
"""

from __future__ import annotations

import ast
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceKind, DiskHealth, DiskKind, HealthReport, Platform, ReportSource
from fleetpulse.models.features import DISK_FEATURES, disk_vector
from fleetpulse.models.state import DeviceState, apply_report_in_place

DAILY_FILE = "backblaze/backblaze_2013-04-10_2013-05-19_all_drives.csv.gz"
SURVIVAL_FILE = "backblaze/backblaze_2013-2016_startstop_hds.csv.gz"

# Backblaze column -> DiskHealth field (only attributes the contract carries)
DAILY_COLUMNS = {
    "smart_5_raw": "reallocated_sectors",
    "smart_187_raw": "reported_uncorrect",
    "smart_188_raw": "command_timeout",
    "smart_197_raw": "current_pending_sectors",
    "smart_198_raw": "offline_uncorrectable",
    "smart_199_raw": "udma_crc_errors",
    "smart_9_raw": "power_on_hours",
    "smart_194_raw": "temperature_c",
}
SURVIVAL_COLUMNS = {
    "smart_5": "reallocated_sectors",
    "smart_187": "reported_uncorrect",
    "smart_188": "command_timeout",
    "smart_197": "current_pending_sectors",
    "smart_198": "offline_uncorrectable",
}
_LIMITS = {"temperature_c": (-40.0, 150.0), "power_on_hours": (0.0, 2.0**48)}
_COUNT_LIMIT = (0.0, 2.0**48)

Progress = Callable[[int], None]


@dataclass
class Instants:
    """Feature rows of a replay and the per-drive facts labels are derived from."""

    features: np.ndarray  # (n, len(DISK_FEATURES)) float32
    drive: np.ndarray  # (n,) index into the per-drive arrays
    day: np.ndarray  # (n,) float: day ordinal of the instant (fractional for POH-days)
    serials: list[str]
    models: list[str]
    end_day: np.ndarray  # (drives,) last observed day
    failed: np.ndarray  # (drives,) bool: failure recorded at end_day
    skipped_rows: int = 0
    feature_names: tuple[str, ...] = DISK_FEATURES

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            features=self.features,
            drive=self.drive,
            day=self.day,
            serials=np.array(self.serials),
            models=np.array(self.models),
            end_day=self.end_day,
            failed=self.failed,
            skipped_rows=np.array(self.skipped_rows),
            feature_names=np.array(self.feature_names),
        )

    @classmethod
    def load(cls, path: Path) -> Instants:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                features=z["features"],
                drive=z["drive"],
                day=z["day"],
                serials=[str(s) for s in z["serials"]],
                models=[str(s) for s in z["models"]],
                end_day=z["end_day"],
                failed=z["failed"],
                skipped_rows=int(z["skipped_rows"]),
                feature_names=tuple(str(s) for s in z["feature_names"]),
            )


def drive_group(serial: str, salt: str = "fleetpulse-split") -> float:
    """Stable pseudo-random number in [0, 1) per drive: the drive split is the same in
    every data set (the 2013 drives reappear in the survival table) and every run."""
    digest = hashlib.sha256(f"{salt}:{serial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _clean(value: object, field: str) -> float | int | None:
    """Out-of-range raw values become missing (counted by the caller), never crash a replay."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    number = float(value)  # type: ignore[arg-type]
    low, high = _LIMITS.get(field, _COUNT_LIMIT)
    if not low <= number <= high:
        return None
    return number if field == "temperature_c" else int(number)


def _snapshot(serial: str, model: str, values: dict[str, object]) -> DiskHealth:
    fields = {field: _clean(value, field) for field, value in values.items()}
    return DiskHealth(name="disk0", serial_hash=serial[:128], kind=DiskKind.HDD, model=model[:128], **fields)  # type: ignore[arg-type]


def _report(serial: str, seq: int, at: datetime, disk: DiskHealth) -> HealthReport:
    return HealthReport(
        device_id="backblaze",
        seq=seq,
        collected_at=at,
        source=ReportSource.SIMULATOR,
        kind=DeviceKind.DESKTOP,
        platform=Platform.LINUX,
        disks=[disk],
    )


class _Builder:
    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.drive: list[int] = []
        self.day: list[float] = []
        self.serials: list[str] = []
        self.models: list[str] = []
        self.end_day: list[float] = []
        self.failed: list[bool] = []
        self.skipped = 0

    def replay(
        self, serial: str, model: str, snapshots: Iterator[tuple[datetime, float, dict[str, object]]], failed: bool
    ) -> None:
        """Replay one drive's snapshots in time order; one feature row per snapshot."""
        state = DeviceState(device_id="backblaze")
        index = len(self.serials)
        last_day = None
        for seq, (at, day, values) in enumerate(snapshots):
            try:
                disk = _snapshot(serial, model, values)
            except ValidationError:
                self.skipped += 1
                continue
            apply_report_in_place(state, _report(serial, seq, at, disk))
            self.rows.append(disk_vector(state.disks[disk.serial_hash or disk.name]))
            self.drive.append(index)
            self.day.append(day)
            last_day = day
        if last_day is None:
            return
        self.serials.append(serial)
        self.models.append(model)
        self.end_day.append(last_day)
        self.failed.append(failed)

    def build(self) -> Instants:
        return Instants(
            features=np.asarray(self.rows, dtype=np.float32).reshape(-1, len(DISK_FEATURES)),
            drive=np.asarray(self.drive, dtype=np.int32),
            day=np.asarray(self.day, dtype=np.float64),
            serials=self.serials,
            models=self.models,
            end_day=np.asarray(self.end_day, dtype=np.float64),
            failed=np.asarray(self.failed, dtype=bool),
            skipped_rows=self.skipped,
        )


def _midday(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def replay_daily(path: Path, progress: Progress | None = None, max_drives: int | None = None) -> Instants:
    """One instant per drive-day of the 2013 daily file."""
    usecols = ["date", "serial_number", "model", "failure", *DAILY_COLUMNS]
    frame = pd.read_csv(path, usecols=usecols, dtype={"serial_number": str, "model": str})
    frame = frame.sort_values(["serial_number", "date"], kind="stable")
    builder = _Builder()
    fields = list(DAILY_COLUMNS.values())
    for n, (serial, group) in enumerate(frame.groupby("serial_number", sort=True)):
        if max_drives is not None and n >= max_drives:
            break
        days = [date.fromisoformat(d) for d in group["date"]]
        raw = group[list(DAILY_COLUMNS)].to_numpy(dtype=np.float64)
        model = str(group["model"].iloc[0])

        def snapshots(
            days: list[date] = days, raw: np.ndarray = raw
        ) -> Iterator[tuple[datetime, float, dict[str, object]]]:
            for d, row in zip(days, raw, strict=True):
                yield _midday(d), float(d.toordinal()), dict(zip(fields, row.tolist(), strict=True))

        builder.replay(str(serial), model, snapshots(), bool(group["failure"].max() == 1))
        if progress is not None:
            progress(len(group))
    return builder.build()


def replay_survival(path: Path, progress: Progress | None = None, max_drives: int | None = None) -> Instants:
    """One instant per start-stop interval start, plus the last hour; time in POH-days."""
    usecols = [
        "serial_number",
        "model",
        "min_date",
        "min_hours",
        "max_hours",
        "tstart",
        "tstop",
        "fails",
        *SURVIVAL_COLUMNS,
    ]
    frame = pd.read_csv(path, usecols=usecols, dtype={"serial_number": str, "model": str, "min_date": str})
    frame = frame.sort_values(["serial_number", "tstart"], kind="stable")
    builder = _Builder()
    fields = list(SURVIVAL_COLUMNS.values())
    for n, (serial, group) in enumerate(frame.groupby("serial_number", sort=True)):
        if max_drives is not None and n >= max_drives:
            break
        start = _midday(date.fromisoformat(str(group["min_date"].iloc[0])))
        min_hours = float(group["min_hours"].iloc[0])
        raw = group[list(SURVIVAL_COLUMNS)].to_numpy(dtype=np.float64)
        starts = group["tstart"].to_numpy(dtype=np.float64)
        last_stop = float(group["tstop"].iloc[-1])

        def snapshots(
            raw: np.ndarray = raw,
            starts: np.ndarray = starts,
            last_stop: float = last_stop,
            start: datetime = start,
            min_hours: float = min_hours,
        ) -> Iterator[tuple[datetime, float, dict[str, object]]]:
            hours = [*starts.tolist(), last_stop]
            rows = [*raw.tolist(), raw[-1].tolist()]
            for h, row in zip(hours, rows, strict=True):
                at = start + timedelta(hours=max(0.0, h - min_hours))
                values = dict(zip(fields, row, strict=True))
                values["power_on_hours"] = h
                yield at, at.toordinal() + (at.hour + at.minute / 60.0) / 24.0, values

        builder.replay(str(serial), str(group["model"].iloc[0]), snapshots(), bool(group["fails"].max() == 1))
        if progress is not None:
            progress(len(group))
    return builder.build()


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def code_digest() -> str:
    """Digest of the code a replay depends on: a cached replay is reused only while it is unchanged."""
    from fleetpulse.models import data, features, state

    sha = hashlib.sha256()
    for module in (state, features, data):
        # the syntax tree, so reformatting or comments do not invalidate a cached replay
        sha.update(ast.dump(ast.parse(Path(str(module.__file__)).read_text())).encode())
    return sha.hexdigest()[:12]


def cached_replay(kind: str, data_dir: Path, cache_dir: Path, progress: Progress | None = None) -> Instants:
    """Replay ``kind`` ("daily" or "survival"), reusing ``cache_dir`` when data and code are unchanged."""
    path = data_dir / (DAILY_FILE if kind == "daily" else SURVIVAL_FILE)
    cache = cache_dir / f"instants-{kind}-{file_digest(path)[:12]}-{code_digest()}.npz"
    if cache.is_file():
        return Instants.load(cache)
    instants = replay_daily(path, progress) if kind == "daily" else replay_survival(path, progress)
    instants.save(cache)
    return instants
