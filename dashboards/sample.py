"""A deterministic sample fleet whose TSDB points are produced exactly as the sink produces them.

Used by the panel-query tests (every dashboard query must return rows on it), the
dashboard query benchmark, and to preview the dashboards on a local InfluxDB.

Contract records (health reports, inventory, risk scores, alerts) go through
``fleetpulse.streams.points``, and so do the pipeline and drift series; ``ticket``
(no writer function yet) uses the names fixed in ``fleetpulse.dashboards.schema``. Device
``pc-0001`` is the drill-down subject: a laptop with a SATA SSD that is failing,
an NVMe drive and a worn battery, so every device panel has data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from fleetpulse.compat import UTC
from fleetpulse.contract import (
    Alert,
    AlertState,
    BatteryHealth,
    Component,
    DeviceInventory,
    DeviceKind,
    DiskHealth,
    DiskKind,
    HealthReport,
    MemoryHealth,
    Platform,
    RiskScore,
    ScorerRole,
    StabilityHealth,
    SystemLoad,
    ThermalHealth,
)
from fleetpulse.dashboards.schema import TICKET
from fleetpulse.streams.points import (
    Point,
    alert_point,
    drift_point,
    pipeline_point,
    report_points,
    score_point,
    serving_point,
)

END = datetime(2026, 11, 20, tzinfo=UTC)
START = END - timedelta(days=3)
STEP = timedelta(hours=2)
DRILL_DEVICE = "pc-0001"
SITES = ("Town Hall", "Library", "Depot North")
MODELS = {DeviceKind.LAPTOP: "Latitude 7420", DeviceKind.DESKTOP: "OptiPlex 7090", DeviceKind.PHONE: "Galaxy A54"}
CHAMPION = ("hazard-gbm", "1.2.0")
CHALLENGER = ("hazard-gbm", "1.3.0-rc1")


def _inventory(index: int, kind: DeviceKind) -> DeviceInventory:
    return DeviceInventory(
        device_id=f"{'mob' if kind is DeviceKind.PHONE else 'pc'}-{index:04d}",
        kind=kind,
        vendor="Dell" if kind is not DeviceKind.PHONE else "Samsung",
        model=MODELS[kind],
        site=SITES[index % len(SITES)],
        updated_at=START,
    )


def _report(inv: DeviceInventory, seq: int, at: datetime, wear: float, rng: random.Random) -> HealthReport:
    """One report; ``wear`` in 0..1 grows over time for the failing devices."""
    phone = inv.kind is DeviceKind.PHONE
    disks: list[DiskHealth] = []
    if not phone:
        disks.append(
            DiskHealth(
                name="/dev/sda",
                kind=DiskKind.SSD,
                serial_hash=f"{inv.device_id}-sata",
                smart_passed=wear < 0.9,
                power_on_hours=9000 + seq * 2,
                temperature_c=35 + rng.random() * 10,
                reallocated_sectors=int(wear * 400),
                current_pending_sectors=int(wear * 40),
                offline_uncorrectable=int(wear * 8),
                reported_uncorrect=int(wear * 12),
                command_timeout=int(wear * 3),
                udma_crc_errors=0,
            )
        )
    if inv.kind is DeviceKind.LAPTOP:
        disks.append(
            DiskHealth(
                name="/dev/nvme0n1",
                kind=DiskKind.NVME,
                serial_hash=f"{inv.device_id}-nvme",
                smart_passed=True,
                temperature_c=40 + rng.random() * 8,
                critical_warning=0,
                available_spare_pct=100 - wear * 30,
                percentage_used=20 + wear * 50,
                media_errors=int(wear * 5),
                num_err_log_entries=int(wear * 20),
                unsafe_shutdowns=3,
            )
        )
    battery = None
    if inv.kind in (DeviceKind.LAPTOP, DeviceKind.PHONE):
        design = 50_000.0 if inv.kind is DeviceKind.LAPTOP else 18_000.0
        battery = BatteryHealth(
            design_capacity=design,
            full_charge_capacity=design * (0.95 - 0.35 * wear),
            cycle_count=300 + seq,
            temperature_c=30 + rng.random() * 5,
            runtime_full_minutes=300 * (1 - wear / 2),
        )
    return HealthReport(
        device_id=inv.device_id,
        seq=seq,
        collected_at=at,
        kind=inv.kind,
        platform=Platform.ANDROID if phone else Platform.WINDOWS,
        disks=disks,
        battery=battery,
        thermal=None
        if phone
        else ThermalHealth(
            cpu_max_c=60 + rng.random() * 25,
            sensors_max_c=55 + rng.random() * 20,
            fan_rpm=[2000 + wear * 3000],
            throttle_events=int(wear * 6),
        ),
        memory=None if phone else MemoryHealth(correctable_errors=int(wear * 10), uncorrectable_errors=0),
        stability=StabilityHealth(
            crashes=int(rng.random() < wear / 2), unexpected_shutdowns=int(rng.random() < wear / 4)
        ),
        system=SystemLoad(
            cpu_percent=rng.random() * 100, memory_percent=40 + rng.random() * 50, disk_free_bytes=10**11
        ),
    )


def _scores(report: HealthReport, wear: float, rng: random.Random) -> list[RiskScore]:
    parts: list[tuple[Component, str]] = [(Component.DISK, d.serial_hash or d.name) for d in report.disks]
    if report.battery is not None:
        parts.append((Component.BATTERY, ""))
    if report.thermal is not None:
        parts.append((Component.THERMAL, ""))
    out = []
    for component, component_id in parts:
        base = min(1.0, max(0.0, wear * (0.95 if component is Component.DISK else 0.7) + rng.random() * 0.05))
        for role, (name, version), shift in (
            (ScorerRole.CHAMPION, CHAMPION, 0.0),
            (ScorerRole.CHALLENGER, CHALLENGER, 0.03),
        ):
            out.append(
                RiskScore(
                    device_id=report.device_id,
                    component=component,
                    component_id=component_id,
                    risk=min(1.0, base + shift),
                    days_to_failure=max(0.0, 120 * (1 - base)),
                    model_name=name,
                    model_version=version,
                    role=role,
                    report_seq=report.seq,
                    collected_at=report.collected_at,
                    scored_at=report.collected_at + timedelta(seconds=2),
                )
            )
    return out


def fleet_points(devices: int = 24) -> list[Point]:
    """Every point of the sample fleet over ``START..END``."""
    return list(iter_points(devices))


def iter_points(devices: int = 24) -> Iterator[Point]:
    """The same points, generated lazily (large fleets for benchmarks); 4 in 24 devices are failing."""
    rng = random.Random(7)
    kinds = (DeviceKind.LAPTOP, DeviceKind.DESKTOP, DeviceKind.PHONE)
    fleet = [_inventory(i, kinds[(i - 1) % 3]) for i in range(1, devices + 1)]
    failing = {inv.device_id for i, inv in enumerate(fleet) if i % 24 in (0, 4, 5, 8)}
    steps = int((END - START) / STEP)
    for inv in fleet:
        points: list[Point] = []
        raised: set[tuple[Component, str]] = set()
        for seq in range(steps + 1):
            at = START + seq * STEP
            progress = seq / steps
            wear = progress if inv.device_id in failing else 0.05 * progress
            report = _report(inv, seq, at, wear, rng)
            points.extend(report_points(report, inv))
            for score in _scores(report, wear, rng):
                points.append(score_point(score, inv))
                if score.role is not ScorerRole.CHAMPION:
                    continue
                key = (score.component, score.component_id)
                state = None
                if score.risk >= 0.5 and key not in raised:
                    raised.add(key)
                    state = AlertState.RAISED
                elif score.risk < 0.3 and key in raised:
                    raised.discard(key)
                    state = AlertState.CLEARED
                if state is not None:
                    alert = Alert(
                        alert_id=f"{inv.device_id}:{score.component}:{seq}",
                        device_id=inv.device_id,
                        component=score.component,
                        component_id=score.component_id,
                        state=state,
                        risk=score.risk,
                        model_name=score.model_name,
                        model_version=score.model_version,
                        at=score.scored_at,
                        report_seq=seq,
                    )
                    points.append(alert_point(alert, inv))
        yield from points
    yield from _operational_points(rng)


def _operational_points(rng: random.Random) -> list[Point]:
    points: list[Point] = []
    tick = timedelta(minutes=10)
    for worker in ("worker-0", "worker-1"):
        events = dead = dups = 0
        at = START
        while at <= END:
            rate = 40 + rng.random() * 20
            events += int(rate * tick.total_seconds())
            dead += int(rng.random() < 0.3)
            dups += int(rng.random() < 0.5)
            fields = {
                "events_per_s": rate,
                "events_total": events,
                "dead_letters_total": dead,
                "duplicates_total": dups,
                "consumer_lag": int(rng.random() * 500),
                "scoring_latency_p50_ms": 4 + rng.random(),
                "scoring_latency_p99_ms": 20 + rng.random() * 10,
                "batch_size": 64 + int(rng.random() * 64),
            }
            points.append(pipeline_point(worker, at, fields))
            for served in (("disk", "champion", *CHAMPION), ("disk", "challenger", *CHALLENGER)):
                points.append(serving_point(worker, served, at))
            at += tick
    six_hours = timedelta(hours=6)
    at = START
    while at <= END:
        for feature in ("reallocated_sectors", "battery_health_ratio", "cpu_max_c"):
            for device_model in (*MODELS.values(), "all"):
                points.append(drift_point(CHAMPION[0], feature, device_model, rng.random() * 0.3, at))
        for component in ("disk", "battery"):
            for site in SITES:
                for state, outcome in (
                    ("open", "pending"),
                    ("done", "confirmed_fault"),
                    ("done", "false_alarm"),
                    ("dismissed", "no_fault_found"),
                ):
                    tags = {"component": component, "state": state, "outcome": outcome, "site": site}
                    points.append(Point(TICKET.name, tags, {"count": 1 + int(rng.random() * 5)}, at))
        at += six_hours
    return points
