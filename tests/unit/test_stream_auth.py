"""Device authenticity in the processor: the attacks of issue 13 performed on the pure core.

An attacker here holds what every PC holds: the shared Kafka credential and the wire format.
They do not hold another device's key.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceControl, DeviceInventory, HealthReport, encode
from fleetpulse.contract.auth import inventory_headers, key_fingerprint
from fleetpulse.streams.processing import DeviceRecord, RawRecord
from tests.unit.test_stream_processing import (
    NOW,
    TOPICS,
    Table,
    device_key,
    enrolment_raw,
    inventory_raw,
    processor,
    raw,
    report,
    report_raw,
)

ATTACKER_KEY = os.urandom(32)


def control_raw(device: str, fingerprint: str | None = None) -> RawRecord:
    control = DeviceControl(
        device_id=device, action="re_enrol", fingerprint=fingerprint, issued_by="it-ops", issued_at=NOW
    )
    return raw(TOPICS.control, encode(control), device.encode())


def genuine_history(table: Table) -> None:
    """pc-1: inventory and three days of healthy reports."""
    proc = processor()
    table.run(proc, [inventory_raw("pc-1"), *(report_raw(report("pc-1", s, realloc=0)) for s in range(3))])


def kinds(result: object) -> list[str]:
    return [d.error_kind for d in result.dead_letters]  # type: ignore[attr-defined]


def test_attack_forged_huge_seq_for_another_device_is_refused_and_its_alerts_still_come() -> None:
    """Attack 1: seq = 2**48 for pc-1 from another PC; then pc-1's sectors grow 2000 -> 4500."""
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    forged = report("pc-1", 2**48, realloc=0, at=NOW - timedelta(hours=1))
    attacks = [
        raw(TOPICS.health, encode(forged), b"pc-1"),  # no MAC at all
        report_raw(forged, key=ATTACKER_KEY),  # MACed with the attacker's own key
        enrolment_raw("pc-1", key=ATTACKER_KEY),  # trying to enrol its key for pc-1
    ]
    refused = table.run(proc, attacks)
    assert kinds(refused) == ["unauthenticated", "unauthenticated", "enrolment_conflict"]
    victim = DeviceRecord.from_bytes(table.data["pc-1"])
    assert (victim.state.last_seq, victim.device_key) == (2, device_key("pc-1").hex())

    genuine = [
        report_raw(report("pc-1", 3 + i, realloc=2000 + 500 * i, at=NOW - timedelta(minutes=50 - i))) for i in range(6)
    ]
    result = table.run(proc, genuine)
    assert not result.dead_letters
    assert result.counts["accepted"] == 6
    assert [a.state.value for a in result.alerts] == ["raised"]


def test_even_an_authenticated_huge_seq_is_refused_so_a_bug_cannot_block_the_device() -> None:
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    result = table.run(proc, [report_raw(report("pc-1", 2**48, at=NOW - timedelta(hours=1)))])
    assert kinds(result) == ["seq_out_of_bounds"]
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.last_seq == 2


def test_attack_backdated_report_does_not_move_the_device_clock() -> None:
    """Attack 2: collected_at = 2000-01-01 for pc-1, forged and (as a bug) authenticated."""
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    last = DeviceRecord.from_bytes(table.data["pc-1"]).state.last_collected_at
    y2k = report("pc-1", 10, at=datetime(2000, 1, 1, tzinfo=UTC))
    result = table.run(proc, [report_raw(y2k, key=ATTACKER_KEY), report_raw(y2k)])
    assert kinds(result) == ["unauthenticated", "clock_skew"]
    assert "before the device's last event" in result.dead_letters[1].reason
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.last_collected_at == last


def test_late_report_within_the_bound_is_kept_without_moving_the_clock_back() -> None:
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    last = DeviceRecord.from_bytes(table.data["pc-1"]).state.last_collected_at
    assert last is not None
    result = table.run(proc, [report_raw(report("pc-1", 3, at=last - timedelta(hours=20)))])
    assert result.counts["accepted"] == 1
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.last_collected_at == last


def test_reports_without_an_enrolled_key_are_dead_lettered_and_create_no_state() -> None:
    result = Table().run(processor(), [report_raw(report("pc-9", 1))])
    assert kinds(result) == ["unauthenticated"]
    assert "no enrolled key" in result.dead_letters[0].reason
    assert not result.records


def mdm_report(device: str, kind: str = "phone", source: str = "mdm") -> HealthReport:
    platform = "ios" if kind == "phone" else "windows"
    at = NOW - timedelta(hours=1)
    return HealthReport(device_id=device, seq=1, collected_at=at, source=source, kind=kind, platform=platform)


def test_mobile_reports_are_authenticated_by_the_mdm_principal_not_a_device_key() -> None:
    table, proc = Table(), processor()
    phone, laptop = mdm_report("mdm-0a1b", "phone"), mdm_report("mdm-2c3d", "laptop")  # battery rows are laptops
    result = table.run(proc, [raw(TOPICS.mobile, encode(r), r.device_id.encode()) for r in (phone, laptop)])
    assert result.counts["accepted"] == 2
    assert not result.dead_letters


def test_the_mdm_bridges_republished_observation_is_counted_not_dead_lettered() -> None:
    """Every export republishes each phone's latest observation under its seq: thousands of dead letters a day
    would bury the real ones and trip the dead-letter alert. An older seq on the mobile topic is still refused."""
    table, proc = Table(), processor()
    phone = mdm_report("mdm-0a1b")
    table.run(proc, [raw(TOPICS.mobile, encode(phone), phone.device_id.encode())])
    newer = phone.model_copy(update={"seq": 2, "collected_at": phone.collected_at + timedelta(minutes=30)})
    table.run(proc, [raw(TOPICS.mobile, encode(newer), phone.device_id.encode())])
    again = table.run(proc, [raw(TOPICS.mobile, encode(newer), phone.device_id.encode())])
    assert again.counts["mdm_unchanged"] == 1
    assert not again.dead_letters
    older = table.run(proc, [raw(TOPICS.mobile, encode(phone), phone.device_id.encode())])
    assert kinds(older) == ["stale_replay"]


def test_attack_mdm_credential_cannot_write_an_agents_device_through_the_mobile_topic() -> None:
    """The mobile topic carries no device MAC: whoever holds the MDM principal (or a producer bug) could
    write any device's history there. An agent's own report, or any report for a device that an agent key
    authenticates (enrolled, pinned by IT or offered), is dead-lettered and changes nothing."""
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    before = table.data["pc-1"]
    table.run(proc, [enrolment_raw("pc-2"), enrolment_raw("pc-2", key=ATTACKER_KEY)])  # pc-2: a key offered
    table.run(proc, [control_raw("pc-3", fingerprint=key_fingerprint(device_key("pc-3")))])  # pc-3: pinned by IT
    forged = [
        mdm_report("pc-1", "laptop", source="agent"),  # an agent's report without its MAC
        mdm_report("pc-1", "laptop"),  # claims to be the MDM's
        mdm_report("pc-2", "laptop"),
        mdm_report("pc-3", "laptop"),
        mdm_report("mdm-0a1b", source="simulator"),  # not the MDM bridge's either
    ]
    result = table.run(proc, [raw(TOPICS.mobile, encode(r), r.device_id.encode(), i) for i, r in enumerate(forged)])
    assert kinds(result) == ["unauthenticated"] * len(forged)
    assert "mobile topic" in result.dead_letters[0].reason
    assert "authenticates with its agent's key" in result.dead_letters[1].reason
    assert result.counts["accepted"] == 0
    assert table.data["pc-1"] == before
    assert DeviceRecord.from_bytes(table.data["pc-3"]).state.last_seq == -1
    assert "mdm-0a1b" not in table.data


def test_attack_agent_credential_cannot_enrol_a_phone_and_lock_the_mdm_bridge_out() -> None:
    """Any PC's credential may send enrolments. Pinning a key for a phone would make the mobile topic refuse
    the MDM bridge's reports for it and let the attacker write its history: an id in the bridge's pseudonym
    namespace, or any device the bridge already reports (the simulator's phones carry other ids), is refused."""
    table, proc = Table(), processor()
    phone, sim_phone = mdm_report("mdm-0a1b"), mdm_report("phone-0007")
    table.run(proc, [raw(TOPICS.mobile, encode(r), r.device_id.encode(), i) for i, r in enumerate((phone, sim_phone))])
    fresh = "mdm-" + "f" * 32  # a phone the bridge has not reported yet
    result = table.run(proc, [enrolment_raw(d, key=ATTACKER_KEY) for d in ("mdm-0a1b", "phone-0007", fresh)])
    assert kinds(result) == ["enrolment_conflict"] * 3
    assert all("reported by the MDM bridge" in d.reason for d in result.dead_letters)
    assert all(ATTACKER_KEY.hex() not in d.model_dump_json() for d in result.dead_letters)
    assert all(DeviceRecord.from_bytes(table.data[d]).device_key is None for d in ("mdm-0a1b", "phone-0007"))
    assert fresh not in table.data
    later = mdm_report("mdm-0a1b").model_copy(update={"seq": 2, "collected_at": NOW - timedelta(minutes=5)})
    assert table.run(proc, [raw(TOPICS.mobile, encode(later), b"mdm-0a1b")]).counts["accepted"] == 1


def test_it_can_hand_a_bridge_reported_device_to_its_agent() -> None:
    """IT's re-enrolment is the one way an id the MDM bridge reported (outside its namespace) gets an agent key."""
    table, proc = Table(), processor()
    sim_phone = mdm_report("phone-0007")
    table.run(proc, [raw(TOPICS.mobile, encode(sim_phone), b"phone-0007")])
    fingerprint = key_fingerprint(device_key("phone-0007"))
    result = table.run(proc, [control_raw("phone-0007", fingerprint), enrolment_raw("phone-0007")])
    assert (kinds(result), result.counts["enrolled"]) == ([], 1)
    assert DeviceRecord.from_bytes(table.data["phone-0007"]).device_key == device_key("phone-0007").hex()


def test_first_enrolment_pins_the_key_repeats_are_no_ops_and_keys_never_reach_dead_letters() -> None:
    table, proc = Table(), processor()
    first = table.run(proc, [enrolment_raw("pc-1"), enrolment_raw("pc-1")])
    assert (first.counts["enrolled"], first.counts["enrolment_repeat"]) == (1, 1)
    conflict = table.run(proc, [enrolment_raw("pc-1", key=ATTACKER_KEY)])
    assert kinds(conflict) == ["enrolment_conflict"]
    assert "fleetpulse devices re-enrol pc-1" in conflict.dead_letters[0].reason
    assert ATTACKER_KEY.hex() not in conflict.dead_letters[0].model_dump_json()
    assert DeviceRecord.from_bytes(table.data["pc-1"]).device_key == device_key("pc-1").hex()


def test_an_enrolment_not_signed_with_the_key_it_carries_is_refused() -> None:
    signed = enrolment_record("pc-1", device_key("pc-1"), NOW)
    forged_headers = [(name, value if name != "fleetpulse-mac" else b"\0" * 32) for name, value in signed.headers]
    result = Table().run(processor(), [RawRecord(TOPICS.health, 0, 0, signed.key, signed.value, forged_headers)])
    assert kinds(result) == ["unauthenticated"]
    assert not result.records


def test_re_enrolment_by_it_accepts_the_reinstalled_agent_and_locks_out_the_old_key() -> None:
    """Reinstall: new key, new spool. IT opens re-enrolment; the old key stops working."""
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    new_key = os.urandom(32)
    after = NOW - timedelta(minutes=30)
    result = table.run(
        proc,
        [
            enrolment_raw("pc-1", key=new_key),  # before IT's action: refused
            control_raw("pc-1"),
            report_raw(report("pc-1", 50, at=after), key=device_key("pc-1")),  # the old key: no longer enrolled
            enrolment_raw("pc-1", key=new_key),
            report_raw(report("pc-1", 0, at=after + timedelta(minutes=1)), key=new_key),  # fresh spool, lower seq
        ],
    )
    assert kinds(result) == ["enrolment_conflict", "unauthenticated"]
    assert (result.counts["re_enrol"], result.counts["enrolled"], result.counts["accepted"]) == (1, 1, 1)
    assert result.counts["seq_restart"] == 1
    record = DeviceRecord.from_bytes(table.data["pc-1"])
    assert record.device_key == new_key.hex()
    assert record.state.last_seq == 0
    assert record.state.site == "Town Hall"  # history and inventory survive re-enrolment


def test_re_enrolment_with_the_fingerprint_of_the_refused_key_pins_it_at_once() -> None:
    """The usual order: the reinstalled agent enrols (refused), IT sees the dead letter and re-enrols."""
    proc, new_key = processor(), os.urandom(32)
    table = Table("pc-1")
    table.run(proc, [enrolment_raw("pc-1", key=new_key)])
    pinned = table.run(proc, [control_raw("pc-1", key_fingerprint(new_key))])
    assert pinned.counts["enrolled"] == 1
    record = DeviceRecord.from_bytes(table.data["pc-1"])
    assert (record.device_key, record.offered_key) == (new_key.hex(), None)

    unpinned = Table("pc-1")  # without a fingerprint the refused key is not trusted: the next enrolment wins
    unpinned.run(proc, [enrolment_raw("pc-1", key=new_key), control_raw("pc-1")])
    assert DeviceRecord.from_bytes(unpinned.data["pc-1"]).device_key is None

    raced = Table("pc-1")  # the attacker's refused key came last: the fingerprint does not match it
    raced.run(proc, [enrolment_raw("pc-1", key=new_key), enrolment_raw("pc-1", key=ATTACKER_KEY)])
    raced.run(proc, [control_raw("pc-1", key_fingerprint(new_key)), enrolment_raw("pc-1", key=ATTACKER_KEY)])
    assert DeviceRecord.from_bytes(raced.data["pc-1"]).device_key is None
    raced.run(proc, [enrolment_raw("pc-1", key=new_key)])
    assert DeviceRecord.from_bytes(raced.data["pc-1"]).device_key == new_key.hex()


def test_re_enrolment_pinned_to_a_fingerprint_refuses_any_other_key() -> None:
    table, proc = Table("pc-1"), processor()
    new_key = os.urandom(32)
    result = table.run(
        proc,
        [
            control_raw("pc-1", fingerprint=key_fingerprint(new_key)),
            enrolment_raw("pc-1", key=ATTACKER_KEY),  # the attacker races the reinstalled PC: refused
            enrolment_raw("pc-1", key=new_key),
        ],
    )
    assert kinds(result) == ["enrolment_conflict"]
    assert DeviceRecord.from_bytes(table.data["pc-1"]).device_key == new_key.hex()


def test_replays_and_duplicates_stay_refused_but_a_new_spool_with_a_lower_seq_recovers() -> None:
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    last = DeviceRecord.from_bytes(table.data["pc-1"]).state.last_collected_at
    assert last is not None
    replays = table.run(proc, [report_raw(report("pc-1", 2)), report_raw(report("pc-1", 1))])
    assert kinds(replays) == ["duplicate", "stale_replay"]
    restarted = table.run(proc, [report_raw(report("pc-1", 0, at=last + timedelta(minutes=1)))])
    assert restarted.counts["seq_restart"] == 1
    assert restarted.counts["accepted"] == 1


def test_a_new_spool_counting_from_the_clock_is_within_the_seq_bound() -> None:
    """Agent spools start their counter at the Unix time in ms: a big but legitimate jump."""
    table, proc = Table("pc-1"), processor()
    genuine_history(table)
    at = NOW - timedelta(minutes=5)
    clock_seq = int(at.timestamp() * 1000) - 10
    result = table.run(proc, [report_raw(report("pc-1", clock_seq, at=at))])
    assert result.counts["accepted"] == 1


def test_agent_inventory_on_the_health_topic_is_joined_only_when_signed_by_the_device() -> None:
    table, proc = Table("pc-1"), processor()
    inventory = DeviceInventory(device_id="pc-1", kind="laptop", model="Forged", updated_at=NOW - timedelta(hours=1))
    value = encode(inventory)
    forged = RawRecord(TOPICS.health, 0, 0, b"pc-1", value, inventory_headers(ATTACKER_KEY, value))
    genuine = RawRecord(TOPICS.health, 0, 1, b"pc-1", value, inventory_headers(device_key("pc-1"), value))
    result = table.run(proc, [forged])
    assert kinds(result) == ["unauthenticated"]
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.model is None
    table.run(proc, [genuine])
    assert DeviceRecord.from_bytes(table.data["pc-1"]).state.model == "Forged"


def test_signed_bytes_are_the_value_exactly() -> None:
    """One flipped byte in a signed report breaks its MAC."""
    table, proc = Table("pc-1"), processor()
    signed = signed_report(report("pc-1", 5, realloc=1), device_key("pc-1"))
    tampered = signed.value.replace(b'"reallocated_sectors":1', b'"reallocated_sectors":9')
    result = table.run(proc, [RawRecord(TOPICS.health, 0, 0, signed.key, tampered, signed.headers)])
    assert kinds(result) == ["unauthenticated"]


def test_an_old_replay_is_a_stale_replay_not_a_clock_error() -> None:
    """A worker catching up after a crash re-reads reports days older than the device's latest."""
    table, proc = Table("pc-1"), processor()
    week = [report("pc-1", d, at=NOW - timedelta(days=7 - d)) for d in range(7)]
    table.run(proc, [report_raw(r) for r in week])
    result = table.run(proc, [report_raw(week[0])])
    assert kinds(result) == ["stale_replay"]


def test_attack_a_pc_inventing_disk_serials_gets_no_more_disks_scored_than_it_can_hold() -> None:
    """A PC reports fresh disk serials with every report. Each new disk used to be tracked (evicting another),
    scored, logged for training, stored as risk history and written to the TSDB as a new series: thousands
    a day. A full device now takes a new disk only in place of one unseen for a day, as after a swap."""
    from fleetpulse.contract import DiskHealth
    from fleetpulse.models.state import MAX_DISKS

    table, proc = Table("pc-1"), processor()
    genuine_history(table)

    def with_disks(seq: int, at: datetime, serials: list[str]) -> HealthReport:
        disks = [
            DiskHealth(name=f"sd{n}", serial_hash=s, kind="hdd", smart_passed=False) for n, s in enumerate(serials)
        ]
        return report("pc-1", seq, at=at).model_copy(update={"disks": disks})

    start = NOW - timedelta(hours=30)
    flood = [with_disks(3 + i, start + timedelta(minutes=i), [f"x{i}-{k}" for k in range(8)]) for i in range(100)]
    result = table.run(proc, [report_raw(r, i) for i, r in enumerate(flood)])
    assert result.counts["accepted"] == 100
    state = DeviceRecord.from_bytes(table.data["pc-1"]).state
    assert len(state.disks) == MAX_DISKS
    scored = {s.component_id for s in result.scores if s.component.value == "disk"}
    assert len(scored) <= MAX_DISKS + 1  # the genuine disk's last score and at most the disks it has room for
    assert result.counts["disk_refused_no_room"] == 99 * 8  # the first report's 8 took the room (sda: unseen for days)
    series = {p.tags["disk"] for p in result.points if p.measurement == "disk"}
    assert series == {f"x0-{k}" for k in range(8)}  # no TSDB series for the refused disks either

    later = table.run(proc, [report_raw(with_disks(200, start + timedelta(days=1, hours=1), ["new-disk"]))])
    assert later.counts["disk_refused_no_room"] == 0  # the others are unseen for a day: a swap is taken
    assert "new-disk" in DeviceRecord.from_bytes(table.data["pc-1"]).state.disks
