"""The native fast path gives exactly what the Python path gives, for a fleet and for hostile records.

Every test runs the same records through two processors, one with the fast path and one
without, and compares everything a batch produces: dead letters, counts, scores, alerts,
feature-log records, TSDB lines and the stored table values, byte for byte. A record the fast
path cannot handle exactly must fall through to the Python path, so each hostile record below
must come out the same both ways.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from fleetpulse.agents.signing import enrolment_record
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.contract import Topics, encode, report_key
from fleetpulse.contract.auth import MAC_HEADER, report_headers
from fleetpulse.models.registry import rule_scorers
from fleetpulse.streams import partitioning
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings

native = pytest.importorskip(
    "fleetpulse.streams._native", reason="the native extension is not built here (`make native` needs cargo)"
)

TOPICS = Topics(prefix="n.")
START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@dataclass
class Fleet:
    """Simulated devices' records: IT's register, every PC's enrolment, then rounds of reports a minute apart."""

    sim: FleetSimulator
    keys: dict[str, bytes] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, devices: int) -> Fleet:
        return cls(FleetSimulator(devices, seed=7, start=datetime(2025, 1, 1, tzinfo=UTC), days=800))

    def preamble(self) -> list[RawRecord]:
        records = [RawRecord(TOPICS.inventory, 0, 0, report_key(i.device_id), encode(i)) for i in self.sim.inventory()]
        for report in self.sim.live_reports(START - timedelta(minutes=1)):
            if report.kind.value in ("laptop", "desktop"):
                self.keys[report.device_id] = key = self.sim.device_key(report.device_id)
                enrolment = enrolment_record(report.device_id, key, START - timedelta(hours=1))
                records.append(RawRecord(TOPICS.health, 0, 0, enrolment.key, enrolment.value, enrolment.headers))
        return records

    def round(self, minute: int) -> list[RawRecord]:
        out = []
        for report in self.sim.live_reports(START + timedelta(minutes=minute)):
            seq = self.seqs[report.device_id] = self.seqs.get(report.device_id, -1) + 1
            value = encode(report.model_copy(update={"seq": seq}))
            out.append(self.record(report.device_id, value))
        return out

    def record(self, device_id: str, value: bytes) -> RawRecord:
        key = self.keys.get(device_id)
        if key is None:
            return RawRecord(TOPICS.mobile, 0, 0, device_id.encode(), value)
        return RawRecord(TOPICS.health, 0, 0, device_id.encode(), value, report_headers(key, value))


@dataclass
class Run:
    """One processor over a table of bytes, as the worker keeps it; ``validated`` holds what it wrote."""

    processor: Processor
    fast: bool
    table: dict[str, bytes] = field(default_factory=dict)
    validated: set[bytes] = field(default_factory=set)
    outputs: list[list[bytes]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    folded: int = 0
    """reports the fast path took"""

    def batch(self, records: Sequence[RawRecord], now: datetime) -> None:
        def lookup(_index: int, device_id: str) -> DeviceRecord | None:
            raw = self.table.get(device_id)
            return None if raw is None else DeviceRecord.from_bytes(raw)

        def stored(_index: int, device_id: str) -> bytes | None:
            raw = self.table.get(device_id)
            return raw if raw is not None and raw in self.validated else None

        result = self.processor.process_batch(records, lookup, now, None, stored if self.fast else None)
        for device_id, record in result.records.items():
            self.table[device_id] = value = record.to_bytes()
            self.validated.add(value)
        for device_id, value in result.encoded.items():
            if device_id not in result.records:
                self.table[device_id] = value
                self.validated.add(value)
        self.folded += len(result.collected_us)
        for name, count in result.counts.items():
            self.counts[name] = self.counts.get(name, 0) + count
        lines = [p.to_line_protocol().encode() for p in result.points] + result.lines
        self.outputs.append(
            sorted(
                [encode(x) for x in (*result.dead_letters, *result.scores, *result.alerts, *result.features)] + lines
            )
        )


def runs(settings: StreamSettings | None = None) -> tuple[Run, Run]:
    """A Python-path processor and a fast-path one, with the same settings otherwise."""
    settings = settings or StreamSettings()
    python_only = settings.model_copy(update={"native_fast_path": False})
    python = Processor(python_only, TOPICS, rule_scorers(), AlertPolicy())
    fast = Processor(settings, TOPICS, rule_scorers(), AlertPolicy())
    assert python.fast_path is None
    assert fast.fast_path is not None
    return Run(python, fast=False), Run(fast, fast=True)


def same(python: Run, fast: Run) -> None:
    assert fast.outputs == python.outputs
    assert fast.counts == python.counts
    assert fast.table == python.table  # byte for byte


def test_a_fleet_comes_out_the_same_and_its_reports_take_the_fast_path() -> None:
    fleet = Fleet.of(120)
    python, fast = runs()
    # each device's first report, routine ones, then scorings after the interval and on the next day
    minutes = [-1, 0, 1, 2, 3, 4, 5, 16, 17, 16 * 60 + 5, 16 * 60 + 6]
    batches = [(minute, fleet.preamble() if minute < 0 else fleet.round(minute)) for minute in minutes]
    for minute, batch in batches:
        now = START + timedelta(minutes=minute, seconds=30)
        for run in (python, fast):
            run.batch(batch, now)
    same(python, fast)
    reports = sum(len(b) for _, b in batches[1:])
    scored = reports - python.counts["not_rescored"]
    assert python.counts["accepted"] == reports
    assert python.folded == 0
    assert scored >= 3 * len(batches[1][1])  # the first report, after the interval, on the next day
    assert fast.folded == reports


def test_scorings_under_odd_rescore_settings_come_out_as_on_the_python_path() -> None:
    """Every report due (no interval), and a health event due however far back: a report dated the evening
    before the last scoring is its day's first scoring on both paths."""
    settings = StreamSettings(rescore_interval=timedelta(0), event_rescore_gap=timedelta(hours=-30))
    fleet = Fleet.of(40)
    python, fast = runs(settings)
    for minute, batch in enumerate([fleet.preamble(), fleet.round(0), fleet.round(1)]):
        for run in (python, fast):
            run.batch(batch, START + timedelta(minutes=minute, seconds=30))
    evening = []
    for record in fleet.round(2):
        assert record.key is not None
        assert record.value is not None
        report = json.loads(record.value)
        late = {**report, "collected_at": "2026-10-31T23:00:00Z", "stability": {"crashes": 1}}
        evening.append(fleet.record(record.key.decode(), json.dumps(late).encode()))
    for run in (python, fast):
        run.batch(evening, START + timedelta(minutes=2, seconds=30))
    same(python, fast)
    assert fast.folded == python.counts["accepted"]
    assert python.counts.get("not_rescored", 0) == 0


def _mutations(value: bytes) -> Iterator[tuple[str, bytes]]:
    report = json.loads(value)
    yield "unknown field", json.dumps({**report, "extra": 1}).encode()
    yield "agent_version null", json.dumps({**report, "agent_version": None}).encode()
    yield "seq as text", json.dumps({**report, "seq": str(report["seq"])}).encode()
    yield "seq as float", json.dumps({**report, "seq": float(report["seq"])}).encode()
    yield "seq replayed", json.dumps({**report, "seq": report["seq"] - 1}).encode()
    yield "seq gap", json.dumps({**report, "seq": report["seq"] + 5}).encode()
    yield "seq far ahead", json.dumps({**report, "seq": 2**47}).encode()
    yield "seq past the contract", json.dumps({**report, "seq": 2**64}).encode()
    yield "offset time", json.dumps({**report, "collected_at": report["collected_at"].replace("Z", "+02:00")}).encode()
    yield "time as number", json.dumps({**report, "collected_at": 1.8e9}).encode()
    yield "future time", json.dumps({**report, "collected_at": "2027-06-01T00:00:00Z"}).encode()
    yield "backdated time", json.dumps({**report, "collected_at": "2026-10-01T00:00:00Z"}).encode()
    yield "year 1999", json.dumps({**report, "collected_at": "1999-12-31T23:59:59Z"}).encode()
    yield "other device", json.dumps({**report, "device_id": "sim-other"}).encode()
    yield "schema 2", json.dumps({**report, "schema_version": 2}).encode()
    yield "duplicate key", value[:-1] + b',"seq":0}'
    yield "truncated", value[: len(value) // 2]
    yield "not json", b"\xff\xfe" + value
    yield "oversized", value[:-1] + b',"agent_version":"' + b"x" * (300 * 1024) + b'"}'
    yield "crash event", json.dumps({**report, "stability": {"crashes": 3}}).encode()
    yield "source mdm", json.dumps({**report, "source": "mdm"}).encode()
    yield "source agent", json.dumps({**report, "source": "agent"}).encode()
    yield "long agent_version", json.dumps({**report, "agent_version": "v" * 129}).encode()
    disks = report.get("disks", [])
    if disks:
        first = disks[0]
        yield "disk name with space", json.dumps({**report, "disks": [{**first, "name": "a b,c=d"}]}).encode()
        yield "disk serial with backslash", json.dumps({**report, "disks": [{**first, "serial_hash": "a\\b"}]}).encode()
        yield "disk serial with newline", json.dumps({**report, "disks": [{**first, "serial_hash": "a\nb"}]}).encode()
        yield "temperature out of range", json.dumps({**report, "disks": [{**first, "temperature_c": 151}]}).encode()
        yield "negative counter", json.dumps({**report, "disks": [{**first, "reallocated_sectors": -1}]}).encode()
        yield "smart failed", json.dumps({**report, "disks": [{**first, "smart_passed": False}]}).encode()
        many = [{**first, "name": f"d{i}", "serial_hash": f"s{i}"} for i in range(9)]
        yield "nine new disks", json.dumps({**report, "disks": many}).encode()
    if report.get("battery"):
        battery = report["battery"]
        yield (
            "battery over twice design",
            json.dumps(
                {**report, "battery": {**battery, "full_charge_capacity": battery["design_capacity"] * 3}}
            ).encode(),
        )
        yield "battery replaced", json.dumps({**report, "battery": {**battery, "design_capacity": 12345.5}}).encode()


@pytest.mark.parametrize("topic", ["health", "mobile"])
def test_attack_hostile_reports_come_out_as_on_the_python_path(topic: str) -> None:
    """Each hostile variant of a routine report gives the Python path's dead letter, counts and state."""
    fleet = Fleet.of(60)
    warm = [fleet.preamble(), fleet.round(0), fleet.round(1)]
    nxt = fleet.round(2)
    wanted = TOPICS.health if topic == "health" else TOPICS.mobile
    target = next(r for r in nxt if r.topic == wanted and r.value is not None and b'"disks":[{' in r.value)
    device_id = target.key.decode() if target.key else ""
    assert target.value is not None
    tried = 0
    for name, value in [("unchanged", target.value), *_mutations(target.value)]:
        python, fast = runs()
        for minute, batch in enumerate(warm):
            for run in (python, fast):
                run.batch(batch, START + timedelta(minutes=minute, seconds=30))
        hostile = fleet.record(device_id, value)
        before = fast.folded
        for run in (python, fast):
            run.batch([hostile], START + timedelta(minutes=2, seconds=30))
        assert fast.outputs == python.outputs, name
        assert fast.counts == python.counts, name
        assert fast.table == python.table, name
        if name == "unchanged":
            assert fast.folded - before == 1, "the unchanged report must take the fast path"
        tried += 1
    assert tried >= 25


def _first_report_mutations(value: bytes) -> Iterator[tuple[str, bytes]]:
    report = json.loads(value)
    at = datetime.fromisoformat(report["collected_at"].replace("Z", "+00:00"))
    bound = int(at.timestamp() * 1000) + int(StreamSettings().max_clock_skew.total_seconds() * 1000)
    yield "seq at the clock's bound", json.dumps({**report, "seq": bound}).encode()
    yield "seq past the clock's bound", json.dumps({**report, "seq": bound + 1}).encode()
    yield "seq at the jump", json.dumps({**report, "seq": StreamSettings().max_seq_jump}).encode()
    for days in (13, 15):
        earlier = (at - timedelta(days=days)).isoformat().replace("+00:00", "Z")
        yield f"{days} days old", json.dumps({**report, "collected_at": earlier}).encode()
    yield from _mutations(value)


@pytest.mark.parametrize("topic", ["health", "mobile"])
def test_attack_hostile_first_reports_come_out_as_on_the_python_path(topic: str) -> None:
    """A device's first report scores it on the fast path; each hostile variant comes out as on the Python path."""
    fleet = Fleet.of(60)
    preamble = fleet.preamble()
    wanted = TOPICS.health if topic == "health" else TOPICS.mobile
    target = next(r for r in fleet.round(0) if r.topic == wanted and r.value is not None and b'"disks":[{' in r.value)
    device_id = target.key.decode() if target.key else ""
    assert target.value is not None
    settings = StreamSettings(max_first_report_age=timedelta(days=14))
    refused = 0
    for name, value in [("unchanged", target.value), *_first_report_mutations(target.value)]:
        python, fast = runs(settings)
        for run in (python, fast):
            run.batch(preamble, START - timedelta(seconds=30))
        for run in (python, fast):
            run.batch([fleet.record(device_id, value)], START + timedelta(seconds=30))
        same(python, fast)
        refused += fast.folded == 0
        if name in ("unchanged", "seq at the clock's bound", "seq at the jump", "13 days old"):
            assert fast.folded == 1, name
            assert len(python.outputs[-1]) > 1, f"{name}: the first report scores its device"
        if name in ("seq past the clock's bound", "15 days old"):
            assert fast.folded == 0, name
            assert sum(v for k, v in python.counts.items() if k.startswith("dead_letter.")) == 1, name
    assert refused >= 20


def test_attack_a_forged_or_missing_mac_is_refused_as_on_the_python_path() -> None:
    fleet = Fleet.of(40)
    warm = [fleet.preamble(), fleet.round(0), fleet.round(1)]
    target = next(r for r in fleet.round(2) if r.topic == TOPICS.health)
    assert target.value is not None
    forged = [(MAC_HEADER, b"\0" * 32)]
    for headers in (forged, [], None, [(MAC_HEADER, b"short")]):
        python, fast = runs()
        for minute, batch in enumerate(warm):
            for run in (python, fast):
                run.batch(batch, START + timedelta(minutes=minute, seconds=30))
        record = RawRecord(target.topic, 0, 0, target.key, target.value, headers)
        for run in (python, fast):
            run.batch([record], START + timedelta(minutes=2, seconds=30))
        same(python, fast)
        assert python.counts["dead_letter.unauthenticated"] == 1


def _corruptions(value: bytes) -> Iterator[tuple[str, bytes]]:
    size = int.from_bytes(value[4:8], "little")
    header = json.loads(value[8 : 8 + size])

    def with_header(changed: dict[str, object]) -> bytes:
        text = json.dumps(changed, separators=(",", ":")).encode()
        return value[:4] + len(text).to_bytes(4, "little") + text + value[8 + size :]

    yield "a newer field", with_header({**header, "added_later": 1})
    yield "a newer state field", with_header({**header, "state": {**header["state"], "added_later": 1}})
    yield "last_seq as text", with_header({**header, "state": {**header["state"], "last_seq": "1"}})
    yield "device key not hex", with_header({**header, "device_key": "zz" * 32})
    yield "version 2", value[:3] + b"\x02" + value[4:]
    yield "truncated", value[:-3]
    yield "a byte after the end", value + b"\0"
    yield "a NaN that is not MISSING", value[:-8] + (0x7FF8000000000001).to_bytes(8, "little")
    yield "an infinity", value[:-8] + (0x7FF0000000000000).to_bytes(8, "little")
    yield "header past the end", value[:4] + (len(value)).to_bytes(4, "little") + value[8:]


def test_attack_stored_values_it_does_not_read_exactly_are_left_to_the_python_path() -> None:
    fleet = Fleet.of(30)
    python, _ = runs()
    for minute, batch in enumerate([fleet.preamble(), fleet.round(0), fleet.round(1)]):
        python.batch(batch, START + timedelta(minutes=minute, seconds=30))
    target = next(r for r in fleet.round(2) if r.topic == TOPICS.health)
    assert target.key is not None
    assert target.value is not None
    stored = python.table[target.key.decode()]
    core = Processor(StreamSettings(), TOPICS, rule_scorers(), AlertPolicy()).fast_path
    assert core is not None
    now = int((START + timedelta(minutes=2, seconds=30) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
    mac = dict(target.headers or [])[MAC_HEADER]
    assert core.fold(target.key, stored, target.value, mac, False, now) is not None
    for name, corrupted in _corruptions(stored):
        assert core.fold(target.key, corrupted, target.value, mac, False, now) is None, name


def test_a_worker_without_the_setting_uses_the_python_path_only() -> None:
    processor = Processor(StreamSettings(native_fast_path=False), TOPICS, rule_scorers(), AlertPolicy())
    assert processor.fast_path is None


def test_the_worker_hashes_keys_with_the_extension_s_murmur2() -> None:
    assert partitioning.key_hash is native.murmur2
    for key in (b"", b"a", b"ab", b"abc", b"sim0007-000000|disk|0123456789abcdef|daily|2026-12-05"):
        assert native.murmur2(key) == partitioning.murmur2(key)
