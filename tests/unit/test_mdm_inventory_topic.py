"""The MDM bridge's inventory topic: the attack of a leaked bridge certificate on IT's asset register.

Kafka ACLs cannot restrict which keys a principal writes, so the bridge's principal writes a topic of
its own, and both consumers of inventory (stream worker, ticket consumer) join a record from it only
for a device of the bridge: an ``mdm-`` pseudonym of a kind the bridge reports. The attacker holds the
bridge's certificate and knows the wire format; the victim is a PC in IT's register.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from fleetpulse.alerts.store.repository import TicketFilter, TicketStore
from fleetpulse.contract import Component, DeadLetter, DeviceInventory, DeviceKind, Topics, decode, encode
from fleetpulse.contract.auth import mdm_inventory_refusal
from fleetpulse.streams.processing import DeviceRecord, RawRecord
from tests.alerts_support import NOW as ALERT_AT
from tests.alerts_support import make_alert, make_inventory, service
from tests.unit.test_contract_poison import FakeKafkaConsumer, consumer_over, store
from tests.unit.test_stream_processing import NOW, TOPICS, Table, inventory_raw, processor, raw, report, report_raw

__all__ = ["store"]  # fixture: a SQLite ticket store

PHONE = "mdm-0a1b2c3d"


def facts(device: str, kind: DeviceKind, site: str, at_hours_ago: float = 1.0) -> DeviceInventory:
    return DeviceInventory(
        device_id=device,
        kind=kind,
        model="forged" if site == "other" else "iPhone 13",
        site=site,
        warranty_end=date(2031, 1, 1),
        updated_at=NOW - timedelta(hours=at_hours_ago),
    )


def mobile_raw(inventory: DeviceInventory, offset: int = 0) -> RawRecord:
    return raw(TOPICS.mobile_inventory, encode(inventory), inventory.device_id.encode(), offset)


def registered_pc() -> Table:
    table = Table("pc-1")
    table.run(processor(), [inventory_raw("pc-1"), report_raw(report("pc-1", 1))])
    return table


def test_the_rule_admits_only_the_bridges_devices() -> None:
    assert mdm_inventory_refusal(PHONE, DeviceKind.PHONE) is None
    assert mdm_inventory_refusal(PHONE, DeviceKind.TABLET) is None
    assert mdm_inventory_refusal(PHONE, DeviceKind.LAPTOP) is None  # Intune's battery-health rows
    assert mdm_inventory_refusal(PHONE, None) is None  # the bridge's own tombstone
    assert "IT's register" in str(mdm_inventory_refusal("pc-1", DeviceKind.PHONE))
    assert "IT's register" in str(mdm_inventory_refusal("pc-1", None))
    assert "'desktop'" in str(mdm_inventory_refusal(PHONE, DeviceKind.DESKTOP))


def test_the_worker_refuses_a_pc_on_the_mdm_inventory_topic_and_keeps_its_register_facts() -> None:
    table = registered_pc()
    before = table.data["pc-1"]
    moved = facts("pc-1", DeviceKind.DESKTOP, "other", at_hours_ago=0)
    disguised = facts("pc-1", DeviceKind.PHONE, "other", at_hours_ago=0)

    result = table.run(
        processor(),
        [mobile_raw(moved), mobile_raw(disguised, 1), raw(TOPICS.mobile_inventory, None, b"pc-1", 2)],
    )

    assert [(d.source_topic, d.error_kind) for d in result.dead_letters] == [
        (TOPICS.mobile_inventory, "unauthenticated")
    ] * 3
    assert "pc-1 is not the MDM bridge's" in result.dead_letters[0].reason
    assert "pc-1" not in result.records
    assert "pc-1" not in result.last_record_of
    assert table.data["pc-1"] == before
    record = DeviceRecord.from_bytes(table.data["pc-1"])
    assert (record.state.site, record.state.warranty_end, record.state.model) == ("Town Hall", None, "T14")
    assert record.inventory_at == NOW - timedelta(days=1)


def test_the_worker_refuses_a_kind_the_bridge_never_reports_even_for_its_ids() -> None:
    table = Table()
    result = table.run(processor(), [mobile_raw(facts(PHONE, DeviceKind.DESKTOP, "other"))])
    assert [d.error_kind for d in result.dead_letters] == ["unauthenticated"]
    assert "'desktop'" in result.dead_letters[0].reason
    assert result.records == {}
    assert table.data == {}


def test_the_worker_joins_an_mdm_phone_like_register_inventory() -> None:
    table, proc = Table(), processor()
    joined = table.run(proc, [mobile_raw(facts(PHONE, DeviceKind.PHONE, "HQ"))])
    assert joined.dead_letters == []
    assert joined.counts["inventory"] == 1
    record = DeviceRecord.from_bytes(table.data[PHONE])
    assert (record.state.kind, record.state.site, record.inventory_at) == ("phone", "HQ", NOW - timedelta(hours=1))

    older = facts(PHONE, DeviceKind.PHONE, "Library", at_hours_ago=2)
    ahead = facts(PHONE, DeviceKind.PHONE, "Library", at_hours_ago=-24)
    refused = table.run(proc, [mobile_raw(older), mobile_raw(ahead, 1)])
    assert [d.error_kind for d in refused.dead_letters] == ["stale_replay", "clock_skew"]
    assert DeviceRecord.from_bytes(table.data[PHONE]).state.site == "HQ"

    table.run(proc, [raw(TOPICS.mobile_inventory, None, PHONE.encode())])  # the bridge retires its phone
    assert DeviceRecord.from_bytes(table.data[PHONE]).inventory_at is None


def test_it_register_may_still_write_a_bridge_device() -> None:
    table = Table()
    register = facts(PHONE, DeviceKind.PHONE, "HQ")
    result = table.run(processor(), [raw(TOPICS.inventory, encode(register), PHONE.encode())])
    assert result.dead_letters == []
    assert DeviceRecord.from_bytes(table.data[PHONE]).state.site == "HQ"


def _poll(
    values: list[tuple[str, bytes | None]], key: bytes, store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> list[DeadLetter]:
    consumer, kafka_consumer, producer = consumer_over(values, store, monkeypatch, key=key)  # type: ignore[arg-type]
    try:
        assert consumer.poll_once() == len(values)
    finally:
        consumer.close()
    assert kafka_consumer.commits == 1
    topics = Topics()
    return [decode(value, DeadLetter) for topic, value in producer.sent if topic == topics.dead_letter]


def test_the_ticket_consumer_subscribes_the_mdm_inventory_topic(
    store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscribed: list[str] = []
    monkeypatch.setattr(FakeKafkaConsumer, "subscribe", lambda self, topics: subscribed.extend(topics))
    consumer_over([], store, monkeypatch)[0].close()
    assert Topics().mobile_inventory in subscribed
    assert Topics().inventory in subscribed


def test_the_ticket_consumer_refuses_a_pc_on_the_mdm_inventory_topic(
    store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = Topics()
    register = facts("pc-1", DeviceKind.LAPTOP, "Town Hall", at_hours_ago=2)
    assert _poll([(topics.inventory, encode(register))], b"pc-1", store, monkeypatch) == []

    moved = facts("pc-1", DeviceKind.DESKTOP, "other")
    disguised = facts("pc-1", DeviceKind.PHONE, "other")
    attack = [(topics.mobile_inventory, encode(moved)), (topics.mobile_inventory, encode(disguised))]
    letters = _poll([*attack, (topics.mobile_inventory, None)], b"pc-1", store, monkeypatch)

    assert [(d.source_topic, d.error_kind) for d in letters] == [(topics.mobile_inventory, "unauthenticated")] * 3
    kept = store.get_device("pc-1")
    assert kept is not None
    assert (kept.site, kept.kind, kept.updated_at) == ("Town Hall", DeviceKind.LAPTOP, register.updated_at)


def test_the_ticket_consumer_refuses_an_mdm_id_of_a_pc_kind_and_joins_an_mdm_phone(
    store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = Topics()
    desktop = facts(PHONE, DeviceKind.DESKTOP, "other")
    letters = _poll([(topics.mobile_inventory, encode(desktop))], PHONE.encode(), store, monkeypatch)
    assert [d.error_kind for d in letters] == ["unauthenticated"]
    assert store.get_device(PHONE) is None

    phone = facts(PHONE, DeviceKind.PHONE, "HQ")
    assert _poll([(topics.mobile_inventory, encode(phone))], PHONE.encode(), store, monkeypatch) == []
    joined = store.get_device(PHONE)
    assert joined is not None
    assert joined.site == "HQ"


def test_the_bridges_devices_named_as_a_pc_model_storm_apart_from_the_pcs(store: TicketStore) -> None:
    """The bridge states its laptops' models itself: 30 battery alerts of its devices under a PC's model
    within the window must not pull that PC's ticket into their storm (grouped problem, no repair of its own)."""
    svc = service(store)
    svc.apply_inventory(make_inventory("pc-1", model="Latitude 7420"))
    svc.apply_alert(make_alert("pc-1", component=Component.BATTERY, component_id="bat0"), ALERT_AT)
    for n in range(30):
        svc.apply_inventories([make_inventory(f"mdm-{n:04d}", kind=DeviceKind.LAPTOP, model="Latitude 7420")])
        svc.apply_alert(make_alert(f"mdm-{n:04d}", i=2 + n, component=Component.BATTERY, component_id="bat0"), ALERT_AT)
    (pc,) = store.list_tickets(TicketFilter(device_id="pc-1"))
    assert pc.storm_group is None
    (group,) = store.storms()
    assert group.device_model == "mdm:Latitude 7420"
    assert group.member_count == 30
