"""The stream worker against the real Kafka: end to end, hostile input, kill -9, rebalance, broker restart.

Every fault test ends with the same check: the table state in the changelog equals a
replay of all input from scratch through the pure processor, and the alerts on the
topic are exactly the replay's alert ids (re-emitted copies share an id; the ticket
consumer opens one ticket per id).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import urllib.parse
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.agents.simulator import FleetSimulator
from fleetpulse.alerts.consumer import consume_until_idle
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics, encode, report_key
from fleetpulse.contract.auth import TYPE_HEADER, header
from fleetpulse.streams.process import WorkerProcess
from fleetpulse.streams.processing import _native as native
from fleetpulse.streams.settings import StreamSettings
from tests.harness import DedicatedKafka
from tests.integration.stream_support import (
    Record,
    Worker,
    create_topics,
    fleet_records,
    produce,
    read_topic,
    replay_from_scratch,
    small_fleet,
    state_differences,
    table_state,
    wait_caught_up,
)

pytestmark = pytest.mark.integration


def hostile_records(
    topics: Topics, valid: Record, count: int = 40
) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Malformed, oversized, wrong-version, schema-breaking, mis-keyed, unsigned and replayed records."""
    valid_report, valid_headers = valid[2] or b"", valid[3]
    rng = random.Random(5)
    doc = json.loads(valid_report)
    own = doc["device_id"].encode()
    crafted: list[tuple[bytes | None, bytes | None]] = [
        (b"pc-x", b"{not json"),
        (b"pc-x", b"\xff\xfe\x00garbage"),
        (b"pc-x", b"[]"),
        (b"pc-x", b"null"),
        (b"pc-x", b"x" * 300_000),
        (b"pc-x", None),
        (None, b"{}"),
        (own, json.dumps({**doc, "schema_version": 2}).encode()),
        (own, json.dumps({**doc, "seq": -1}).encode()),
        (own, json.dumps({**doc, "evil": "<script>"}).encode()),
        (own, json.dumps({**doc, "collected_at": "2026-01-01T00:00:00"}).encode()),  # naive time
        (own, json.dumps({**doc, "collected_at": "2099-01-01T00:00:00Z"}).encode()),  # clock skew
        (b"pc-x", json.dumps({**doc, "device_id": "../../etc/passwd"}).encode()),
        (b"pc-x", b'{"a":' * 5000 + b"1" + b"}" * 5000),  # deep nesting
        (b"other-key", valid_report),  # key does not match the device: would split state
        (own, json.dumps({**doc, "seq": doc["seq"] + 1}).encode()),  # not signed by the device
    ]
    while len(crafted) < count:
        crafted.append((b"fuzz", bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))))
    replay = (topics.health, own, valid_report, valid_headers)  # an already processed report, signed
    return [replay, *((topics.health, key, value, []) for key, value in crafted)]


def test_end_to_end_agent_to_tickets_with_dead_letters(
    kafka_settings: KafkaSettings, victoria_metrics_url: str, tmp_path: Path
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    # 35 days: the alerts this fleet raises need a month of history (battery wear-out is
    # projected only from a month of readings)
    records = fleet_records(small_fleet(devices=40, days=35), topics)
    first_report = next(r for r in records if r[0] == topics.health and not header(r[3], TYPE_HEADER))
    hostile = hostile_records(topics, first_report)
    produce(kafka_settings, records[: len(records) // 2])
    produce(kafka_settings, hostile)  # in the middle of valid traffic
    produce(kafka_settings, records[len(records) // 2 :])

    instance = f"e2e-{kafka_settings.topic_prefix.strip('.')}"
    worker = Worker(kafka_settings, tmp_path / "w1", store="memory", tsdb_url=victoria_metrics_url, instance=instance)
    worker.start()
    try:
        worker.wait_ready()
        wait_caught_up(kafka_settings)
        metrics = worker.metrics()
    finally:
        worker.stop()

    dead = [json.loads(m.value) for m in read_topic(kafka_settings, topics.dead_letter)]
    assert len(dead) == len(hostile)  # every hostile record, and only those
    assert all(d["reason"] for d in dead)
    kinds = Counter(d["error_kind"] for d in dead)
    assert {
        "malformed_json",
        "oversized",
        "unsupported_version",
        "schema_violation",
        "clock_skew",
        "stale_replay",
        "unauthenticated",
    } <= set(kinds)

    replay = replay_from_scratch(kafka_settings)
    assert not state_differences(table_state(kafka_settings), replay.records)
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert alerts
    assert {a["alert_id"] for a in alerts} == replay.alert_ids
    assert read_topic(kafka_settings, topics.scores)
    assert 'fleetpulse_stream_dead_letters_total{kind="stale_replay"} 1.0' in metrics
    log = worker.log_path.read_text()
    assert '"msg": "drift checked"' in log
    assert '"msg": "pipeline stats"' in log  # structured JSON logs

    store_url = f"sqlite:///{tmp_path}/tickets.db"
    stats = consume_until_idle(
        AlertSettings(store_url=store_url), kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=120
    )
    store = TicketStore.open(store_url)
    try:
        tickets = store.list_tickets(limit=10_000)
    finally:
        store.close()
    raised = {(a["device_id"], a["component"], a.get("component_id", "")) for a in alerts if a["state"] == "raised"}
    keys = [(t.device_id, t.component, t.component_id) for t in tickets]
    assert tickets
    assert stats.records
    assert len(keys) == len(set(keys)) <= len(raised)  # one replacement ticket per device and component

    urllib.request.urlopen(f"{victoria_metrics_url}/internal/force_flush", timeout=10).read()
    for series in ("risk_risk", "disk_reallocated_sectors", f'pipeline_events_total{{worker="{instance}"}}'):
        query = f"{victoria_metrics_url}/api/v1/export?match[]={urllib.parse.quote(series)}"
        assert urllib.request.urlopen(query, timeout=10).read(), f"no {series} in the TSDB"


def kill_9_and_restart(kafka_settings: KafkaSettings, data_dir: Path, worker: WorkerProcess) -> str:
    """Kill ``worker`` with no clean shutdown (offsets, changelog and RocksDB as they were), start it again and
    wait until it has caught up; returns the restarted worker's metrics.

    Same instance id and port: the static member takes its old place, but the group still moves to a new
    generation (seen in the logs), so the restart goes through Faust's table recovery and its final seek.
    """
    worker.kill9()
    restarted = Worker(kafka_settings, data_dir, store="rocksdb", instance="w1", web_port=worker.web_port).start()
    try:
        restarted.wait_ready()
        wait_caught_up(kafka_settings)
        return restarted.metrics()
    finally:
        restarted.stop()


def assert_replay_from_scratch_agrees(kafka_settings: KafkaSettings, topics: Topics) -> None:
    """The stored table and the alerts are what the pure processor computes from every input record, and
    replayed records after a kill are recognised, never applied twice."""
    replay = replay_from_scratch(kafka_settings)
    assert not state_differences(table_state(kafka_settings), replay.records)
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert {a["alert_id"] for a in alerts} == replay.alert_ids
    dead = Counter(json.loads(m.value)["error_kind"] for m in read_topic(kafka_settings, topics.dead_letter))
    assert set(dead) <= {"duplicate", "stale_replay"}


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_loses_nothing_and_duplicates_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = fleet_records(small_fleet(devices=80, days=30, seed=11), topics)
    produce(kafka_settings, records)

    worker = Worker(kafka_settings, tmp_path / "w1", store="rocksdb").start()
    try:
        worker.wait_ready()
        worker.wait_events(len(records) // 3)
        kill_9_and_restart(kafka_settings, tmp_path / "w1", worker)
    finally:
        worker.stop()

    assert_replay_from_scratch_agrees(kafka_settings, topics)


@pytest.mark.slow
def test_second_worker_joins_and_leaves_without_changing_the_outcome(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = fleet_records(small_fleet(devices=60, days=30, seed=3), topics)
    third = len(records) // 3
    produce(kafka_settings, records[:third])
    first = Worker(kafka_settings, tmp_path / "w1", store="memory", instance="w1").start()
    second = Worker(kafka_settings, tmp_path / "w2", store="memory", instance="w2")
    try:
        first.wait_ready()
        first.wait_events(third // 2)
        second.start()
        second.wait_ready()
        produce(kafka_settings, records[third : 2 * third])
        second.wait_events(1)  # the joiner really took over partitions
        produce(kafka_settings, records[2 * third :])
        second.stop()  # leaves mid-stream; its partitions move back after the session timeout
        wait_caught_up(kafka_settings)
    finally:
        second.stop()
        first.stop()

    replay = replay_from_scratch(kafka_settings)
    differences = state_differences(table_state(kafka_settings), replay.records)
    (tmp_path / "differences.txt").write_text("\n".join(differences))
    assert not differences
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert {a["alert_id"] for a in alerts} == replay.alert_ids


@pytest.mark.slow
def test_broker_restart_during_processing(dedicated_kafka: DedicatedKafka, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=dedicated_kafka.bootstrap, topic_prefix="br.", request_timeout_ms=10_000)
    topics = Topics(prefix=kafka.topic_prefix)
    create_topics(kafka)
    records = fleet_records(small_fleet(devices=60, days=30, seed=5), topics)
    half = len(records) // 2
    produce(kafka, records[:half])
    worker = Worker(kafka, tmp_path / "w1", store="rocksdb").start()
    try:
        worker.wait_ready()
        worker.wait_events(half // 3)
        dedicated_kafka.stop()
        time.sleep(3)
        dedicated_kafka.start()
        produce(kafka, records[half:])
        wait_caught_up(kafka, timeout=180)
        assert worker.running(), "the worker must survive a broker restart"
    finally:
        worker.stop()

    replay = replay_from_scratch(kafka)
    assert not state_differences(table_state(kafka), replay.records)
    alerts = [json.loads(m.value) for m in read_topic(kafka, topics.alerts)]
    assert {a["alert_id"] for a in alerts} == replay.alert_ids


def test_topics_are_created_with_explicit_partitions_and_compacted_inventory(kafka_settings: KafkaSettings) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    create_topics(kafka_settings)
    topics = Topics(prefix=kafka_settings.topic_prefix)
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics.all())}
        assert described == dict.fromkeys(topics.all(), 12)
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topics.inventory)])
        assert configs["topic"][topics.inventory]["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()


def test_created_topics_are_visible_to_a_producer_at_once(
    kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """ensure_topics returns only when the broker serves the topics' metadata, so the first
    producer does not log "not found in cluster metadata" while it retries."""
    from kafka import KafkaProducer

    create_topics(kafka_settings)
    topics = Topics(prefix=kafka_settings.topic_prefix)
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, max_block_ms=10_000)
    try:
        with caplog.at_level(logging.WARNING, logger="kafka"):
            assert {t: len(producer.partitions_for(t)) for t in topics.all()} == dict.fromkeys(topics.all(), 12)
    finally:
        producer.close(timeout=5)
    assert not [r for r in caplog.records if "not found in cluster metadata" in r.getMessage()]


def minute_fleet_records(devices: int, rounds: int, topics: Topics) -> list[Record]:
    """Inventory, enrolments, then ``rounds`` reports per device a minute apart, ending now: routine
    reports between scorings, which the worker's native fast path folds."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=rounds + 1)
    sim = FleetSimulator(devices, seed=5, start=start - timedelta(days=400), days=800)
    records: list[Record] = [(topics.inventory, report_key(i.device_id), encode(i), []) for i in sim.inventory()]
    enrolled: set[str] = set()
    for minute in range(rounds):
        for report in sim.live_reports(start + timedelta(minutes=minute)):
            if report.kind.value in ("phone", "tablet"):
                records.append((topics.mobile, report_key(report.device_id), encode(report), []))
                continue
            key = sim.device_key(report.device_id)
            if report.device_id not in enrolled:
                enrolment = enrolment_record(report.device_id, key, start - timedelta(minutes=1))
                records.append((topics.health, enrolment.key, enrolment.value, enrolment.headers))
                enrolled.add(report.device_id)
            signed = signed_report(report, key)
            records.append((topics.health, signed.key, signed.value, signed.headers))
    return records


def fast_path_reports(metrics: str) -> float:
    found = re.search(r"^fleetpulse_stream_fast_path_reports_total (\S+)$", metrics, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


@pytest.mark.skipif(native is None, reason="the native extension is not built here (`make native` needs cargo)")
def test_kill_9_while_reports_take_the_fast_path_leaves_the_state_a_python_replay_computes(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Reports a minute apart take the native fast path; a kill mid-stream and the restart (whose first
    report per device takes the Python path again, from a cold cache) end in exactly the state the pure
    Python processor computes from scratch, with the same alerts and no effect applied twice."""
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = minute_fleet_records(devices=150, rounds=12, topics=topics)
    produce(kafka_settings, records)
    reports = sum(
        1 for topic, _, _, headers in records if topic != topics.inventory and not header(headers, TYPE_HEADER)
    )

    worker = Worker(kafka_settings, tmp_path / "w1", store="rocksdb").start()
    try:
        worker.wait_ready()
        worker.wait_events(len(records) // 3)
        before_kill = fast_path_reports(worker.metrics())
        after_restart = fast_path_reports(kill_9_and_restart(kafka_settings, tmp_path / "w1", worker))
    finally:
        worker.stop()

    # both workers took reports on the fast path; most of a device's reports a minute apart need no scoring
    assert before_kill > 0
    assert after_restart > 0
    assert before_kill + after_restart > reports / 2
    assert_replay_from_scratch_agrees(kafka_settings, topics)
