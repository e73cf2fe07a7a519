"""The decoded-state cache: capped, least recently used first, never serving a record the table does not hold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.contract import Topics, encode, report_key
from fleetpulse.models.registry import rule_scorers
from fleetpulse.models.state import DeviceState
from fleetpulse.streams import processing
from fleetpulse.streams.processing import BatchResult, DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings
from fleetpulse.streams.state_cache import IDLE_EVICTION_S, DecodedCache, entry_bytes

TOPICS = Topics(prefix="t.")
NOW = datetime(2026, 3, 1, tzinfo=UTC)
PARTITIONS = 3


def test_a_hit_needs_the_very_bytes_the_entry_was_stored_with() -> None:
    cache: DecodedCache[str] = DecodedCache(10**6)
    cache.put(0, b"d1", b"v1", "record of v1")
    assert cache.take(0, b"d1", b"v2") is None  # the table holds other bytes now: decode those
    assert cache.take(0, b"d1", b"v1") is None  # the mismatching take dropped the entry
    cache.put(0, b"d1", b"v1", "record of v1")
    assert cache.take(1, b"d1", b"v1") is None  # another partition's table is another table
    assert cache.take(0, b"d1", b"v1") == "record of v1"
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_served_record_is_lent_not_shared() -> None:
    cache: DecodedCache[str] = DecodedCache(10**6)
    cache.put(0, b"d1", b"v1", "record")
    assert cache.lookup(0, b"d1", b"v1", bytes.decode) == "record"
    assert cache.lookup(0, b"d1", b"v1", bytes.decode) == "v1"  # decoded: the first caller may change its copy
    assert len(cache) == 0
    assert cache.size_bytes == 0


def test_a_full_cache_keeps_its_reporting_devices_and_replaces_only_idle_ones() -> None:
    value = b"x" * 100
    clock = [0.0]
    cache: DecodedCache[int] = DecodedCache(3 * entry_bytes(len(value)), clock=lambda: clock[0])
    for n in range(3):
        cache.put(0, f"d{n}".encode(), value, n)
    cache.put(0, b"d3", value, 3)  # full of devices still reporting: the newcomer is not kept
    assert cache.take(0, b"d3", value) is None
    assert cache.size_bytes == 3 * entry_bytes(len(value))
    assert cache.take(0, b"d0", value) == 0
    clock[0] = IDLE_EVICTION_S
    cache.put(0, b"d0", value, 0)  # stored again: now the most recent
    cache.put(0, b"d4", value, 4)  # d1, unused for the idle limit, gives way
    assert len(cache) == 3
    assert [cache.take(0, key, value) for key in (b"d1", b"d2", b"d0", b"d4")] == [None, 2, 0, 4]


def test_devices_reporting_in_cycles_larger_than_the_cap_still_hit() -> None:
    """The fleet outgrows the cap: a least-recently-used cache would evict every device just before it reports."""
    value = b"x" * 100
    cache: DecodedCache[int] = DecodedCache(250 * entry_bytes(len(value)))
    for _ in range(4):
        for n in range(1000):
            key = f"d{n}".encode()
            cache.put(0, key, value, cache.lookup(0, key, value, lambda _raw, n=n: n))
    assert cache.hits == 3 * 250


def test_an_entry_over_the_cap_and_a_zero_cap_keep_nothing() -> None:
    cache: DecodedCache[int] = DecodedCache(entry_bytes(10))
    cache.put(0, b"big", b"x" * 11, 1)
    assert len(cache) == 0
    assert cache.size_bytes == 0
    disabled: DecodedCache[int] = DecodedCache(0)
    disabled.put(0, b"d", b"", 1)
    assert disabled.take(0, b"d", b"") is None


def test_dropped_partitions_lose_their_entries_only() -> None:
    cache: DecodedCache[int] = DecodedCache(10**6)
    for partition in range(4):
        cache.put(partition, b"d", b"v", partition)
    cache.drop_partitions([1, 3])
    assert len(cache) == 2
    assert cache.size_bytes == 2 * entry_bytes(1)
    assert [cache.take(p, b"d", b"v") for p in range(4)] == [0, None, 2, None]


class Worker:
    """The worker's table path without Kafka, as ``Pipeline.handle`` runs it: per-partition tables of
    bytes, lookups through the cache (or a plain decode), every stored record put back with its bytes."""

    def __init__(self, cache: DecodedCache[DeviceRecord] | None) -> None:
        self.processor = Processor(StreamSettings(), TOPICS, rule_scorers(), AlertPolicy())
        self.cache = cache
        self.tables: list[dict[bytes, bytes]] = [{} for _ in range(PARTITIONS)]

    def handle(self, batch: Sequence[RawRecord]) -> BatchResult:
        def lookup(index: int, device_id: str) -> DeviceRecord | None:
            partition, key = batch[index].partition, device_id.encode()
            raw = self.tables[partition].get(key)
            if raw is None:
                return None
            if self.cache is None:
                return DeviceRecord.from_bytes(raw)
            return self.cache.lookup(partition, key, raw, DeviceRecord.from_bytes)

        result = self.processor.process_batch(batch, lookup, NOW)
        for device_id, record in result.records.items():
            partition, key = batch[result.last_record_of[device_id]].partition, device_id.encode()
            value = record.to_bytes()
            self.tables[partition][key] = value
            if self.cache is not None:
                self.cache.put(partition, key, value, record)
        return result


def fleet_records(devices: int = 12, days: int = 6) -> list[RawRecord]:
    """Inventory, enrolments, then ``days`` of 6-hourly signed reports; every 7th report replayed (a duplicate)."""
    sim = FleetSimulator(
        devices, seed=3, start=NOW - timedelta(days=days + 1), days=days, report_interval=timedelta(hours=6)
    )
    out: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]] | None]] = []
    for inventory in sim.inventory():
        out.append((TOPICS.inventory, report_key(inventory.device_id), encode(inventory), None))
        signed = enrolment_record(
            inventory.device_id, sim.device_key(inventory.device_id), NOW - timedelta(days=days + 1)
        )
        out.append((TOPICS.health, signed.key, signed.value, signed.headers))
    for n, report in enumerate(sim.reports()):
        signed = signed_report(report, sim.device_key(report.device_id))
        out.append((TOPICS.health, signed.key, signed.value, signed.headers))
        if n % 7 == 0:
            out.append((TOPICS.health, signed.key, signed.value, signed.headers))
    out.append((TOPICS.health, b"d-hostile", b"{not json", None))
    return [
        RawRecord(topic, sum(key) % PARTITIONS, offset, key, value, headers)
        for offset, (topic, key, value, headers) in enumerate(out)
    ]


def in_batches(records: Sequence[RawRecord], sizes: Sequence[int]) -> Iterator[list[RawRecord]]:
    start, n = 0, 0
    while start < len(records):
        size = sizes[n % len(sizes)]
        yield list(records[start : start + size])
        start, n = start + size, n + 1


def effects(result: BatchResult) -> list[bytes]:
    return [
        *(encode(x) for x in (*result.scores, *result.alerts, *result.dead_letters, *result.features)),
        *(repr(point).encode() for point in result.points),
    ]


RECORDS = fleet_records()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=150), min_size=1, max_size=4))
def test_cached_records_give_the_same_state_and_effects_as_decoding_every_lookup(sizes: list[int]) -> None:
    cached, decoding = Worker(DecodedCache(10**8)), Worker(None)
    for batch in in_batches(RECORDS, sizes):
        assert effects(cached.handle(batch)) == effects(decoding.handle(batch))
    assert cached.tables == decoding.tables
    cache = cached.cache
    assert cache is not None
    assert cache.hits > 0
    kept = [(partition, key, raw) for partition, table in enumerate(cached.tables) for key, raw in table.items()]
    served = [(cache.take(partition, key, raw), raw) for partition, key, raw in kept]
    assert (
        sum(record is not None for record, _ in served) >= len(kept) - 12
    )  # a device's last lookup may be a duplicate
    for record, raw in served:
        assert record is None or (record == DeviceRecord.from_bytes(raw) and record.to_bytes() == raw)


def test_a_record_changed_before_a_processing_error_is_not_served_again(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(DecodedCache(10**8))
    setup = [r for r in RECORDS if r.topic == TOPICS.inventory or (r.value is not None and b'"seq"' not in r.value)]
    reports = [r for r in RECORDS if r.value is not None and b'"seq"' in r.value]
    worker.handle(setup)
    first = reports[0]
    second = next(r for r in reports if r.key == first.key and r.value != first.value)
    worker.handle([first])
    device_id = (first.key or b"").decode()
    partition = first.partition
    stored = worker.tables[partition][device_id.encode()]

    def half_applied(state: DeviceState, report: object) -> None:
        state.last_seq = 10**9  # changed in place, then the report fails
        raise ValueError("corrupt report")

    monkeypatch.setattr(processing, "apply_report_in_place", half_applied)
    result = worker.handle([second])
    assert result.counts["dead_letter.processing_error"] == 1
    assert worker.tables[partition][device_id.encode()] == stored
    monkeypatch.undo()
    result = worker.handle([second])  # decoded from the stored bytes: the report is new, not a duplicate
    assert result.counts["accepted"] == 1
    assert not result.dead_letters
