"""Per-device state: the bounded memory of one device that features are computed from.

The stream processor keeps one :class:`DeviceState` per device in a Faust table
(encoded by :mod:`fleetpulse.models.state_codec`); training replays real
daily SMART rows through the very same :func:`apply_report`, so features cannot
drift between training and serving.

Memory is bounded by construction:

* disks: at most ``MAX_DISKS`` tracked (least recently seen evicted, and any disk
  unseen for ``WINDOW_DAYS`` dropped); each keeps ``WINDOW_DAYS`` daily buckets
  of its raw counters (last value of the day);
* battery: daily buckets (mean capacity ratio of the day), at most
  ``MAX_BATTERY_POINTS``; beyond that the older half is thinned to every other
  point, so the history keeps spanning years at coarser resolution;
* device stability/thermal/memory: ``WINDOW_DAYS`` daily buckets of counts.

Buckets are stored column-wise in typed arrays (:class:`DailySeries`), 8 bytes per value
stored. Measured size of the stream's table value (``benchmarks/state_codec.py``): simulated PCs
after 60 days of daily reports average about 8.8 KB with their alert states; the largest report the
contract allows (every string and list at its limit, ``MAX_DISKS`` disks reporting every counter),
daily for 250 days, builds about 60 KB of history, and its alert states come on top. The bound
``MAX_STATE_BYTES`` (64 KiB) is enforced where the state is encoded (:func:`fit_in_place`): oldest
history goes first, deterministically (``DeviceRecord.to_bytes`` in the stream; tested in
``tests/unit/test_hostile_inventory_and_state.py``).

Time is the report's ``collected_at`` (event time), never the wall clock; days are
UTC calendar days stored as proleptic ordinals (``date.toordinal()``).
"""

from __future__ import annotations

import bisect
import functools
import math
import operator
from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_serializer, field_validator

from fleetpulse.contract import (
    DeviceInventory,
    DeviceKind,
    DiskHealth,
    DiskKind,
    HealthReport,
    Platform,
)
from fleetpulse.contract.v1 import UtcDatetime

WINDOW_DAYS = 35
MAX_DISKS = 8
MAX_BATTERY_POINTS = 240
MAX_STATE_BYTES = 64 * 1024
MIN_BATTERY_POINTS = WINDOW_DAYS
"""Thinning to fit the byte bound keeps at least this many battery points before cutting days."""
THERMAL_EXCURSION_C = 95.0

Merge = Literal["last", "sum", "max", "mean"]

DISK_COUNTERS: tuple[str, ...] = (
    "reallocated_sectors",
    "reported_uncorrect",
    "command_timeout",
    "current_pending_sectors",
    "offline_uncorrectable",
    "udma_crc_errors",
    "media_errors",
    "critical_warning",
    "available_spare_pct",
    "available_spare_threshold_pct",
    "percentage_used",
    "power_on_hours",
    "temperature_c",
    "smart_failed",
)
DISK_MERGE: dict[str, Merge] = {name: "last" for name in DISK_COUNTERS}
BATTERY_MERGE: dict[str, Merge] = {
    "health_ratio": "mean",
    "full_charge_capacity": "mean",
    "cycle_count": "last",
    "runtime_full_minutes": "mean",
}
DEVICE_MERGE: dict[str, Merge] = {
    "reports": "sum",
    "crashes": "sum",
    "unexpected_shutdowns": "sum",
    "thermal_excursions": "sum",
    "cpu_max_c": "max",
    "throttle_events": "max",
    "fan_rpm_max": "max",
    "boot_duration_s": "mean",
    "mem_correctable": "last",
    "mem_uncorrectable": "last",
}


if TYPE_CHECKING:
    Days = array[int]
    Values = array[float]
else:  # array.array is not subscriptable before Python 3.12, and pydantic evaluates annotations
    Days = Values = array

MISSING = float("nan")
"""A day without a value in a column. Reports cannot carry NaN (the contract refuses it), so it
never stands for a reading."""
LARGEST_VALUE = 2.0**1009
"""Column values are below this (reports are bounded far lower): the stored form tells NaN and
infinity from numbers by their high byte, which reaches them at 2**1009."""


def _days(days: Iterable[int]) -> Days:
    try:
        return array("i", days)
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"days must be day ordinals: {exc}") from None


def _values(values: Sequence[float | None]) -> Values:
    """A column from a list (JSON, constructors): ``None`` is a missing value, a NaN or infinity is refused."""
    try:
        col = array("d", (MISSING if v is None else v for v in values))
    except (TypeError, OverflowError) as exc:  # pydantic reports ValueError only; these would escape it raw
        raise ValueError(f"column values must be numbers or null: {exc}") from None
    for value, given in zip(col, values, strict=True):
        if given is not None and not abs(value) < LARGEST_VALUE:
            raise ValueError(f"column value {given!r} is a NaN, an infinity or beyond 1e300: no report produces one")
    return col


class DailySeries(BaseModel):
    """Daily buckets stored column-wise in typed arrays; ``MISSING`` (NaN) where a day had no value.

    Arrays, not lists: a device's history is a few thousand numbers that the stream decodes
    and re-encodes for every report, and an array moves as one block of bytes instead of one
    Python object per number (:mod:`fleetpulse.models.state_codec`). JSON and constructors
    still speak lists with ``None`` for a missing value.

    A ``mean`` column keeps its reading count in the hidden column ``<name>__n`` so
    further readings of the same day update the mean exactly.
    """

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)  # a newer version's fields

    days: Days = Field(default_factory=functools.partial(array, "i"))
    columns: dict[str, Values] = Field(default_factory=dict)

    @field_validator("days", mode="before")
    @classmethod
    def _days_from_list(cls, value: object) -> object:
        return _days(value) if isinstance(value, list | tuple) else value

    @field_validator("columns", mode="before")
    @classmethod
    def _columns_from_lists(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {name: _values(col) if isinstance(col, list | tuple) else col for name, col in value.items()}

    @field_validator("columns")
    @classmethod
    def _columns_match_days(cls, columns: dict[str, Values], info: ValidationInfo) -> dict[str, Values]:
        days = info.data.get("days", ())
        for name, col in columns.items():
            if len(col) != len(days):
                raise ValueError(f"column {name} has {len(col)} values for {len(days)} days")
        return columns

    @field_serializer("days")
    def _days_as_list(self, days: Days) -> list[int]:
        return days.tolist()

    @field_serializer("columns")
    def _columns_as_lists(self, columns: dict[str, Values]) -> dict[str, list[float | None]]:
        return {name: self.column(name) for name in columns}

    def __eq__(self, other: object) -> bool:
        """Same days and the same columns bit for bit (NaN marks a missing value, so ``==`` on floats would not do)."""
        if not isinstance(other, DailySeries):
            return NotImplemented
        theirs = other.columns
        return (
            self.days == other.days
            and self.columns.keys() == theirs.keys()
            and all(col.tobytes() == theirs[name].tobytes() for name, col in self.columns.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def column(self, name: str) -> list[float | None]:
        """The column as a list, ``None`` on days without a value."""
        col = self.columns.get(name)
        if col is None:
            return [None] * len(self.days)
        return [v if v == v else None for v in col]

    def upsert(self, day: int, values: Mapping[str, float | None], merge: Mapping[str, Merge]) -> None:
        """Fold one reading into its day's bucket (creating the bucket in day order)."""
        index = self._bucket(day)
        columns = self.columns
        for name, value in values.items():
            if value is None:
                continue
            col = columns.get(name)
            if col is None:
                col = self._new_column(name)
            how = merge[name]
            if how == "last":  # most columns: the old value does not matter
                col[index] = value
                continue
            old = col[index]
            missing = old != old
            if how == "mean":
                counts = columns.get(f"{name}__n")
                if counts is None:
                    counts = self._new_column(f"{name}__n")
                n = counts[index]
                if n != n:
                    n = 0.0
                col[index] = value if missing or n == 0.0 else old + (value - old) / (n + 1.0)
                counts[index] = n + 1.0
            elif missing:
                col[index] = value
            elif how == "sum":
                col[index] = old + value
            else:
                col[index] = max(old, value)

    def set_last(self, day: int, names: Sequence[str], values: Sequence[float | None]) -> None:
        """:meth:`upsert` of columns that all keep the day's last value, given in ``names`` order.

        The per-report path of every disk's counters: no mapping to build, no merge to look up.
        """
        index = self._bucket(day)
        columns = self.columns
        for name, value in zip(names, values, strict=True):
            if value is not None:
                col = columns.get(name)
                if col is None:
                    col = self._new_column(name)
                col[index] = value

    def _bucket(self, day: int) -> int:
        """Index of ``day``'s bucket, inserted in day order (a missing value in every column) when new."""
        days = self.days
        if days and days[-1] == day:  # the common case: another report on the newest day
            return len(days) - 1
        index = bisect.bisect_left(days, day)
        if index == len(days) or days[index] != day:
            days.insert(index, day)
            for shifted in self.columns.values():
                shifted.insert(index, MISSING)
        return index

    def _new_column(self, name: str) -> Values:
        col = self.columns[name] = array("d", (MISSING,)) * len(self.days)
        return col

    def keep_from(self, first_day: int) -> None:
        """Drop buckets older than ``first_day``."""
        cut = bisect.bisect_left(self.days, first_day)
        if cut:
            del self.days[:cut]
            for col in self.columns.values():
                del col[:cut]

    def thin_to(self, max_points: int) -> None:
        """Keep the newest half at full resolution and every other point of the older half."""
        while len(self.days) > max_points:
            older = len(self.days) - max_points // 2
            keep = [i for i in range(len(self.days)) if i >= older or i % 2 == 0]
            self.days = _days(self.days[i] for i in keep)
            self.columns = {name: array("d", (col[i] for i in keep)) for name, col in self.columns.items()}


class DiskHistory(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer version's fields (streams.processing.DeviceRecord)

    name: str
    kind: DiskKind = DiskKind.UNKNOWN
    model: str | None = None
    capacity_bytes: int | None = None
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    series: DailySeries = Field(default_factory=DailySeries)


class BatteryHistory(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer version's fields (streams.processing.DeviceRecord)

    design_capacity: float
    unit: Literal["mWh", "mAh"] = "mWh"
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    series: DailySeries = Field(default_factory=DailySeries)


class DeviceState(BaseModel):
    """Everything the scorers know about one device; see the module docstring for the bounds."""

    model_config = ConfigDict(extra="ignore")  # a newer version's fields (streams.processing.DeviceRecord)

    device_id: str
    kind: DeviceKind | None = None
    platform: Platform | None = None
    last_seq: int = -1
    last_collected_at: UtcDatetime | None = None
    # inventory facts (joined from the compacted inventory topic)
    vendor: str | None = None
    model: str | None = None
    site: str | None = None
    department: str | None = None
    purchase_date: date | None = None
    warranty_end: date | None = None
    # per-component histories; disks keyed by serial hash (or OS name when no serial)
    disks: dict[str, DiskHistory] = {}
    battery: BatteryHistory | None = None
    device: DailySeries = Field(default_factory=DailySeries)


def disk_key(disk: DiskHealth) -> str:
    return disk.serial_hash or disk.name


_DISK_READINGS = operator.attrgetter(*DISK_COUNTERS[:-1])
"""A report's disk counters in ``DISK_COUNTERS`` order, but ``smart_failed`` (derived from ``smart_passed``)."""


def _apply_disks(state: DeviceState, report: HealthReport, day: int) -> None:
    at = report.collected_at
    disks = state.disks
    for disk in report.disks:
        key = disk_key(disk)
        hist = disks.get(key)
        if hist is None:
            hist = DiskHistory(name=disk.name, first_seen=at, last_seen=at)
            disks[key] = hist
        # assigned only when changed: a model's attribute assignment costs, and a disk's facts rarely change
        if hist.name != disk.name:
            hist.name = disk.name
        if disk.kind is not DiskKind.UNKNOWN and hist.kind is not disk.kind:
            hist.kind = disk.kind
        if disk.model and hist.model != disk.model:
            hist.model = disk.model
        if disk.capacity_bytes and hist.capacity_bytes != disk.capacity_bytes:
            hist.capacity_bytes = disk.capacity_bytes
        if at > hist.last_seen:
            hist.last_seen = at
        passed = disk.smart_passed
        series = hist.series
        series.set_last(day, DISK_COUNTERS, (*_DISK_READINGS(disk), None if passed is None else float(not passed)))
        series.keep_from(series.days[-1] - WINDOW_DAYS + 1)
    horizon = day - WINDOW_DAYS
    stale = [k for k, h in disks.items() if h.last_seen.date().toordinal() <= horizon]
    for key in stale:
        del disks[key]
    if len(disks) > MAX_DISKS:
        newest = sorted(disks.items(), key=lambda kv: kv[1].last_seen, reverse=True)[:MAX_DISKS]
        state.disks = dict(newest)


def _apply_battery(state: DeviceState, report: HealthReport, day: int) -> None:
    bat = report.battery
    if bat is None:
        return
    at = report.collected_at
    hist = state.battery
    if hist is None or hist.design_capacity != bat.design_capacity or hist.unit != bat.unit:
        # a different design capacity means a different (replaced) battery: start afresh
        hist = BatteryHistory(design_capacity=bat.design_capacity, unit=bat.unit, first_seen=at, last_seen=at)
        state.battery = hist
    if at > hist.last_seen:
        hist.last_seen = at
    values: dict[str, float | None] = {
        "health_ratio": bat.health_ratio,
        "full_charge_capacity": bat.full_charge_capacity,
        "cycle_count": bat.cycle_count,
        "runtime_full_minutes": bat.runtime_full_minutes,
    }
    hist.series.upsert(day, values, BATTERY_MERGE)
    hist.series.thin_to(MAX_BATTERY_POINTS)


def _apply_device(state: DeviceState, report: HealthReport, day: int) -> None:
    values: dict[str, float | None] = {"reports": 1.0}
    stab = report.stability
    if stab is not None:
        values["crashes"] = stab.crashes
        values["unexpected_shutdowns"] = stab.unexpected_shutdowns
        values["boot_duration_s"] = stab.boot_duration_s
    therm = report.thermal
    if therm is not None:
        cpu, sensors = therm.cpu_max_c, therm.sensors_max_c
        hottest = sensors if cpu is None else cpu if sensors is None else max(cpu, sensors)
        if hottest is not None:
            values["thermal_excursions"] = float(hottest >= THERMAL_EXCURSION_C)
            values["cpu_max_c"] = hottest
        values["throttle_events"] = therm.throttle_events
        # the day's fastest fan reading: what the fan can still reach, not what idle asked of it
        if therm.fan_rpm:
            values["fan_rpm_max"] = max(therm.fan_rpm)
    mem = report.memory
    if mem is not None:
        values["mem_correctable"] = mem.correctable_errors
        values["mem_uncorrectable"] = mem.uncorrectable_errors
    series = state.device
    series.upsert(day, values, DEVICE_MERGE)
    series.keep_from(series.days[-1] - WINDOW_DAYS + 1)


def apply_report_in_place(state: DeviceState, report: HealthReport) -> DeviceState:
    """Fold ``report`` into ``state`` by mutation; training replays use it to avoid copies."""
    at = report.collected_at
    day = at.toordinal()  # the contract normalises collected_at to UTC: its date is the UTC day
    if state.kind is not report.kind:  # a model's attribute assignment costs; these rarely change
        state.kind = report.kind
    if state.platform is not report.platform:
        state.platform = report.platform
    state.last_seq = report.seq
    # a late report (within the stream's backdate bound) must not move the device's clock back
    last = state.last_collected_at
    if last is None or at > last:
        state.last_collected_at = at
    _apply_disks(state, report, day)
    _apply_battery(state, report, day)
    _apply_device(state, report, day)
    return state


def apply_report(state: DeviceState | None, report: HealthReport) -> DeviceState:
    """New state after ``report`` (pure: the input state is not modified).

    No deduplication here: the processor drops ``report.seq <= state.last_seq`` first.
    """
    base = DeviceState(device_id=report.device_id) if state is None else state.model_copy(deep=True)
    return apply_report_in_place(base, report)


def apply_inventory(state: DeviceState | None, inventory: DeviceInventory) -> DeviceState:
    """New state with the asset facts of ``inventory`` (pure)."""
    base = DeviceState(device_id=inventory.device_id) if state is None else state.model_copy(deep=True)
    return apply_inventory_in_place(base, inventory)


def apply_inventory_in_place(base: DeviceState, inventory: DeviceInventory) -> DeviceState:
    """Join the asset facts by mutation: the stream owns the states it decoded for a batch."""
    base.kind = base.kind or inventory.kind
    base.vendor = inventory.vendor
    base.model = inventory.model
    base.site = inventory.site
    base.department = inventory.department
    base.purchase_date = inventory.purchase_date
    base.warranty_end = inventory.warranty_end
    return base


def state_bytes(state: DeviceState) -> int:
    """Bytes ``state`` takes in the table's encoding (:mod:`fleetpulse.models.state_codec`)."""
    from fleetpulse.models.state_codec import encoded_size  # the codec is built on this module's models

    return encoded_size(state)


def _thin_battery(state: DeviceState, excess: int) -> bool:
    """Coarsen the battery history's older half (its oldest points go first); False when at the floor."""
    from fleetpulse.models.state_codec import series_size

    series = state.battery.series if state.battery is not None else None
    if series is None or len(series.days) <= MIN_BATTERY_POINTS:
        return False
    per_point = series_size(series) / len(series.days)
    series.thin_to(max(MIN_BATTERY_POINTS, len(series.days) - math.ceil(excess / per_point)))
    return True


def _cut_oldest_days(state: DeviceState, excess: int) -> bool:
    """Drop the oldest day buckets of every series (never a series' newest); False when nothing is left to drop."""
    series = [disk.series for disk in state.disks.values()] + [state.device]
    if state.battery is not None:
        series.append(state.battery.series)
    droppable = sorted({day for s in series for day in s.days[:-1]})
    if not droppable:
        return False
    from fleetpulse.models.state_codec import series_size

    per_day = sum(series_size(s) for s in series) / len({day for s in series for day in s.days})
    cutoff = droppable[min(len(droppable), math.ceil(excess / per_day)) - 1] + 1
    for s in series:
        s.keep_from(min(cutoff, s.days[-1]))
    return True


def fit_in_place(state: DeviceState, max_bytes: int) -> int:
    """Thin ``state`` until its encoding is at most ``max_bytes``; returns the final size.

    Oldest history goes first: the battery's long history is coarsened down to
    ``MIN_BATTERY_POINTS``, then the oldest day buckets of every series are cut. Each
    step is sized from the measured excess, so a state far over the bound costs a few
    encodings, not one per bucket. Depends only on the state: the same state always
    thins to the same result. A state already within the bound is left untouched.
    """
    size = state_bytes(state)
    while size > max_bytes:
        excess = size - max_bytes
        if not (_thin_battery(state, excess) or _cut_oldest_days(state, excess)):
            break  # one bucket per series left: the contract's limits keep that far under any sane bound
        size = state_bytes(state)
    return size
