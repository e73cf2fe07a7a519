"""The stream processor's pure core: validation, dedup, state, batching invariance, hostile input."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetpulse.agents.signing import derived_device_key, enrolment_record, signed_report
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    BatteryHealth,
    Component,
    DeviceInventory,
    DiskHealth,
    Factor,
    HealthReport,
    RiskScore,
    ScorerRole,
    StabilityHealth,
    Topics,
    encode,
)
from fleetpulse.models.artifact import TrainedDiskScorer
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.registry import ScorerSet, rule_scorers
from fleetpulse.models.rules import DiskRuleScorer
from fleetpulse.models.state import DeviceState
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord, explained_anomaly
from fleetpulse.streams.settings import StreamSettings

TOPICS = Topics(prefix="u.")
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class ConstantScorer:
    """Risk from the disk's reallocated sectors: deterministic and cheap, enough to drive the policy."""

    name = "constant"
    version = "1"
    component = Component.DISK

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        out = []
        for s in states:
            if s.last_collected_at is None:
                continue
            realloc = max(
                (h.series.column("reallocated_sectors")[-1] or 0.0 for h in s.disks.values() if h.series.days),
                default=0.0,
            )
            out.append(
                RiskScore(
                    device_id=s.device_id,
                    component=Component.DISK,
                    risk=min(1.0, realloc / 100.0),
                    model_name=self.name,
                    model_version=self.version,
                    report_seq=s.last_seq,
                    collected_at=s.last_collected_at,
                    scored_at=now,
                )
            )
        return out


def report(device: str, seq: int, realloc: int = 0, at: datetime | None = None) -> HealthReport:
    return HealthReport(
        device_id=device,
        seq=seq,
        collected_at=at or NOW - timedelta(hours=100 - seq),
        kind="laptop",
        platform="linux",
        disks=[DiskHealth(name="sda", serial_hash="s1", kind="hdd", reallocated_sectors=realloc)],
    )


def raw(topic: str, value: bytes | None, key: bytes | None, offset: int = 0) -> RawRecord:
    return RawRecord(topic=topic, partition=0, offset=offset, key=key, value=value)


def device_key(device: str) -> bytes:
    return derived_device_key(b"unit-tests", device)


def report_raw(r: HealthReport, offset: int = 0, key: bytes | None = None) -> RawRecord:
    """The report as its agent sends it: MACed with the device's key (or ``key``)."""
    signed = signed_report(r, key if key is not None else device_key(r.device_id))
    return RawRecord(TOPICS.health, 0, offset, signed.key, signed.value, signed.headers)


def enrolment_raw(device: str, key: bytes | None = None, offset: int = 0) -> RawRecord:
    signed = enrolment_record(device, key if key is not None else device_key(device), NOW - timedelta(days=30))
    return RawRecord(TOPICS.health, 0, offset, signed.key, signed.value, signed.headers)


def inventory_raw(device: str) -> RawRecord:
    inv = DeviceInventory(
        device_id=device, kind="laptop", model="T14", site="Town Hall", updated_at=NOW - timedelta(days=1)
    )
    return raw(TOPICS.inventory, encode(inv), device.encode())


class Table:
    """The Faust table as the processor sees it: bytes per device, written after each batch.

    ``devices`` are enrolled first, as their agents do before their first report.
    """

    def __init__(self, *devices: str) -> None:
        self.data: dict[str, bytes] = {}
        if devices:
            enrolled = self.run(processor(), [enrolment_raw(d) for d in devices])
            assert enrolled.counts["enrolled"] == len(devices)

    def lookup(self, index: int, device_id: str) -> DeviceRecord | None:
        value = self.data.get(device_id)
        return DeviceRecord.from_bytes(value) if value is not None else None

    def run(self, processor: Processor, batch: Sequence[RawRecord]):  # type: ignore[no-untyped-def]
        result = processor.process_batch(batch, self.lookup, NOW)
        for device_id, record in result.records.items():
            self.data[device_id] = record.to_bytes()
        return result


def processor(settings: StreamSettings | None = None, scorers: ScorerSet | None = None) -> Processor:
    policy = AlertPolicy(raise_threshold=0.5, clear_threshold=0.2, consecutive=2, clear_consecutive=2)
    return Processor(settings or StreamSettings(), TOPICS, scorers or ScorerSet(champions=[ConstantScorer()]), policy)


def test_valid_reports_update_state_score_and_alert() -> None:
    table, proc = Table("pc-1"), processor()
    table.run(proc, [inventory_raw("pc-1")])
    result = table.run(proc, [report_raw(report("pc-1", s, realloc=80), s) for s in range(3)])
    assert result.counts["accepted"] == 3
    assert not result.dead_letters
    assert [s.report_seq for s in result.scores] == [0, 1, 2]  # every report scored, in order
    assert len(result.alerts) == 1
    assert result.alerts[0].report_seq == 1
    state = DeviceRecord.from_bytes(table.data["pc-1"])
    assert state.state.last_seq == 2
    assert state.state.site == "Town Hall"
    assert {p.measurement for p in result.points} == {"device", "disk", "risk", "alert"}
    assert all(p.tags["site"] == "Town Hall" for p in result.points if "site" in p.tags)


def test_duplicates_and_replays_are_dead_lettered_and_change_nothing() -> None:
    table, proc = Table("pc-1"), processor()
    table.run(proc, [report_raw(report("pc-1", s, realloc=80)) for s in range(3)])
    before = dict(table.data)
    result = table.run(proc, [report_raw(report("pc-1", 2)), report_raw(report("pc-1", 0))])
    assert [d.error_kind for d in result.dead_letters] == ["duplicate", "stale_replay"]
    assert not result.scores
    assert not result.alerts
    assert not result.records
    assert result.rewrite == {"pc-1"}  # the caller re-sends the stored value to heal a lagging changelog
    assert table.data == before


def test_result_does_not_depend_on_batch_boundaries() -> None:
    """Live (small batches) and catch-up (one big batch) reach the same state and the same alerts."""
    records = [inventory_raw(f"pc-{d}") for d in range(3)]
    records += [report_raw(report(f"pc-{d}", s, realloc=(s * 37 + d * 11) % 120)) for s in range(12) for d in range(3)]
    devices = [f"pc-{d}" for d in range(3)]
    one, many = Table(*devices), Table(*devices)
    big = one.run(processor(), records)
    alerts = []
    for i in range(0, len(records), 5):
        alerts += many.run(processor(), records[i : i + 5]).alerts
    assert one.data == many.data
    assert [a.alert_id for a in big.alerts] == [a.alert_id for a in alerts]
    assert big.alerts, "the scenario must exercise the alert policy"


@pytest.mark.parametrize(
    ("value", "key", "kind"),
    [
        (b"{not json", b"pc-1", "malformed_json"),
        (b'{"schema_version": 2, "device_id": "pc-1"}', b"pc-1", "unsupported_version"),
        (b'{"device_id": "pc-1"}', b"pc-1", "schema_violation"),
        (b"x" * 300_000, b"pc-1", "oversized"),
        (None, b"pc-1", "schema_violation"),
        (encode(report("pc-1", 1)), b"pc-2", "schema_violation"),  # key would put it on another partition
        (encode(report("pc-1", 1, at=NOW + timedelta(hours=2))), b"pc-1", "clock_skew"),
    ],
)
def test_bad_records_become_dead_letters_with_reasons(value: bytes | None, key: bytes, kind: str) -> None:
    result = Table().run(processor(), [raw(TOPICS.health, value, key, offset=7)])
    [dl] = result.dead_letters
    assert dl.error_kind == kind
    assert dl.reason
    assert dl.offset == 7
    assert dl.source_topic == TOPICS.health
    assert len(dl.payload_excerpt) <= 4096
    assert not result.records


def test_unknown_devices_accepted_and_counted_by_default_or_rejected() -> None:
    accepted = Table("new-pc").run(processor(), [report_raw(report("new-pc", 1))])
    assert accepted.counts["unknown_device"] == 1
    assert accepted.counts["accepted"] == 1
    strict = processor(StreamSettings(unknown_devices="reject"))
    rejected = Table("new-pc").run(strict, [report_raw(report("new-pc", 1))])
    assert [d.error_kind for d in rejected.dead_letters] == ["unknown_device"]


def test_invalid_inventory_is_dead_lettered_and_tombstone_drops_the_join() -> None:
    table, proc = Table("pc-1"), processor()
    bad = table.run(proc, [raw(TOPICS.inventory, b'{"device_id": "x"}', b"x")])
    assert bad.dead_letters[0].error_kind == "schema_violation"
    table.run(proc, [inventory_raw("pc-1"), report_raw(report("pc-1", 1))])
    table.run(proc, [raw(TOPICS.inventory, None, b"pc-1")])
    record = DeviceRecord.from_bytes(table.data["pc-1"])
    assert record.inventory_at is None
    assert record.state.last_seq == 1


def test_points_carry_the_inventory_joined_before_them() -> None:
    """A join or a tombstone renews the asset facts that the device's next points are tagged with."""
    moved = DeviceInventory(device_id="pc-1", kind="laptop", model="T14", site="Library", updated_at=NOW)
    table, proc = Table("pc-1"), processor(scorers=rule_scorers())
    sites = []
    for batch in (
        [inventory_raw("pc-1"), report_raw(report("pc-1", 1))],
        [report_raw(report("pc-1", 2)), raw(TOPICS.inventory, encode(moved), b"pc-1")],
        [raw(TOPICS.inventory, None, b"pc-1"), report_raw(report("pc-1", 3))],
    ):
        result = table.run(proc, batch)
        sites += [p.tags["site"] for p in result.points if p.measurement == "device"]
    assert sites == ["Town Hall", "Library", "unknown"]  # the batch's register record applies before its reports
    joined = DeviceRecord(state=DeviceState(device_id="pc-1"), inventory_at=NOW)
    joined.state.site = "Library"
    assert joined.asset_facts() is joined.state
    assert DeviceRecord(state=joined.state).asset_facts() is None


def test_register_records_in_a_batch_do_not_cut_its_scoring_calls_short() -> None:
    """Kafka gives no order across topics: the batch's asset facts are taken first, each topic's order kept,
    so a register reload read among live reports still scores the batch's devices in one call."""

    class Counting(ConstantScorer):
        def __init__(self) -> None:
            self.calls: list[int] = []

        def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
            self.calls.append(len(states))
            return super().score_batch(states, now)

    devices = [f"pc-{n}" for n in range(4)]
    table, scorer = Table(*devices), Counting()
    batch = []
    for n, device in enumerate(devices):
        batch += [report_raw(report(device, 1), offset=n), inventory_raw(device)]
    result = table.run(processor(scorers=ScorerSet(champions=[scorer])), batch)
    assert scorer.calls == [4]
    assert (result.counts["accepted"], result.counts["inventory"], result.counts["unknown_device"]) == (4, 4, 0)
    records = {device: DeviceRecord.from_bytes(table.data[device]) for device in devices}
    assert {record.state.site for record in records.values()} == {"Town Hall"}


def test_a_failing_scorer_does_not_stop_state_updates() -> None:
    class Broken(ConstantScorer):
        def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
            raise RuntimeError("bug")

    table = Table("pc-1")
    result = table.run(processor(scorers=ScorerSet(champions=[Broken()])), [report_raw(report("pc-1", 1))])
    assert result.scorer_errors == {("disk", "champion", "constant", "1"): 1}
    assert result.counts["scoring_error"] == 0  # the alert policy ran: nothing failed past the scorer
    assert "pc-1" in table.data


def test_attack_a_champion_failing_every_call_costs_only_its_own_scores(caplog: pytest.LogCaptureFixture) -> None:
    """A disk champion that raises on every call (the served object of an artifact registered without models)
    used to leave every component of every device in the batch unscored: a worn battery went unnoticed because
    another device's disk model was broken."""
    broken = TrainedDiskScorer(name="disk-crafted", version="1", models={}, reference=np.zeros(len(DISK_FEATURES)))
    scorers = rule_scorers()
    scorers.champions = [broken, *(s for s in scorers.champions if s.component is not Component.DISK)]
    scorers.challengers.append(DiskRuleScorer())
    table, proc = Table("pc-1", "pc-2"), processor(scorers=scorers)
    failing_disk = DiskHealth(name="sda", serial_hash="s1", reallocated_sectors=5000)
    worn = BatteryHealth(design_capacity=50000, full_charge_capacity=10000)
    kw = {"kind": "laptop", "platform": "linux"}

    with caplog.at_level(logging.ERROR, logger="fleetpulse.models.registry"):
        for seq in (1, 2):
            pc1 = HealthReport(
                device_id="pc-1", seq=seq, collected_at=NOW - timedelta(days=3 - seq), disks=[failing_disk], **kw
            )
            pc2 = HealthReport(
                device_id="pc-2", seq=seq, collected_at=NOW - timedelta(days=3 - seq), battery=worn, **kw
            )
            result = table.run(proc, [report_raw(pc1, 2 * seq), report_raw(pc2, 2 * seq + 1)])
            scored = {(s.device_id, s.component, s.role) for s in result.scores}
            assert ("pc-2", Component.BATTERY, ScorerRole.CHAMPION) in scored
            assert ("pc-1", Component.DISK, ScorerRole.CHALLENGER) in scored  # the disk rule still weighs the drive
            assert all(s.model_name != "disk-crafted" for s in result.scores)
            assert result.scorer_errors == {("disk", "champion", "disk-crafted", "1"): 2}
            assert result.counts["scoring_error"] == 0
    assert [s.device_id for s in result.scores if s.component is Component.BATTERY] == ["pc-2"]
    assert [a.device_id for a in result.alerts] == ["pc-2"]  # its second worn report raises the battery alert
    logged = [r for r in caplog.records if r.getMessage().startswith("scorer failed")]
    assert len(logged) == 1, "a scorer failing every call is logged once, then counted"
    assert logged[0].fields["model"] == "disk-crafted:1"  # type: ignore[attr-defined]


def test_rule_scorers_run_in_the_core() -> None:
    result = Table("pc-1").run(
        processor(scorers=rule_scorers()), [report_raw(report("pc-1", s, realloc=500)) for s in range(4)]
    )
    assert result.scores
    assert all(s.device_id == "pc-1" for s in result.scores)


hostile_bytes = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=512).map(str.encode),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(), st.text(max_size=20)),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=20,
    ).map(lambda v: __import__("json").dumps(v, allow_nan=True).encode()),
    st.builds(
        lambda seq, field, junk: (
            encode(report("pc-h", seq)).replace(b'"seq"', field.encode()).replace(b"laptop", junk.encode())
        ),
        st.integers(0, 10),
        st.sampled_from(['"seq"', '"sequence"', '"seq":-1,"x"', '"seq":1e309,"y"']),
        st.sampled_from(["laptop", "toaster", "", "laptop\\u0000"]),
    ),
)


@given(st.lists(st.tuples(hostile_bytes, st.binary(max_size=80) | st.none()), min_size=1, max_size=8))
def test_hostile_records_all_dead_letter_while_valid_traffic_continues(junk: list[tuple[bytes, bytes | None]]) -> None:
    table, proc = Table("pc-ok", "pc-h"), processor()
    valid = [report_raw(report("pc-ok", s), offset=1000 + s) for s in range(len(junk))]
    mixed = [
        r
        for pair in zip([raw(TOPICS.health, v, k, i) for i, (v, k) in enumerate(junk)], valid, strict=True)
        for r in pair
    ]
    result = table.run(proc, mixed)
    assert result.counts["accepted"] >= len(valid)
    assert DeviceRecord.from_bytes(table.data["pc-ok"]).state.last_seq == len(valid) - 1
    handled = result.counts["accepted"] + len(result.dead_letters)
    assert handled == len(mixed)  # every record is either accepted or dead-lettered: nothing silently lost
    for dl in result.dead_letters:
        assert dl.reason
        assert dl.error_kind
        assert len(dl.payload_excerpt) <= 4096


def test_devices_are_rescored_on_change_not_on_every_report() -> None:
    """At one report a minute, scoring every report is wasted work: features are daily buckets."""
    start = NOW - timedelta(hours=2)
    minutely = [report("pc-1", s, at=start + timedelta(minutes=s)) for s in range(31)]
    event = HealthReport(
        device_id="pc-1",
        seq=31,
        collected_at=start + timedelta(minutes=31),
        kind="laptop",
        platform="linux",
        stability=StabilityHealth(crashes=1),
    )
    result = Table("pc-1").run(processor(), [report_raw(r) for r in [*minutely, event]])
    assert [s.report_seq for s in result.scores] == [0, 15, 30, 31]  # first, every 15 min, the health event
    assert result.counts["not_rescored"] == 28
    assert result.counts["accepted"] == 32


def crash_report(seq: int, at: datetime) -> HealthReport:
    """A report carrying a health event, which asks for scoring at once."""
    return HealthReport(
        device_id="pc-1",
        seq=seq,
        collected_at=at,
        kind="laptop",
        platform="linux",
        stability=StabilityHealth(crashes=1),
    )


def test_a_flood_of_health_events_from_one_device_costs_one_scoring_per_minute_of_its_clock() -> None:
    """The attack: one authenticated PC sends 300 crash reports a second apart; each used to run every scorer."""
    start = NOW - timedelta(hours=1)
    flood = [crash_report(s, start + timedelta(seconds=s)) for s in range(300)]
    result = Table("pc-1").run(processor(), [report_raw(r, offset=r.seq) for r in flood])
    assert result.counts["accepted"] == 300
    assert [s.report_seq for s in result.scores] == [0, 60, 120, 180, 240]


def test_reports_alternating_between_two_days_are_not_each_a_new_day_to_score() -> None:
    """Backdating within ``max_backdate`` is accepted (a spool catching up), but only a later day starts a bucket."""
    today = NOW.replace(hour=0, minute=30)
    alternating = [report("pc-1", s, at=today - timedelta(days=s % 2, minutes=-s)) for s in range(40)]
    result = Table("pc-1").run(processor(), [report_raw(r, offset=r.seq) for r in alternating])
    assert result.counts["accepted"] == 40
    assert [s.report_seq for s in result.scores] == [0, 16, 32]  # today's every 15 minutes, yesterday's never


def test_inventory_arriving_after_reports_keeps_dedup_policy_and_scoring_state() -> None:
    """Inventory and reports come from different topics, so either can be first."""
    table, proc = Table("pc-1"), processor()
    table.run(proc, [report_raw(report("pc-1", s, realloc=80)) for s in range(3)])
    before = DeviceRecord.from_bytes(table.data["pc-1"])
    table.run(proc, [inventory_raw("pc-1")])
    after = DeviceRecord.from_bytes(table.data["pc-1"])
    assert after.state.site == "Town Hall"
    assert after.inventory_at is not None
    assert (after.scored_at, after.policies, after.state.last_seq) == (before.scored_at, before.policies, 2)


def _device_anomaly(leading: str) -> RiskScore:
    return RiskScore(
        device_id="pc-1",
        component=Component.DEVICE,
        risk=0.8,
        model_name="device-anomaly",
        model_version="1",
        report_seq=1,
        collected_at=NOW,
        scored_at=NOW,
        factors=[Factor(feature=leading, value=5.0, contribution=0.8, text="unusual")],
    )


def test_a_device_anomaly_is_explained_only_by_the_diagnosis_of_its_leading_signal() -> None:
    heat, crashes = _device_anomaly("cpu_max_c_7d"), _device_anomaly("crashes_7d")
    assert explained_anomaly(heat, {Component.THERMAL})
    assert not explained_anomaly(heat, {Component.MEMORY, Component.DISK})
    assert explained_anomaly(crashes, {Component.MEMORY})
    assert not explained_anomaly(crashes, {Component.THERMAL})
    assert not explained_anomaly(heat, set())


def test_scoring_never_changes_a_looked_up_policies_dict_in_place() -> None:
    """Each generation updates a fresh policies dict of its record, never the one the lookup handed over
    (a decoded-state cache may still hold it): the result is the same as from freshly decoded values."""
    day = NOW - timedelta(days=3)
    first = [inventory_raw("pc-1"), report_raw(report("pc-1", 1, realloc=5, at=day), 1)]
    later = [report_raw(report("pc-1", s, realloc=200 * s, at=day + timedelta(days=s - 1)), s) for s in (2, 3)]
    fresh, proc = Table("pc-1"), processor(scorers=rule_scorers())
    fresh.run(proc, first)
    held = fresh.lookup(0, "pc-1")
    assert held is not None
    policies, before = held.policies, dict(held.policies)
    assert len(before) > 1
    result = proc.process_batch(later, lambda _index, _device: held, NOW)
    assert held.policies is not policies
    assert policies == before
    expected = fresh.run(proc, later)
    assert result.records["pc-1"].to_bytes() == expected.records["pc-1"].to_bytes()
    assert [a.alert_id for a in result.alerts] == [a.alert_id for a in expected.alerts]
    assert result.records["pc-1"].policies != before


def test_reports_decoded_ahead_of_their_turn_fail_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A report the decoder raises on, even unexpectedly, is dead-lettered at its place between valid ones."""
    from fleetpulse.contract import decode_report
    from fleetpulse.streams import processing

    def odd_decoder(value: bytes | str) -> HealthReport:
        if b'"seq":1,' in (value if isinstance(value, bytes) else value.encode()):
            raise TypeError("decoder bug")
        return decode_report(value)

    monkeypatch.setattr(processing, "decode_report", odd_decoder)
    records = [report_raw(report("pc-1", s), s) for s in range(3)] + [raw(TOPICS.health, b"{not json", b"pc-1", 3)]
    result = Table("pc-1").run(processor(), records)
    assert [(d.offset, d.error_kind) for d in result.dead_letters] == [(1, "processing_error"), (3, "malformed_json")]
    assert "TypeError: decoder bug" in result.dead_letters[0].reason
    assert [r.seq for r in result.reports] == [0, 2]


def test_attack_records_that_all_hit_one_bug_log_one_traceback_each_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever finds input that raises in processing can resend it: every copy is dead-lettered with the error,
    but the log gets one traceback per exception type a minute, not one per record (formatting a traceback
    costs far more than refusing the record)."""
    from fleetpulse.contract import decode_report
    from fleetpulse.streams import processing

    def buggy_decoder(value: bytes | str) -> HealthReport:
        text = value if isinstance(value, bytes) else value.encode()
        if b'"seq":7' in text:
            raise ValueError("another decoder bug")
        if b'"seq":1' in text:
            raise TypeError("decoder bug")
        return decode_report(value)

    monkeypatch.setattr(processing, "decode_report", buggy_decoder)
    flood = [report_raw(report("pc-1", 1000 + n), n) for n in range(500)] + [report_raw(report("pc-1", 7), 500)]
    proc = processor()
    table = Table("pc-1")
    with caplog.at_level(logging.ERROR, logger=processing.__name__):
        result = table.run(proc, flood)
        again = table.run(proc, [report_raw(report("pc-1", 1999), 501)])

    assert result.counts["dead_letter.processing_error"] == 501
    assert {d.reason for d in result.dead_letters} == {"TypeError: decoder bug", "ValueError: another decoder bug"}
    assert again.counts["dead_letter.processing_error"] == 1
    logged = [r for r in caplog.records if r.getMessage() == "processing error"]
    assert [(r.exc_info[1].args if r.exc_info and r.exc_info[1] else None) for r in logged] == [
        ("decoder bug",),
        ("another decoder bug",),
    ]


def test_a_new_device_cannot_write_months_of_made_up_history_when_first_reports_are_bounded() -> None:
    """The attack: an enrolled device's first report is dated two years back, then its clock walks forward a day per
    report, and every report is newer than the last: two years of feature-log rows and TSDB points in seconds.
    With ``max_first_report_age`` the first report must be recent; the later ones are then held by ``max_backdate``."""
    start = NOW - timedelta(days=730)
    walk = [report_raw(report("pc-1", i, realloc=90, at=start + timedelta(days=i)), offset=i) for i in range(1, 40)]
    unbounded = Table("pc-1").run(processor(), walk)
    assert unbounded.counts["accepted"] == 39  # the default: a simulated or archived history replays as it was
    assert len({r.day for r in unbounded.features}) == 39

    settings = StreamSettings(max_first_report_age=timedelta(days=14))
    table = Table("pc-1")
    refused = table.run(processor(settings), walk)
    assert refused.counts["accepted"] == 0
    assert refused.features == []
    assert refused.points == []
    assert {d.error_kind for d in refused.dead_letters} == {"clock_skew"}
    assert "before receive time" in refused.dead_letters[0].reason
    recent = [report_raw(report("pc-1", 100 + i, at=NOW - timedelta(days=13 - i)), offset=100 + i) for i in range(3)]
    assert table.run(processor(settings), recent).counts["accepted"] == 3  # a spool of the last two weeks gets in
    # once the device has a report, later ones are held by max_backdate, whatever max_first_report_age says
    backdated = report_raw(report("pc-1", 200, at=NOW - timedelta(days=13, hours=1)), offset=200)
    assert [d.error_kind for d in table.run(processor(settings), [backdated]).dead_letters] == ["clock_skew"]
