"""An agent's own inventory (MACed, on the health topic) next to IT's register, on the pure processor.

Every agent sends its inventory at start-up and daily, with only what it can read itself (kind,
vendor, model). Joined like IT's register it erased site, department and dates every day and moved
the join's date past IT's next update, which was then refused as a stale replay.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from fleetpulse.contract import DeviceInventory, encode
from fleetpulse.contract.auth import inventory_headers
from fleetpulse.models.state import DeviceState
from fleetpulse.streams.processing import DeviceRecord, RawRecord
from fleetpulse.streams.settings import StreamSettings
from tests.unit.test_stream_processing import (
    NOW,
    TOPICS,
    Table,
    device_key,
    processor,
    raw,
    report,
    report_raw,
)

REGISTER = DeviceInventory(
    device_id="pc-1",
    kind="laptop",
    model="ThinkPad T14",
    site="Town Hall",
    department="Finance",
    purchase_date=date(2023, 1, 1),
    warranty_end=date(2027, 1, 1),
    updated_at=NOW - timedelta(days=1),
)


def it_raw(inventory: DeviceInventory, offset: int = 0) -> RawRecord:
    return raw(TOPICS.inventory, encode(inventory), inventory.device_id.encode(), offset)


def agent_raw(device: str, updated_at: datetime, model: str | None = "20W0", offset: int = 0) -> RawRecord:
    """What ``Agent.spool_inventory`` sends: ``collect_inventory``'s record, MACed with the device key."""
    inventory = DeviceInventory(device_id=device, kind="laptop", vendor="LENOVO", model=model, updated_at=updated_at)
    value = encode(inventory)
    return RawRecord(TOPICS.health, 0, offset, device.encode(), value, inventory_headers(device_key(device), value))


def stored(table: Table, device: str = "pc-1") -> DeviceRecord:
    return DeviceRecord.from_bytes(table.data[device])


def test_agent_inventory_keeps_it_facts_and_it_updates_still_apply() -> None:
    """The reviewer's scenario: IT's register, the agent's daily record, then IT's correction dated before it."""
    table, proc = Table("pc-1"), processor()
    table.run(proc, [it_raw(REGISTER)])
    daily = table.run(proc, [agent_raw("pc-1", NOW - timedelta(minutes=5))])
    assert not daily.dead_letters
    record = stored(table)
    state = record.state
    assert (state.site, state.department) == ("Town Hall", "Finance")
    assert (state.purchase_date, state.warranty_end) == (date(2023, 1, 1), date(2027, 1, 1))
    assert (state.vendor, state.model) == ("LENOVO", "ThinkPad T14")  # a gap filled; IT's model wins
    assert (record.inventory_at, record.agent_inventory_at) == (REGISTER.updated_at, NOW - timedelta(minutes=5))
    assert record.asset_facts() is state
    correction = REGISTER.model_copy(update={"site": "Library", "updated_at": NOW - timedelta(hours=1)})
    result = table.run(proc, [it_raw(correction, offset=1)])
    assert not result.dead_letters
    assert stored(table).state.site == "Library"
    assert stored(table).inventory_at == NOW - timedelta(hours=1)
    # IT's record has no vendor: the agent's next daily record fills it again
    table.run(proc, [agent_raw("pc-1", NOW, offset=2)])
    assert (stored(table).state.vendor, stored(table).state.site) == ("LENOVO", "Library")


def test_agent_inventory_replays_are_refused_and_repeats_change_nothing() -> None:
    table, proc = Table("pc-1"), processor()
    first = agent_raw("pc-1", NOW - timedelta(days=1), model="old board")
    table.run(proc, [first, agent_raw("pc-1", NOW - timedelta(hours=1), offset=1)])
    assert stored(table).state.model == "20W0"  # not in the register: the agent's newer reading wins
    replay = table.run(proc, [first])
    assert [d.error_kind for d in replay.dead_letters] == ["stale_replay"]
    assert stored(table).state.model == "20W0"
    repeat = table.run(proc, [agent_raw("pc-1", NOW - timedelta(hours=1), offset=2)])
    assert not repeat.dead_letters
    assert stored(table).agent_inventory_at == NOW - timedelta(hours=1)
    future = table.run(proc, [agent_raw("pc-1", NOW + timedelta(days=365), offset=3)])
    assert [d.error_kind for d in future.dead_letters] == ["clock_skew"]
    # the agent's order is its own: IT's register record, older than the agent's, still joins
    joined = table.run(proc, [it_raw(REGISTER)])
    assert not joined.dead_letters
    assert stored(table).inventory_at == REGISTER.updated_at


def test_agent_inventory_does_not_make_a_device_known() -> None:
    """``unknown_devices`` is about IT's register: an agent cannot register itself with its own record."""
    table, proc = Table("new-pc"), processor()
    table.run(proc, [agent_raw("new-pc", NOW - timedelta(hours=2))])
    assert stored(table, "new-pc").inventory_at is None
    assert stored(table, "new-pc").state.model == "20W0"
    accepted = table.run(proc, [report_raw(report("new-pc", 1))])
    assert (accepted.counts["accepted"], accepted.counts["unknown_device"]) == (1, 1)
    # its points still carry the model the agent reported: dashboards by hardware model work without a register
    device_point = next(p for p in accepted.points if p.measurement == "device")
    assert (device_point.tags["device_model"], device_point.tags["site"]) == ("20W0", "unknown")
    # strict: a device IT took out of the register (tombstone) stays unknown, whatever its agent sends
    strict = processor(StreamSettings(unknown_devices="reject"))
    table.run(strict, [it_raw(REGISTER.model_copy(update={"device_id": "new-pc"}))])
    table.run(strict, [raw(TOPICS.inventory, None, b"new-pc")])
    result = table.run(strict, [agent_raw("new-pc", NOW - timedelta(hours=1)), report_raw(report("new-pc", 2), 1)])
    assert [d.error_kind for d in result.dead_letters] == ["unknown_device", "unknown_device"]
    assert stored(table, "new-pc").inventory_at is None


def test_a_forged_agent_inventory_changes_nothing() -> None:
    table, proc = Table("pc-1"), processor()
    table.run(proc, [it_raw(REGISTER)])
    before = table.data["pc-1"]
    value = encode(DeviceInventory(device_id="pc-1", kind="laptop", updated_at=NOW))
    unsigned = RawRecord(TOPICS.health, 0, 0, b"pc-1", value, [("fleetpulse-type", b"inventory")])
    other_device = RawRecord(TOPICS.health, 0, 1, b"pc-1", value, inventory_headers(device_key("pc-2"), value))
    result = table.run(proc, [unsigned, other_device])
    assert [d.error_kind for d in result.dead_letters] == ["unauthenticated", "unauthenticated"]
    assert table.data["pc-1"] == before


def test_states_stored_before_agent_inventory_at_still_load() -> None:
    record = DeviceRecord(state=DeviceState(device_id="pc-1", site="Town Hall"), inventory_at=NOW)
    old = record.model_dump_json(exclude={"agent_inventory_at"}).encode()
    assert b"agent_inventory_at" not in old
    loaded = DeviceRecord.from_bytes(old)
    assert (loaded.agent_inventory_at, loaded.inventory_at, loaded.state.site) == (None, NOW, "Town Hall")
