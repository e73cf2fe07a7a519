"""MDM bridge: Intune (Microsoft Graph) exports of phones and tablets -> contract health reports.

Why: phones and tablets run no fleetpulse agent; the MDM already knows their battery health
and storage. The bridge reads what an export tool saved from Graph and publishes it like an
agent would, so the same pipeline scores them.

Inputs (see README "Simulator and MDM bridge"):
- ``graph-json``: Graph collection pages ``{"@odata.context": ..., "value": [...],
  "@odata.nextLink": ...}`` -- one page, a JSON array of pages, or one page per line --
  of ``managedDevice`` objects (with ``hardwareInformation`` from the beta endpoint) or of
  ``userExperienceAnalyticsBatteryHealthDevicePerformance`` objects (Windows laptops).
- ``csv``: one row per device; headers are Graph property names, matched case- and
  punctuation-insensitively (``lastSyncDateTime`` == ``Last Sync DateTime``).

Mapping rules:
- Only whitelisted, non-personal fields are read. User principal names, e-mail addresses,
  phone numbers, IMEI/MEID, serial numbers, device names and MAC addresses are never copied,
  not even into error messages or dead letters.
- ``device_id`` = ``mdm-`` + HMAC-SHA256(secret, Intune device id), truncated to 128 bits.
- The MDM reports battery health only as a percentage, so ``design_capacity`` is 100 and
  ``full_charge_capacity`` is the percentage (unit "mAh", dimensionless on both sides);
  ``health_ratio`` stays correct. A health of 0 is treated as "not reported".
- ``seq`` comes from a small SQLite state: the same observation (device + content) always
  gets the same seq and collected_at, so re-ingesting an export produces identical records
  and the stream's (device_id, seq) dedup drops them.
- Bad rows become :class:`RowError` entries with a reason; the bridge never raises on input.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from fleetpulse.contract import (
    BatteryHealth,
    DeviceInventory,
    DeviceKind,
    DiskHealth,
    DiskKind,
    HealthReport,
    Platform,
    ReportSource,
    SystemLoad,
)

InputFormat = Literal["graph-json", "csv"]
BRIDGE_VERSION = "mdm-bridge-1"
MAX_INPUT_BYTES = 512 * 1024 * 1024
_EXCERPT_FIELDS = (
    "deviceType",
    "chassisType",
    "operatingSystem",
    "lastSyncDateTime",
    "batteryHealthPercentage",
    "batteryChargeCycles",
    "maxCapacityPercentage",
    "estimatedRuntimeInMinutes",
    "totalStorageSpaceInBytes",
    "freeStorageSpaceInBytes",
    "totalStorageSpace",
    "freeStorageSpace",
)


class RowError(Exception):
    """A row the bridge could not map; ``reason`` never contains personal data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Problem:
    ref: str
    """Where: ``file:page:index`` or ``file:line`` -- never a device name or user."""
    reason: str
    excerpt: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one MDM row says about one device, before pseudonymisation and sequencing."""

    intune_id: str
    kind: DeviceKind
    platform: Platform
    collected_at: datetime | None
    battery_pct: float | None = None
    charge_cycles: int | None = None
    runtime_minutes: float | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    vendor: str | None = None
    model: str | None = None

    def fingerprint(self) -> str:
        data = [
            self.intune_id,
            self.kind.value,
            self.platform.value,
            self.collected_at.isoformat() if self.collected_at else None,
            self.battery_pct,
            self.charge_cycles,
            self.runtime_minutes,
            self.total_bytes,
            self.free_bytes,
        ]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()


@dataclass
class IngestResult:
    reports: list[HealthReport] = field(default_factory=list)
    inventory: list[DeviceInventory] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0


# --- pseudonyms and sequence state ----------------------------------------------------------


def pseudonymise(intune_id: str, secret: bytes) -> str:
    """Stable, unlinkable-without-the-secret device id (fits the contract's DeviceId)."""
    digest = hmac.new(secret, b"intune:" + intune_id.encode(), hashlib.sha256).hexdigest()
    return f"mdm-{digest[:32]}"


class SeqStore:
    """Remembers which observation got which seq, so replays are idempotent."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode with explicit BEGIN IMMEDIATE: two ingests running at once are serialised
        # instead of handing out the same seq twice.
        self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS observations (device_id TEXT NOT NULL, fingerprint TEXT NOT NULL,"
            " seq INTEGER NOT NULL, collected_at TEXT NOT NULL, PRIMARY KEY (device_id, fingerprint))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL)")

    def assign(self, device_id: str, fingerprint: str, collected_at: datetime) -> tuple[int, datetime]:
        """(seq, collected_at) for this observation: the stored pair if seen before, else a new seq."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        row = self._db.execute(
            "SELECT seq, collected_at FROM observations WHERE device_id = ? AND fingerprint = ?",
            (device_id, fingerprint),
        ).fetchone()
        if row is not None:
            return int(row[0]), datetime.fromisoformat(row[1])
        nxt = self._db.execute("SELECT next_seq FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        seq = int(nxt[0]) if nxt else 0
        self._db.execute(
            "INSERT INTO devices (device_id, next_seq) VALUES (?, ?)"
            " ON CONFLICT(device_id) DO UPDATE SET next_seq = excluded.next_seq",
            (device_id, seq + 1),
        )
        self._db.execute(
            "INSERT INTO observations (device_id, fingerprint, seq, collected_at) VALUES (?, ?, ?, ?)",
            (device_id, fingerprint, seq, collected_at.isoformat()),
        )
        return seq, collected_at

    def commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> SeqStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- readers: raw rows with a reference ------------------------------------------------------


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def read_graph_json(text: str, source: str = "input") -> tuple[list[tuple[str, Any]], list[str]]:
    """Items of all pages in the text, each with a reference; plus warnings (e.g. missing pages)."""
    warnings: list[str] = []
    pages: list[Any] = []
    stripped = text.strip()
    if not stripped:
        return [], [f"{source}: empty input"]
    try:
        doc = json.loads(stripped)
        pages = doc if isinstance(doc, list) else [doc]
    except (json.JSONDecodeError, RecursionError):
        # One page per line (what a paging export loop appends).
        for number, line in enumerate(stripped.splitlines(), 1):
            if not line.strip():
                continue
            try:
                pages.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError) as exc:
                warnings.append(f"{source}:line {number}: not JSON ({str(exc)[:120]}); page skipped")
    items: list[tuple[str, Any]] = []
    for number, page in enumerate(pages, 1):
        if not isinstance(page, dict) or not isinstance(page.get("value"), list):
            warnings.append(f"{source}:page {number}: not a Graph collection page (no 'value' array); skipped")
            continue
        for index, item in enumerate(page["value"]):
            items.append((f"{source}:page {number}:item {index}", item))
    if pages and isinstance(pages[-1], dict) and pages[-1].get("@odata.nextLink"):
        warnings.append(f"{source}: last page has @odata.nextLink: the export is incomplete (more pages on the server)")
    return items, warnings


def read_csv(text: str, source: str = "input") -> tuple[list[tuple[str, Any]], list[str]]:
    """Rows keyed by normalised header (``lastsyncdatetime``), each with a line reference."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return [], [f"{source}: no CSV header"]
    keys = [_norm(h) for h in header]
    rows: list[tuple[str, Any]] = []
    warnings: list[str] = []
    line = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            warnings.append(f"{source}:line {reader.line_num}: unreadable CSV ({exc}); rest of file skipped")
            break
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(keys):
            rows.append((f"{source}:line {line}", RowError(f"{len(values)} columns, header has {len(keys)}")))
            continue
        rows.append((f"{source}:line {line}", {k: v for k, v in zip(keys, values, strict=True) if v.strip() != ""}))
    return rows, warnings


# --- field parsing ----------------------------------------------------------------------------


def _get(item: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in item and item[name] is not None:
            return item[name]
    return None


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RowError(f"{name}: expected a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"{name}: not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise RowError(f"{name}: not a finite number")
    if not low <= number <= high:
        raise RowError(f"{name}: {number:g} outside {low:g}..{high:g}")
    return number


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{name}: missing")
    text = value.strip()
    if text.startswith("0001-01-01"):
        raise RowError(f"{name}: device never synced")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"{name}: not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise RowError(f"{name}: timestamp without time zone")
    parsed = parsed.astimezone(UTC)
    if not 2000 <= parsed.year < 2100:
        raise RowError(f"{name}: year {parsed.year} outside 2000..2099")
    return parsed


def _text(value: Any, limit: int = 128) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:limit]


def _kind_and_platform(device_type: Any, chassis: Any, os_name: Any) -> tuple[DeviceKind, Platform]:
    dtype = _norm(device_type) if isinstance(device_type, str) else ""
    chassis_n = _norm(chassis) if isinstance(chassis, str) else ""
    os_n = _norm(os_name) if isinstance(os_name, str) else ""
    if dtype in ("iphone", "ipod") or (os_n == "ios" and chassis_n != "tablet" and dtype != "ipad"):
        return DeviceKind.PHONE, Platform.IOS
    if dtype == "ipad" or os_n == "ipados":
        return DeviceKind.TABLET, Platform.IOS
    if os_n == "ios":
        return DeviceKind.TABLET, Platform.IOS
    if dtype.startswith("android") or os_n == "android":
        return (DeviceKind.TABLET if chassis_n == "tablet" else DeviceKind.PHONE), Platform.ANDROID
    raise _NotMobile(f"not a phone or tablet (operatingSystem/deviceType {os_n or dtype or 'missing'})")


class _NotMobile(RowError):
    """PCs in an MDM export report through the agent; skipped, not an error."""


def _intune_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError("id: missing Intune device id")
    if len(value) > 256:
        raise RowError("id: longer than 256 characters")
    return value.strip()


def _storage(item: Mapping[str, Any], hw: Mapping[str, Any]) -> tuple[int | None, int | None]:
    total = _number(
        _get(item, "totalStorageSpaceInBytes", "totalstoragespaceinbytes") or _get(hw, "totalStorageSpace"),
        "totalStorageSpace",
        0,
        2**50,
    )
    free = _number(
        _get(item, "freeStorageSpaceInBytes", "freestoragespaceinbytes") or _get(hw, "freeStorageSpace"),
        "freeStorageSpace",
        0,
        2**50,
    )
    if total is not None and free is not None and free > total:
        raise RowError("freeStorageSpace larger than totalStorageSpace")
    return (int(total) if total else None), (int(free) if free is not None else None)


def map_managed_device(item: Any) -> Observation:
    """One Graph ``managedDevice`` (or a CSV row with the same property names)."""
    if not isinstance(item, Mapping):
        raise RowError(f"expected a JSON object, got {type(item).__name__}")
    hw_raw = _get(item, "hardwareInformation")
    hw: Mapping[str, Any] = hw_raw if isinstance(hw_raw, Mapping) else {}
    if hw_raw is not None and not isinstance(hw_raw, Mapping):
        raise RowError("hardwareInformation: expected an object")
    kind, platform = _kind_and_platform(
        _get(item, "deviceType", "devicetype"),
        _get(item, "chassisType", "chassistype"),
        _get(item, "operatingSystem", "operatingsystem"),
    )
    battery = _number(
        _get(hw, "batteryHealthPercentage") or _get(item, "batteryhealthpercentage", "batteryHealthPercentage"),
        "batteryHealthPercentage",
        0,
        100,
    )
    cycles = _number(
        _get(hw, "batteryChargeCycles") or _get(item, "batterychargecycles", "batteryChargeCycles"),
        "batteryChargeCycles",
        0,
        100_000,
    )
    total, free = _storage(item, hw)
    return Observation(
        intune_id=_intune_id(_get(item, "id", "deviceid", "deviceId")),
        kind=kind,
        platform=platform,
        collected_at=_timestamp(_get(item, "lastSyncDateTime", "lastsyncdatetime"), "lastSyncDateTime"),
        battery_pct=battery or None,
        charge_cycles=int(cycles) if cycles is not None else None,
        total_bytes=total,
        free_bytes=free,
        vendor=_text(_get(item, "manufacturer") or _get(hw, "manufacturer")),
        model=_text(_get(item, "model") or _get(hw, "model")),
    )


def map_battery_performance(item: Any) -> Observation:
    """One Endpoint-analytics ``userExperienceAnalyticsBatteryHealthDevicePerformance`` (Windows laptops)."""
    if not isinstance(item, Mapping):
        raise RowError(f"expected a JSON object, got {type(item).__name__}")
    capacity = _number(_get(item, "maxCapacityPercentage", "maxcapacitypercentage"), "maxCapacityPercentage", -1, 200)
    runtime = _number(
        _get(item, "estimatedRuntimeInMinutes", "estimatedruntimeinminutes"), "estimatedRuntimeInMinutes", -1, 10_000
    )
    if capacity is None or capacity <= 0:
        raise RowError("maxCapacityPercentage: missing or not measured")
    return Observation(
        intune_id=_intune_id(_get(item, "deviceId", "deviceid")),
        kind=DeviceKind.LAPTOP,
        platform=Platform.WINDOWS,
        collected_at=None,
        battery_pct=min(capacity, 200.0),
        runtime_minutes=runtime if runtime is not None and runtime > 0 else None,
        vendor=_text(_get(item, "manufacturer")),
        model=_text(_get(item, "model")),
    )


def _is_battery_performance(item: Any, context: str) -> bool:
    if "BatteryHealthDevicePerformance".lower() in context.lower():
        return True
    if not isinstance(item, Mapping):
        return False
    return ("maxCapacityPercentage" in item and "deviceId" in item) or "maxcapacitypercentage" in item


def _excerpt(item: Any) -> dict[str, Any]:
    """Only non-personal fields survive into error records."""
    if not isinstance(item, Mapping):
        return {}
    keep = {_norm(k) for k in _EXCERPT_FIELDS}
    out = {
        k: v for k, v in item.items() if isinstance(k, str) and _norm(k) in keep and isinstance(v, str | int | float)
    }
    return {k: (v[:64] if isinstance(v, str) else v) for k, v in out.items()}


# --- ingest -------------------------------------------------------------------------------------


def to_report(obs: Observation, device_id: str, seq: int, collected_at: datetime) -> HealthReport:
    battery = None
    if obs.battery_pct is not None:
        battery = BatteryHealth(
            design_capacity=100.0,
            full_charge_capacity=obs.battery_pct,
            unit="mAh",
            cycle_count=obs.charge_cycles,
            runtime_full_minutes=obs.runtime_minutes,
        )
    disks = []
    system = None
    if obs.total_bytes is not None or obs.free_bytes is not None:
        disks = [
            DiskHealth(
                name="internal", kind=DiskKind.UNKNOWN, capacity_bytes=obs.total_bytes, free_bytes=obs.free_bytes
            )
        ]
        system = SystemLoad(disk_free_bytes=obs.free_bytes)
    return HealthReport(
        device_id=device_id,
        seq=seq,
        collected_at=collected_at,
        source=ReportSource.MDM,
        kind=obs.kind,
        platform=obs.platform,
        agent_version=BRIDGE_VERSION,
        disks=disks,
        battery=battery,
        system=system,
    )


def ingest(
    rows: Iterable[tuple[str, Any]],
    secret: bytes,
    store: SeqStore,
    as_of: datetime,
    context: str = "",
) -> IngestResult:
    """Map rows to reports (and inventory), pseudonymised and sequenced. Never raises on bad rows."""
    if not secret:
        raise ValueError("an MDM pseudonymisation secret is required")
    result = IngestResult()
    seen: set[tuple[str, str]] = set()
    for ref, item in rows:
        result.rows += 1
        try:
            if isinstance(item, RowError):
                raise item
            mapper = map_battery_performance if _is_battery_performance(item, context) else map_managed_device
            obs = mapper(item)
            device_id = pseudonymise(obs.intune_id, secret)
            fingerprint = obs.fingerprint()
            if (device_id, fingerprint) in seen:
                result.skipped.append(Problem(ref, "duplicate of an earlier row in this input"))
                continue
            seen.add((device_id, fingerprint))
            # Validate against the contract before a seq is spent on the observation.
            draft = to_report(obs, device_id, 0, obs.collected_at or as_of)
            inventory = DeviceInventory(
                device_id=device_id, kind=obs.kind, vendor=obs.vendor, model=obs.model, updated_at=draft.collected_at
            )
            seq, collected_at = store.assign(device_id, fingerprint, draft.collected_at)
            result.reports.append(draft.model_copy(update={"seq": seq, "collected_at": collected_at}))
            result.inventory.append(inventory.model_copy(update={"updated_at": collected_at}))
        except _NotMobile as exc:
            result.skipped.append(Problem(ref, exc.reason))
        except RowError as exc:
            result.errors.append(Problem(ref, exc.reason, _excerpt(item)))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            result.errors.append(Problem(ref, f"rejected by contract: {where}: {first['msg']}", _excerpt(item)))
    store.commit()
    return result


def ingest_text(
    text: str, fmt: InputFormat, secret: bytes, store: SeqStore, as_of: datetime, source: str = "input"
) -> IngestResult:
    """Read an export (``graph-json`` or ``csv``) and :func:`ingest` it; reader warnings are kept."""
    if fmt == "graph-json":
        rows, warnings = read_graph_json(text, source)
        context = _context_of(text)
    else:
        rows, warnings = read_csv(text, source)
        context = ""
    result = ingest(rows, secret, store, as_of, context)
    result.warnings = warnings + result.warnings
    return result


def _context_of(text: str) -> str:
    """The ``@odata.context`` of the first page, which names the entity set."""
    match = re.search(r'"@odata\.context"\s*:\s*"([^"]{0,512})"', text[:4096])
    return match.group(1) if match else ""


def read_export(path: Path) -> str:
    """Read one export file, refusing absurd sizes instead of exhausting memory."""
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise RowError(f"{path.name}: {size} bytes > limit {MAX_INPUT_BYTES}")
    return path.read_bytes().decode("utf-8", errors="replace")


def dead_letters(result: IngestResult, at: datetime) -> Iterator[str]:
    """JSON lines for rejected rows: where, why, and the non-personal fields only."""
    for problem in result.errors:
        yield json.dumps(
            {"ref": problem.ref, "reason": problem.reason, "excerpt": problem.excerpt, "rejected_at": at.isoformat()},
            sort_keys=True,
        )
