"""The worker's retention of silent devices (streams/retention.py) and its application to the table (Pipeline).

tests/integration/test_stream_retention.py runs the same on a real worker and checks the changelog."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from fleetpulse.agents.signing import enrolment_record
from fleetpulse.alerts.policy import PolicyState
from fleetpulse.contract import DeviceControl, DeviceInventory, HealthReport, encode
from fleetpulse.models.registry import rule_scorers
from fleetpulse.settings import ServerSettings
from fleetpulse.streams import faust_internals
from fleetpulse.streams.app import create_app
from fleetpulse.streams.partitioning import default_partition
from fleetpulse.streams.processing import DeviceRecord, RawRecord
from fleetpulse.streams.retention import Retention, dated, retention, thinned
from fleetpulse.streams.sinks import NullSink
from tests.unit.test_stream_processing import (
    NOW,
    TOPICS,
    Table,
    device_key,
    inventory_raw,
    processor,
    raw,
    report,
    report_raw,
)

KEEP_FOR = timedelta(days=180)


def stored(table: Table, device: str) -> DeviceRecord:
    return DeviceRecord.from_bytes(table.data[device])


def silent_for(days: int, *, registered: bool, device: str = "pc-1") -> DeviceRecord:
    """A PC enrolled, reporting for a few hours, then silent since ``days`` before NOW."""
    table = Table(device)
    batch = [inventory_raw(device)] if registered else []
    at = NOW - timedelta(days=days)
    batch += [report_raw(report(device, seq, realloc=50, at=at - timedelta(hours=3 - seq)), seq) for seq in (1, 2, 3)]
    result = table.run(processor(), batch)
    assert result.counts["accepted"] == 3
    return stored(table, device).model_copy(update={"enrolled_at": at - timedelta(hours=4)})  # enrolled, then reported


def phone_batch(synced_days_ago: int, report: bool = True) -> list[RawRecord]:
    """What the MDM bridge publishes for a phone that last synced ``synced_days_ago``: its facts, dated by that
    sync, and its report."""
    synced = NOW - timedelta(days=synced_days_ago)
    facts = DeviceInventory(device_id="mdm-p1", kind="phone", model="Pixel 8", updated_at=synced)
    batch = [raw(TOPICS.mobile_inventory, encode(facts), b"mdm-p1")]
    if report:
        mobile = HealthReport(
            device_id="mdm-p1", seq=1, source="mdm", collected_at=synced, kind="phone", platform="android"
        )
        batch.append(raw(TOPICS.mobile, encode(mobile), b"mdm-p1", offset=1))
    return batch


def phone(synced_days_ago: int, report: bool = True) -> DeviceRecord:
    table = Table()
    table.run(processor(), phone_batch(synced_days_ago, report))
    return stored(table, "mdm-p1")


def test_a_device_heard_within_the_retention_is_kept() -> None:
    assert retention(silent_for(179, registered=True), NOW, KEEP_FOR) is Retention.KEEP
    assert retention(silent_for(179, registered=False), NOW, KEEP_FOR) is Retention.KEEP


def test_a_silent_registered_device_keeps_its_facts_key_and_dedup_position_and_loses_its_history() -> None:
    record = silent_for(181, registered=True)
    assert record.state.disks
    assert record.policies
    assert retention(record, NOW, KEEP_FOR) is Retention.THIN
    thin = DeviceRecord.from_bytes(thinned(record).to_bytes())
    assert not thin.state.disks
    assert thin.state.battery is None
    assert not thin.state.device.days
    assert thin.policies == {key: policy for key, policy in record.policies.items() if policy.raised}
    assert thin.scored_at is None
    kept = ("device_key", "inventory_at", "agent_inventory_at", "pinned_fingerprint")
    assert {k: getattr(thin, k) for k in kept} == {k: getattr(record, k) for k in kept}
    facts = ("kind", "model", "site", "last_seq", "last_collected_at")
    assert {k: getattr(thin.state, k) for k in facts} == {k: getattr(record.state, k) for k in facts}
    assert retention(thin, NOW, KEEP_FOR) is Retention.KEEP  # nothing left to thin: not rewritten every check
    assert len(thinned(record).to_bytes()) < len(record.to_bytes())


def test_a_silent_device_outside_the_register_is_erased() -> None:
    """Retired from the register (its tombstone dropped the join) or never in it."""
    assert retention(silent_for(181, registered=False), NOW, KEEP_FOR) is Retention.ERASE
    retired = silent_for(181, registered=True).model_copy(update={"inventory_at": None})
    assert retention(retired, NOW, KEEP_FOR) is Retention.ERASE


def test_a_phone_is_kept_while_it_syncs_with_the_mdm_and_erased_once_it_stops() -> None:
    """What a leaked MDM certificate makes up stays only as long as the leak goes on."""
    assert retention(phone(10), NOW + timedelta(days=170), KEEP_FOR) is Retention.KEEP
    assert retention(phone(10), NOW + timedelta(days=171), KEEP_FOR) is Retention.ERASE
    assert retention(phone(10, report=False), NOW + timedelta(days=171), KEEP_FOR) is Retention.ERASE


def test_a_phone_silent_past_the_retention_is_not_stored_again_by_the_next_export() -> None:
    """Every export names every phone the MDM still lists: one the pass erased would come back each day."""
    table = Table()
    result = table.run(processor(), phone_batch(181))
    assert result.counts["mdm_silent"] == 2  # its facts and its report
    assert not result.dead_letters
    assert table.data == {}


def test_a_device_that_never_reported_is_kept_while_registered() -> None:
    """Its agent not yet reporting: no history to age, and the register says it is an asset, enrolled or not."""
    table = Table("pc-1")
    table.run(processor(), [inventory_raw("pc-1"), inventory_raw("pc-2")])
    for device in ("pc-1", "pc-2"):
        assert retention(stored(table, device), NOW + timedelta(days=3650), KEEP_FOR) is Retention.KEEP


def test_an_enrolment_no_report_follows_ages_out_like_a_report() -> None:
    """The agents' shared Kafka credential under ``unknown_devices = "accept"`` enrols any made-up device id (an
    enrolment is signed with the key it carries), and IT retiring a device before its first report leaves its key:
    kept because enrolled, each would stay in the table and its changelog for good."""
    made_up = [f"made-up-{n}" for n in range(50)]
    table = Table(*made_up)
    assert len(table.data) == 50
    for device in made_up:
        record = stored(table, device)
        assert record.enrolled_at == NOW - timedelta(days=30)  # the enrolment's created_at
        assert retention(record, NOW + timedelta(days=149), KEEP_FOR) is Retention.KEEP
        assert retention(record, NOW + timedelta(days=151), KEEP_FOR) is Retention.ERASE
    retired = Table("pc-1")
    retired.run(processor(), [inventory_raw("pc-1"), raw(TOPICS.inventory, None, b"pc-1", offset=1)])
    assert retention(stored(retired, "pc-1"), NOW + timedelta(days=151), KEEP_FOR) is Retention.ERASE


def test_a_pin_it_set_for_a_device_not_yet_enrolled_is_kept_until_the_device_enrols() -> None:
    """IT pins a laptop's key before it leaves storage: erased after the retention, an attacker's enrolment with the
    agents' credential would win and the genuine agent be refused (the review's proof of concept)."""
    control = DeviceControl(
        device_id="pc-9", action="re_enrol", fingerprint="ab" * 32, issued_by="it-admin", issued_at=NOW
    )
    table = Table()
    table.run(processor(), [raw(TOPICS.control, encode(control), b"pc-9")])
    pinned = stored(table, "pc-9")
    assert (pinned.device_key, pinned.pinned_fingerprint, pinned.enrolled_at) == (None, "ab" * 32, NOW)
    assert retention(pinned, NOW + timedelta(days=3650), KEEP_FOR) is Retention.KEEP
    legacy = pinned.model_copy(update={"enrolled_at": None})
    assert retention(legacy, NOW + timedelta(days=3650), KEEP_FOR) is Retention.KEEP


def test_a_pinned_device_silent_past_the_retention_loses_its_history_and_keeps_the_pin() -> None:
    """IT re-enrols a device that then never comes back: the pin stays, its history does not (the review's
    finding: kept whole, it outlived the retention)."""
    record = silent_for(181, registered=False)
    pinned = record.model_copy(update={"device_key": None, "pinned_fingerprint": "ab" * 32})
    assert retention(pinned, NOW, KEEP_FOR) is Retention.THIN
    thin = thinned(pinned)
    assert (thin.pinned_fingerprint, thin.state.disks) == ("ab" * 32, {})
    assert retention(thin, NOW + timedelta(days=3650), KEEP_FOR) is Retention.KEEP


def test_an_enrolment_dated_ahead_counts_from_its_receive_time() -> None:
    """The enrolment's date is the device's word: dated years ahead, it would keep a made-up id for good."""
    signed = enrolment_record("made-up", device_key("made-up"), NOW + timedelta(days=3650))
    table = Table()
    table.run(processor(), [RawRecord(TOPICS.health, 0, 0, signed.key, signed.value, signed.headers)])
    record = stored(table, "made-up")
    assert record.enrolled_at == NOW
    assert retention(record, NOW + timedelta(days=181), KEEP_FOR) is Retention.ERASE


def test_an_enrolment_stored_without_its_time_is_dated_by_the_first_pass_and_ages_out_from_then() -> None:
    legacy = stored(Table("pc-1"), "pc-1").model_copy(update={"enrolled_at": None})
    upgrade = NOW + timedelta(days=3650)
    assert retention(legacy, upgrade, KEEP_FOR) is Retention.DATE
    record = DeviceRecord.from_bytes(dated(legacy, upgrade).to_bytes())
    assert record.enrolled_at == upgrade
    assert record.device_key == legacy.device_key
    assert retention(record, upgrade + timedelta(days=179), KEEP_FOR) is Retention.KEEP
    assert retention(record, upgrade + timedelta(days=181), KEEP_FOR) is Retention.ERASE


def test_what_a_tombstone_leaves_of_facts_no_device_reported_under_is_erased() -> None:
    """Facts then a tombstone, from the MDM bridge's certificate or IT retiring a device before its agent reported:
    no key, no report, no register entry. Kept, each would stay in the table for good."""
    table = Table()
    table.run(processor(), phone_batch(1, report=False))
    table.run(processor(), [raw(TOPICS.mobile_inventory, None, b"mdm-p1", offset=2)])
    table.run(processor(), [inventory_raw("pc-2"), raw(TOPICS.inventory, None, b"pc-2", offset=1)])
    for device in ("mdm-p1", "pc-2"):
        left = stored(table, device)
        assert left.inventory_at is None
        assert retention(left, NOW, KEEP_FOR) is Retention.ERASE


def test_thinning_keeps_a_raised_alert_so_its_ticket_can_clear() -> None:
    record = silent_for(181, registered=True)
    raised = {key: policy.model_copy(update={"raised": True}) for key, policy in record.policies.items()}
    record = record.model_copy(update={"policies": {**raised, "battery:": PolicyState()}})
    thin = thinned(record)
    assert thin.policies == raised
    assert retention(thin, NOW, KEEP_FOR) is Retention.KEEP  # a raised alert alone is not history to thin again


class FakeConsumer:
    def __init__(self, *tps: TP) -> None:
        self.tps = set(tps)

    def assignment(self) -> set[TP]:
        return self.tps


class FakeApp:
    rebalancing = False
    in_recovery = False

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


def test_the_worker_thins_and_erases_its_silent_devices_with_changelog_tombstones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path, "partitions": 4}})
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    records = {
        b"pc-thin": silent_for(181, registered=True, device="pc-thin"),
        b"pc-gone": silent_for(181, registered=False, device="pc-gone"),
        b"pc-live": silent_for(10, registered=True, device="pc-live"),
        b"pc-old": stored(Table("pc-old"), "pc-old").model_copy(update={"enrolled_at": None}),  # before enrolled_at
    }
    everywhere = tuple(range(4))
    partitions = {key: default_partition(key, everywhere) for key in records}
    table = pipeline.table
    for key, record in records.items():
        table.data.write_batch(partitions[key], [(key, record.to_bytes())])
    changelog: list[tuple[int, bytes | None, bytes | None]] = []

    async def send_batches(app: Any, topic: str, partition: int, items: Any) -> list[Any]:
        changelog.extend((partition, key, value) for key, value in items)
        return []

    monkeypatch.setattr(faust_internals, "send_batches", send_batches)
    pipeline.app = FakeApp(FakeConsumer(*(TP(pipeline.topics.health, p) for p in everywhere)))

    done = asyncio.run(pipeline.apply_retention(NOW, slice_size=1))

    assert done == {"thinned": 1, "erased": 1, "kept": 1, "dated": 1}
    assert table.read(partitions[b"pc-gone"], b"pc-gone") is None
    thin = DeviceRecord.from_bytes(table.read(partitions[b"pc-thin"], b"pc-thin") or b"")
    assert not thin.state.disks
    assert thin.device_key == records[b"pc-thin"].device_key
    assert table.read(partitions[b"pc-live"], b"pc-live") == records[b"pc-live"].to_bytes()
    old = DeviceRecord.from_bytes(table.read(partitions[b"pc-old"], b"pc-old") or b"")
    assert (old.enrolled_at, old.device_key) == (NOW, records[b"pc-old"].device_key)  # dated by the pass
    assert sorted((key, value is None) for _, key, value in changelog) == [
        (b"pc-gone", True),
        (b"pc-old", False),
        (b"pc-thin", False),
    ]
    assert all(partition == partitions[key] for partition, key, _ in changelog)
    metric = pipeline.metrics.registry.get_sample_value
    assert metric("fleetpulse_stream_state_retention_total", {"action": "erased"}) == 1.0
    assert metric("fleetpulse_stream_state_retention_total", {"action": "thinned"}) == 1.0
    assert metric("fleetpulse_stream_state_retention_total", {"action": "dated"}) == 1.0


def test_a_partition_the_worker_does_not_own_is_left_to_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path, "partitions": 4}})
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    record = silent_for(181, registered=False)
    home = default_partition(b"pc-1", tuple(range(4)))
    pipeline.table.data.write_batch(home, [(b"pc-1", record.to_bytes())])
    pipeline.app = FakeApp(FakeConsumer(*(TP(pipeline.topics.health, p) for p in range(4) if p != home)))
    assert asyncio.run(pipeline.apply_retention(NOW)) == {}
    assert pipeline.table.read(home, b"pc-1") is not None


def test_a_changelog_that_refuses_the_writes_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No input record replays these writes: a store changed without its changelog would disagree for good."""
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path, "partitions": 4}})
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    home = default_partition(b"pc-1", tuple(range(4)))
    value = silent_for(181, registered=False).to_bytes()
    pipeline.table.data.write_batch(home, [(b"pc-1", value)])

    async def refused(*_: Any) -> list[Any]:
        raise RuntimeError("NotEnoughReplicas")

    monkeypatch.setattr(faust_internals, "send_batches", refused)
    pipeline.app = FakeApp(FakeConsumer(TP(pipeline.topics.health, home)))
    with pytest.raises(RuntimeError, match="NotEnoughReplicas"):
        asyncio.run(pipeline.apply_retention(NOW))
    assert pipeline.table.read(home, b"pc-1") == value


def test_a_pass_neither_refreshes_nor_counts_the_cached_states_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache keeps devices in use: an hourly pass over every device must not make idle ones look used."""
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path, "partitions": 4}})
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    records = {
        b"pc-live": silent_for(10, registered=True, device="pc-live"),
        b"pc-gone": silent_for(181, registered=False, device="pc-gone"),
    }
    clock = [1000.0]
    cache = pipeline.decoded
    cache._clock = lambda: clock[0]
    for key, record in records.items():
        partition = default_partition(key, tuple(range(4)))
        value = record.to_bytes()
        pipeline.table.data.write_batch(partition, [(key, value)])
        cache.put(partition, key, value, record)
    before = dict(cache._entries)

    async def acknowledged(*_: Any) -> list[Any]:
        return []

    monkeypatch.setattr(faust_internals, "send_batches", acknowledged)
    pipeline.app = FakeApp(FakeConsumer(*(TP(pipeline.topics.health, p) for p in range(4))))
    clock[0] += 3600
    assert asyncio.run(pipeline.apply_retention(NOW)) == {"kept": 1, "erased": 1}
    assert (cache.hits, cache.misses) == (0, 0)
    live = (default_partition(b"pc-live", tuple(range(4))), b"pc-live")
    assert cache._entries == {live: before[live]}  # the kept one as it was (last use included), the erased one gone


def test_nothing_is_rewritten_while_faust_recovers_the_stores(tmp_path: Path) -> None:
    """Recovery applies changelog batches to the stores: a write in between would leave store and changelog apart."""
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path, "partitions": 4}})
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    home = default_partition(b"pc-1", tuple(range(4)))
    pipeline.table.data.write_batch(home, [(b"pc-1", silent_for(181, registered=False).to_bytes())])
    app = FakeApp(FakeConsumer(TP(pipeline.topics.health, home)))
    app.in_recovery = True
    pipeline.app = app
    assert asyncio.run(pipeline.apply_retention(NOW)) == {"deferred": 1}
    assert pipeline.table.read(home, b"pc-1") is not None


def test_the_retention_cannot_be_set_below_a_day() -> None:
    with pytest.raises(ValueError, match="state_retention"):
        ServerSettings.model_validate({"streams": {"state_retention": "PT1H"}})
