"""Attacks on the stream's device table and the ticket store's device facts, on the pure cores.

* Inventory poisoning: a record dated 2099 must not outrank every later correct update.
* State bound: the largest report the contract accepts, daily for a year, must never make a
  table value larger than ``MAX_STATE_BYTES``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetpulse.alerts.consumer import future_dated
from fleetpulse.alerts.policy import PolicyState
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceInventory, DiskHealth, HealthReport, encode
from fleetpulse.models.registry import rule_scorers
from fleetpulse.models.state import MAX_STATE_BYTES, DeviceState, apply_report_in_place, fit_in_place, state_bytes
from fleetpulse.streams.processing import DeviceRecord, RawRecord
from fleetpulse.streams.settings import StreamSettings
from tests.alerts_support import make_inventory, service
from tests.unit.largest_report import DEVICE_ID, daily_rounds, largest_report
from tests.unit.test_stream_processing import NOW, TOPICS, Table, enrolment_raw, processor, raw, report_raw
from tests.unit.test_stream_processing import report as health_report

FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
SKEW = StreamSettings().max_clock_skew


def inventory_raw(device: str, site: str, updated_at: datetime, offset: int = 0) -> RawRecord:
    inv = DeviceInventory(device_id=device, kind="laptop", site=site, updated_at=updated_at)
    return raw(TOPICS.inventory, encode(inv), device.encode(), offset)


def test_future_dated_inventory_is_dead_lettered_and_later_updates_apply() -> None:
    table, proc = Table(), processor()
    poisoned = table.run(proc, [inventory_raw("pc-1", "Attacker", FUTURE)])
    assert [d.error_kind for d in poisoned.dead_letters] == ["clock_skew"]
    assert "2099-01-01" in poisoned.dead_letters[0].reason
    assert "pc-1" not in table.data
    correct = table.run(proc, [inventory_raw("pc-1", "Town Hall", NOW - timedelta(hours=1), offset=1)])
    assert not correct.dead_letters
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.site == "Town Hall"
    # within the tolerance (a clock a few minutes fast) is accepted, beyond it is not
    edge = table.run(proc, [inventory_raw("pc-1", "Library", NOW + SKEW, offset=2)])
    assert not edge.dead_letters
    late = table.run(proc, [inventory_raw("pc-1", "Attacker", NOW + SKEW + timedelta(seconds=1), offset=3)])
    assert [d.error_kind for d in late.dead_letters] == ["clock_skew"]
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.site == "Library"


def test_a_future_date_already_in_the_table_does_not_block_correct_updates() -> None:
    table, proc = Table(), processor()
    table.data["pc-1"] = DeviceRecord(
        state=DeviceState(device_id="pc-1", site="Attacker"), inventory_at=FUTURE
    ).to_bytes()
    result = table.run(proc, [inventory_raw("pc-1", "Town Hall", NOW - timedelta(days=1))])
    assert not result.dead_letters
    record = DeviceRecord.from_bytes(table.data["pc-1"])
    assert (record.state.site, record.inventory_at) == ("Town Hall", NOW - timedelta(days=1))
    # and the order of correct records holds again: an older one is a stale replay
    stale = table.run(proc, [inventory_raw("pc-1", "Old", NOW - timedelta(days=2), offset=1)])
    assert [d.error_kind for d in stale.dead_letters] == ["stale_replay"]


def test_ticket_consumer_rule_refuses_future_inventory() -> None:
    assert future_dated(make_inventory(updated_at=NOW), NOW, SKEW) is None
    assert future_dated(make_inventory(updated_at=NOW + SKEW), NOW, SKEW) is None
    reason = future_dated(make_inventory(updated_at=FUTURE), NOW, SKEW)
    assert reason is not None
    assert "2099-01-01" in reason


def test_ticket_store_applies_correct_updates_after_a_future_dated_record(tmp_path: Path) -> None:
    store = TicketStore.open(f"sqlite:///{tmp_path}/t.db")
    try:
        svc = service(store)
        not_after = NOW + SKEW
        assert svc.apply_inventories([make_inventory(site="Attacker", updated_at=FUTURE)], not_after=not_after) == 0
        assert svc.apply_inventories([make_inventory(site="Town Hall", updated_at=NOW)], not_after=not_after) == 1
        assert store.get_device("pc-0001").site == "Town Hall"  # type: ignore[union-attr]
        # a future date stored by a version without the check is overwritten by the next correct record
        assert svc.apply_inventories([make_inventory(site="Attacker", updated_at=FUTURE)]) == 1
        assert svc.apply_inventories([make_inventory(site="Library", updated_at=NOW)], not_after=not_after) == 1
        assert store.get_device("pc-0001").site == "Library"  # type: ignore[union-attr]
        assert svc.apply_inventories([make_inventory(site="Old", updated_at=NOW - timedelta(days=1))], not_after) == 0
    finally:
        store.close()


def test_largest_valid_report_daily_for_250_days_stays_under_the_state_bound() -> None:
    rounds = daily_rounds(NOW - timedelta(days=250), 250)
    unbounded = DeviceState(device_id=DEVICE_ID)
    for report in rounds:
        apply_report_in_place(unbounded, report)
    assert state_bytes(unbounded) > 0.9 * MAX_STATE_BYTES  # the attack: about 60 KB of history, alert states on top

    table, proc = Table(), processor(scorers=rule_scorers())
    table.run(proc, [inventory_raw(DEVICE_ID, "Town Hall", NOW - timedelta(days=300)), enrolment_raw(DEVICE_ID)])
    sizes = []
    for offset, report in enumerate(rounds, start=1):
        result = table.run(proc, [report_raw(report, offset)])
        assert result.counts["accepted"] == 1, result.dead_letters
        sizes.append(len(table.data[DEVICE_ID]))
    assert max(sizes) <= MAX_STATE_BYTES
    record = DeviceRecord.from_bytes(table.data[DEVICE_ID])
    newest = rounds[-1].collected_at.date().toordinal()
    assert len(record.state.disks) == 8
    assert all(disk.series.days[-1] == newest for disk in record.state.disks.values())  # the newest day is kept
    assert record.state.battery is not None
    assert record.state.battery.series.days[-1] == newest
    assert record.state.site == "Town Hall"
    assert {key.split(":")[0] for key in record.policies} >= {"disk", "battery"}  # alert states survive


def test_a_state_over_the_bound_loses_its_oldest_days_first() -> None:
    state = DeviceState(device_id=DEVICE_ID)
    rounds = daily_rounds(NOW - timedelta(days=250), 250)
    for report in rounds:
        apply_report_in_place(state, report)
    bound = 16 * 1024  # the eight disks alone keep about 13.5 KB of names, models and one day each
    assert fit_in_place(state, bound) <= bound
    newest = rounds[-1].collected_at.date().toordinal()
    assert len(state.disks) == 8
    assert all(disk.series.days[-1] == newest for disk in state.disks.values())  # the newest day is kept
    assert state.battery is not None
    assert state.battery.series.days[-1] == newest
    assert state.device.days[0] > newest - 35  # the oldest days went first


def test_thinning_is_deterministic() -> None:
    def run() -> bytes:
        record = DeviceRecord(state=DeviceState(device_id=DEVICE_ID))
        for report in daily_rounds(NOW - timedelta(days=120), 120):
            apply_report_in_place(record.state, report)
        return record.to_bytes()

    first = run()
    assert len(first) <= MAX_STATE_BYTES
    assert run() == first
    record = DeviceRecord.from_bytes(first)
    assert record.to_bytes() == first  # a value within the bound is stored as it is


def test_alert_states_of_rotated_disk_ids_cannot_grow_the_record_without_end() -> None:
    """Every report names 32 new failing disks: each scored disk leaves an alert state behind."""
    table, proc = Table(), processor(scorers=rule_scorers())
    table.run(proc, [enrolment_raw(DEVICE_ID)])
    template = largest_report(1, NOW).model_dump()
    days = 120
    for day in range(days):
        disks = [DiskHealth(name=f"d{i}", serial_hash=f"rot-{day}-{i}", reallocated_sectors=5000) for i in range(32)]
        body = {**template, "seq": day + 1, "collected_at": NOW - timedelta(days=days - day), "disks": disks}
        table.run(proc, [report_raw(HealthReport.model_validate(body), day)])
        assert len(table.data[DEVICE_ID]) <= MAX_STATE_BYTES
    record = DeviceRecord.from_bytes(table.data[DEVICE_ID])
    tracked = {f"disk:{key}" for key in record.state.disks}
    assert tracked <= record.policies.keys()  # the disks still reporting keep their alert state
    assert len(record.policies) < days * 8 / 3  # most of the 960 scored disks' states are gone


def _planted(table: Table, device: str, change: Callable[[DeviceRecord], None]) -> None:
    """Rewrite the device's stored value as a hostile changelog would: fields set without validation."""
    record = DeviceRecord.from_bytes(table.data[device])
    change(record)
    table.data[device] = record.to_bytes()


def _year_one(record: DeviceRecord) -> None:
    record.state.last_collected_at = datetime(1, 1, 1, tzinfo=UTC)


def _cleared_in_9999(record: DeviceRecord) -> None:
    record.policies = {
        key: PolicyState().model_copy(update={"cleared_at": datetime.max.replace(tzinfo=UTC)})
        for key in record.policies
    }


@pytest.mark.parametrize("change", [_year_one, _cleared_in_9999])
def test_a_stored_date_no_device_reports_is_an_unreadable_state_not_a_crash(
    change: Callable[[DeviceRecord], None],
) -> None:
    """Date arithmetic on year 1 or 9999 raises OverflowError: such a value must not even decode (the
    worker then resets the device's state, ``state_reset``), as the contract refuses it in a report."""
    table, proc = Table("pc-1"), processor()
    table.run(proc, [report_raw(health_report("pc-1", s, realloc=80), s) for s in range(3)])
    _planted(table, "pc-1", change)
    with pytest.raises(ValueError, match=r"outside 2000\.\.2100"):
        DeviceRecord.from_bytes(table.data["pc-1"])


def test_an_overflow_in_processing_is_a_dead_letter_and_one_in_the_last_scoring_a_count() -> None:
    """Were such a date to reach the processor anyway (a state built in memory), the batch still completes."""
    table, proc = Table("pc-1", "pc-2"), processor()
    table.run(proc, [report_raw(health_report(d, s, realloc=80), s) for d in ("pc-1", "pc-2") for s in range(3)])
    year_one = DeviceRecord.from_bytes(table.data["pc-1"])
    _year_one(year_one)
    cooling = DeviceRecord.from_bytes(table.data["pc-2"])
    _cleared_in_9999(cooling)
    held = {"pc-1": year_one, "pc-2": cooling}

    result = proc.process_batch(
        [report_raw(health_report(d, 3, realloc=90), 3) for d in ("pc-1", "pc-2")], lambda _, device: held[device], NOW
    )

    assert [(d.key, d.error_kind) for d in result.dead_letters] == [("pc-1", "processing_error")]
    assert "OverflowError" in result.dead_letters[0].reason
    assert result.counts["scoring_error"] == 1
    assert "pc-2" in result.records
