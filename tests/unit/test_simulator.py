"""Fleet simulator: reproducibility, contract conformance, calibration and ground-truth consistency."""

from __future__ import annotations

import csv
import itertools
import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetpulse.agents.simulator import (
    DISK_AFR,
    DISK_PREDICTABLE,
    FleetMix,
    FleetSimulator,
    stable_digest,
)
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    Component,
    DeviceKind,
    DiskHealth,
    DiskKind,
    HealthReport,
    ReportSource,
    decode_report,
    encode,
)

START = datetime(2025, 1, 1, tzinfo=UTC)


def _by_device(reports: list[HealthReport]) -> dict[str, list[HealthReport]]:
    out: dict[str, list[HealthReport]] = defaultdict(list)
    for r in reports:
        out[r.device_id].append(r)
    return out


def _errors(disk: DiskHealth) -> int:
    return (disk.reallocated_sectors or 0) + (disk.current_pending_sectors or 0) + (disk.media_errors or 0)


def test_same_seed_same_bytes_and_different_seed_differs() -> None:
    a = stable_digest(FleetSimulator(150, 11, START, 20).reports())
    b = stable_digest(FleetSimulator(150, 11, START, 20).reports())
    c = stable_digest(FleetSimulator(150, 12, START, 20).reports())
    assert a == b
    assert a != c
    inv_a = [encode(i) for i in FleetSimulator(150, 11, START, 20).inventory()]
    inv_b = [encode(i) for i in FleetSimulator(150, 11, START, 20).inventory()]
    assert inv_a == inv_b


def test_reports_are_time_ordered_with_per_device_seq_from_zero() -> None:
    sim = FleetSimulator(120, 3, START, 15, report_interval=timedelta(hours=6))
    reports = list(sim.reports())
    times = [r.collected_at for r in reports]
    assert times == sorted(times)
    assert all(START <= t < START + timedelta(days=15) for t in times)
    for series in _by_device(reports).values():
        assert [r.seq for r in series] == list(range(len(series)))
    # Around 4 reports per device per day, minus the few a device misses.
    assert 0.85 * 120 * 15 * 4 < len(reports) <= 120 * 15 * 4


def test_pcs_come_from_simulator_and_mobiles_only_carry_mdm_fields() -> None:
    sim = FleetSimulator(300, 5, START, 3)
    for r in sim.reports():
        if r.kind in (DeviceKind.PHONE, DeviceKind.TABLET):
            assert r.source is ReportSource.MDM
            assert r.thermal is None
            assert r.stability is None
            assert r.memory is None
            assert [d.name for d in r.disks] == ["internal"]
            assert r.disks[0].reallocated_sectors is None
            if r.battery is not None:
                assert r.battery.design_capacity == 100.0
        else:
            assert r.source is ReportSource.SIMULATOR
            assert r.stability is not None
            assert r.system is not None
            assert r.disks, "a running PC has a system disk"
            assert (r.battery is not None) == (r.kind is DeviceKind.LAPTOP) or r.kind is DeviceKind.LAPTOP


def test_inventory_is_complete_and_free_of_person_data() -> None:
    sim = FleetSimulator(500, 9, START, 5)
    inventory = sim.inventory()
    assert len({i.device_id for i in inventory}) == 500
    for item in inventory:
        assert item.vendor
        assert item.model
        assert item.site
        assert item.department
        assert item.purchase_date is not None
        assert item.warranty_end is not None
        assert item.purchase_date < item.warranty_end
        assert item.purchase_date <= START.date()
        # Only organisational units: nothing that could name or contact a person.
        assert "@" not in item.model_dump_json()


def test_default_mix_matches_the_municipality() -> None:
    sim = FleetSimulator(20_000, 1, START, 1)
    kinds = [i.kind for i in sim.inventory()]
    pcs = sum(k in (DeviceKind.LAPTOP, DeviceKind.DESKTOP) for k in kinds)
    laptops = kinds.count(DeviceKind.LAPTOP)
    assert 0.48 < pcs / len(kinds) < 0.54  # ~26k PCs of ~51k devices
    assert 0.57 < laptops / pcs < 0.63  # 60 % of PCs are laptops


def test_custom_mix_and_argument_validation() -> None:
    sim = FleetSimulator(200, 1, START, 1, mix=FleetMix(laptop=1, desktop=0, phone=0, tablet=0))
    assert {i.kind for i in sim.inventory()} == {DeviceKind.LAPTOP}
    with pytest.raises(ValueError, match="mix"):
        FleetMix(laptop=-1)
    with pytest.raises(ValueError, match="aware"):
        FleetSimulator(10, 1, datetime(2025, 1, 1), 1)  # noqa: DTZ001
    with pytest.raises(ValueError, match="devices"):
        FleetSimulator(0, 1, START, 1)
    with pytest.raises(ValueError, match="interval"):
        FleetSimulator(1, 1, START, 1, report_interval=timedelta(0))


@pytest.mark.slow
def test_disk_failure_rates_match_calibration() -> None:
    """One simulated year: annual failure fraction per drive kind within sampling tolerance."""
    sim = FleetSimulator(60_000, 2024, START, 365)
    population = sim.disk_population()
    failures: dict[DiskKind, int] = defaultdict(int)
    predictable: dict[DiskKind, int] = defaultdict(int)
    for g in sim.ground_truth():
        if g.component is Component.DISK:
            kind = DiskKind(g.cause.split("_")[0])
            failures[kind] += 1
            predictable[kind] += g.predictable
    for kind, afr in DISK_AFR.items():
        observed = failures[kind] / population[kind]
        assert abs(observed - afr) < 0.3 * afr, (kind, observed, afr)
    hdd = failures[DiskKind.HDD]
    assert abs(predictable[DiskKind.HDD] / hdd - DISK_PREDICTABLE[DiskKind.HDD]) < 0.12


def test_some_healthy_drives_show_small_nonzero_counters() -> None:
    """Precision must not be trivially perfect: like Backblaze, healthy drives with reallocations exist."""
    sim = FleetSimulator(8_000, 77, START, 30)
    failing = {g.component_id for g in sim.ground_truth() if g.component is Component.DISK}
    healthy_flagged = healthy = 0
    for index in range(len(sim)):
        report = sim.report_at(index, START)
        if report is None:
            continue
        for disk in report.disks:
            if disk.kind is DiskKind.HDD and disk.serial_hash not in failing:
                healthy += 1
                healthy_flagged += (disk.reallocated_sectors or 0) > 0 or (disk.current_pending_sectors or 0) > 0
    assert healthy > 300
    assert 0.03 < healthy_flagged / healthy < 0.12


def test_ground_truth_is_visible_in_the_reports() -> None:
    sim = FleetSimulator(300, 21, START, 120, failure_scale=25.0)
    truth = sim.ground_truth()
    assert {g.component for g in truth} == {
        Component.DISK,
        Component.BATTERY,
        Component.THERMAL,
        Component.DEVICE,
        Component.MEMORY,
    }
    assert any(not g.predictable for g in truth if g.component is Component.DISK)
    by_device = _by_device(list(sim.reports()))
    checked = 0
    for g in truth:
        series = by_device[g.device_id]
        before = [r for r in series if r.collected_at < g.fails_at]
        after = [r for r in series if r.collected_at >= g.fails_at]
        if g.component is Component.DISK:
            assert not any(d.serial_hash == g.component_id for r in after for d in r.disks)
            seen = [d for r in before for d in r.disks if d.serial_hash == g.component_id]
            if not seen:
                continue
            if g.predictable and g.signal_from is not None and g.signal_from < before[-1].collected_at:
                last = seen[-1]
                assert _errors(last) > 0 or last.critical_warning, f"{g.device_id}: predictable failure invisible"
                assert _errors(last) >= _errors(seen[0])
                checked += 1
            elif not g.predictable:
                counters = {(d.reallocated_sectors, d.current_pending_sectors, d.media_errors) for d in seen}
                assert len(counters) == 1, "a sudden failure must not be announced"
        elif g.component is Component.BATTERY:
            assert all(r.battery is None for r in after)
            if g.cause == "capacity_fade" and before and before[-1].battery is not None:
                assert before[-1].battery.health_ratio < 0.75
        elif g.component is Component.THERMAL:
            assert all(r.thermal is None for r in after)
            hot = [r.thermal.cpu_max_c for r in before[-3:] if r.thermal and r.thermal.cpu_max_c]
            if hot:
                assert max(hot) > 80.0
        elif g.component is Component.DEVICE:
            assert after == [], "a dead device stops reporting"
        elif g.component is Component.MEMORY:
            assert after == [], "a dead memory module stops the device"
            if g.predictable and before and g.signal_from is not None and g.signal_from < before[-1].collected_at:
                assert before[-1].memory is not None
                assert (before[-1].memory.correctable_errors or 0) > 0
    assert checked >= 3


def test_live_round_is_stamped_now_and_continues_seq() -> None:
    sim = FleetSimulator(200, 4, START, 30, report_interval=timedelta(minutes=1))
    now = START + timedelta(days=10, hours=3)
    first = list(sim.live_reports(now))
    second = list(sim.live_reports(now + timedelta(minutes=1)))
    assert len(first) > 180
    assert len(second) > 180
    assert all(r.collected_at == now for r in first)
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in first + second:
        seqs[r.device_id].append(r.seq)
    assert all(s == sorted(set(s)) for s in seqs.values())
    assert max(max(s) for s in seqs.values()) == 1


def test_dead_device_reports_nothing_through_report_at() -> None:
    sim = FleetSimulator(400, 8, START, 200, failure_scale=20.0)
    dead = next(g for g in sim.ground_truth() if g.component is Component.DEVICE)
    index = sim.device_ids().index(dead.device_id)
    assert sim.report_at(index, dead.fails_at + timedelta(hours=1)) is None


def test_battery_noise_resembles_the_real_macbook_log(shared_data: Path) -> None:
    """Reading-to-reading change of full-charge capacity: real log median ~1.2 %."""
    with (shared_data / "battery" / "macbook_single_laptop_capacity_log_2020-2021.csv").open() as fh:
        caps = [float(row["FullCapacity"]) for row in csv.DictReader(fh) if row["FullCapacity"]]
    real = statistics.median(abs(b - a) / a for a, b in itertools.pairwise(caps))
    sim = FleetSimulator(300, 6, START, 60, mix=FleetMix(laptop=1, desktop=0, phone=0, tablet=0))
    changes = []
    for series in _by_device(list(sim.reports())).values():
        full = [r.battery.full_charge_capacity for r in series if r.battery is not None]
        changes += [abs(b - a) / a for a, b in itertools.pairwise(full) if a > 0]
    simulated = statistics.median(changes)
    assert real / 2 < simulated < real * 2, (real, simulated)
    assert max(changes) > 0.04, "occasional outliers like the real log"


@given(seed=st.integers(min_value=0, max_value=2**63), devices=st.integers(min_value=1, max_value=30))
def test_every_report_round_trips_through_the_contract(seed: int, devices: int) -> None:
    sim = FleetSimulator(devices, seed, START, 3)
    for report in sim.reports():
        assert decode_report(encode(report)) == report


def test_report_at_regenerates_any_report_of_the_window() -> None:
    sim = FleetSimulator(50, 31, START, 10)
    ids = sim.device_ids()
    for report in list(sim.reports())[::37]:
        assert sim.report_at(ids.index(report.device_id), report.collected_at, report.seq) == report
