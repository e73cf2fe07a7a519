"""Device authenticity through the real Kafka and the real worker: the attacks of issue 13.

The attacker is another PC: it holds the agents' shared Kafka credential and knows the wire
format, but not the victim's device key.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.cli import app as fleetpulse_cli
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceInventory, HealthReport, Topics, encode
from fleetpulse.contract.auth import key_fingerprint
from fleetpulse.streams.partitioning import default_partition
from tests.integration.stream_support import (
    Record,
    Worker,
    create_topics,
    disk_report,
    group_id,
    produce,
    read_topic,
    replay_from_scratch,
    state_differences,
    table_state,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

VICTIM = "pc-victim"
VICTIM_KEY = os.urandom(32)
ATTACKER_KEY = os.urandom(32)


def victim_report(seq: int, realloc: int, at: datetime) -> HealthReport:
    return disk_report(VICTIM, seq, realloc, at)


def signed(report: HealthReport, key: bytes, topics: Topics) -> Record:
    record = signed_report(report, key)
    return topics.health, record.key, record.value, record.headers


def enrolment(key: bytes, topics: Topics, at: datetime) -> Record:
    record = enrolment_record(VICTIM, key, at)
    return topics.health, record.key, record.value, record.headers


def run_worker_until_caught_up(kafka: KafkaSettings, data_dir: Path) -> None:
    worker = Worker(kafka, data_dir, store="memory")
    worker.start()
    try:
        worker.wait_ready(timeout=180)  # a second worker in the group rejoins slowly on a loaded machine
        wait_caught_up(kafka, timeout=300)
    finally:
        worker.stop()


def test_forged_reports_for_another_device_change_nothing_and_its_alert_is_raised(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Attack 1 (seq = 2**48 from another PC) and attack 2 (collected_at = 2000-01-01), then the
    victim's disk degrades (reallocated sectors 2000 -> 4500): the alert must come."""
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    inventory = DeviceInventory(device_id=VICTIM, kind="desktop", site="Town Hall", updated_at=now - timedelta(days=20))
    history: list[Record] = [(topics.inventory, VICTIM.encode(), encode(inventory), [])]
    history.append(enrolment(VICTIM_KEY, topics, now - timedelta(days=11)))
    history += [signed(victim_report(d, 0, now - timedelta(days=10 - d)), VICTIM_KEY, topics) for d in range(10)]
    forged_seq = victim_report(2**48, 0, now - timedelta(hours=2))
    y2k = victim_report(11, 0, datetime(2000, 1, 1, tzinfo=UTC))
    attacks: list[Record] = [
        (topics.health, VICTIM.encode(), encode(forged_seq), []),  # unsigned, as every agent could before
        signed(forged_seq, ATTACKER_KEY, topics),  # signed with the attacker's own key
        enrolment(ATTACKER_KEY, topics, now),  # the attacker enrols its key for the victim
        signed(forged_seq, ATTACKER_KEY, topics),  # ...and tries again
        (topics.health, VICTIM.encode(), encode(y2k), []),
        signed(y2k, VICTIM_KEY, topics),  # even the device's own key (a clock bug) cannot move its clock back
        signed(forged_seq, VICTIM_KEY, topics),  # nor a seq bug block it
    ]
    degrading = [
        signed(victim_report(20 + i, 2000 + 500 * i, now - timedelta(minutes=60 - i)), VICTIM_KEY, topics)
        for i in range(6)
    ]
    produce(kafka_settings, [*history, *attacks, *degrading])

    run_worker_until_caught_up(kafka_settings, tmp_path / "w1")

    dead = [json.loads(m.value) for m in read_topic(kafka_settings, topics.dead_letter)]
    assert [d["error_kind"] for d in dead] == [
        "unauthenticated",
        "unauthenticated",
        "enrolment_conflict",
        "unauthenticated",
        "unauthenticated",
        "clock_skew",
        "seq_out_of_bounds",
    ]
    assert ATTACKER_KEY.hex() not in json.dumps(dead), "a dead letter must not carry a device key"
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert [(a["device_id"], a["component"], a["state"]) for a in alerts] == [(VICTIM, "disk", "raised")]
    record = table_state(kafka_settings)[VICTIM]
    assert record.state.last_seq == 25
    assert record.state.last_collected_at == now - timedelta(minutes=55)
    assert record.device_key == VICTIM_KEY.hex()
    assert not state_differences(table_state(kafka_settings), replay_from_scratch(kafka_settings).records)


def test_re_enrolment_cli_lets_a_reinstalled_device_back_in_and_locks_the_old_key_out(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reinstall creates a new key and a new spool (lower seq): its enrolment is refused until IT
    re-enrols the device with the fingerprint `fleetpulse-agent identity` printed on it."""
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    new_key = os.urandom(32)
    produce(
        kafka_settings,
        [
            enrolment(VICTIM_KEY, topics, now - timedelta(days=3)),
            *(signed(victim_report(100 + d, 0, now - timedelta(days=3 - d)), VICTIM_KEY, topics) for d in range(3)),
            enrolment(new_key, topics, now - timedelta(minutes=30)),  # reinstalled: refused, the device is pinned
        ],
    )
    run_worker_until_caught_up(kafka_settings, tmp_path / "w1")

    monkeypatch.setenv("FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("FLEETPULSE_KAFKA__TOPIC_PREFIX", kafka_settings.topic_prefix)
    cli = CliRunner()
    refused = cli.invoke(fleetpulse_cli, ["devices", "re-enrol", VICTIM, "--fingerprint", "not-hex"])
    assert refused.exit_code == 2, refused.output
    fingerprint = key_fingerprint(new_key)
    result = cli.invoke(
        fleetpulse_cli, ["devices", "re-enrol", VICTIM, "--fingerprint", fingerprint, "--issued-by", "it"]
    )
    assert result.exit_code == 0, result.output
    run_worker_until_caught_up(kafka_settings, tmp_path / "w2")
    assert table_state(kafka_settings)[VICTIM].device_key == new_key.hex()

    produce(
        kafka_settings,
        [
            enrolment(ATTACKER_KEY, topics, now),  # too late: the device is pinned to its new key
            signed(victim_report(0, 0, now - timedelta(minutes=10)), new_key, topics),  # fresh spool, lower seq
            signed(victim_report(200, 0, now - timedelta(minutes=5)), VICTIM_KEY, topics),  # the old key
        ],
    )
    run_worker_until_caught_up(kafka_settings, tmp_path / "w3")

    dead = [json.loads(m.value)["error_kind"] for m in read_topic(kafka_settings, topics.dead_letter)]
    assert dead == ["enrolment_conflict", "enrolment_conflict", "unauthenticated"]
    record = table_state(kafka_settings)[VICTIM]
    assert record.device_key == new_key.hex()
    assert (record.state.last_seq, record.state.last_collected_at) == (0, now - timedelta(minutes=10))


def test_records_produced_to_a_chosen_partition_are_refused(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Kafka's ACLs let the attacker write any partition of the health topic: its enrolment and failing reports
    for the victim, sent to another partition than the victim's, must not reach any state, alert or changelog."""
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    produce(
        kafka_settings,
        [
            enrolment(VICTIM_KEY, topics, now - timedelta(days=3)),
            *(signed(victim_report(d, 0, now - timedelta(days=3 - d)), VICTIM_KEY, topics) for d in range(3)),
        ],
    )
    home = default_partition(VICTIM.encode(), tuple(range(12)))
    chosen = (home + 5) % 12
    attack = [
        enrolment(ATTACKER_KEY, topics, now),
        *(
            signed(victim_report(100 + i, 6000, now - timedelta(minutes=30 - i)), ATTACKER_KEY, topics)
            for i in range(4)
        ),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    for topic, key, value, headers in attack:
        producer.send(topic, key=key, value=value, headers=headers, partition=chosen)
    producer.flush()
    producer.close()

    run_worker_until_caught_up(kafka_settings, tmp_path / "w1")

    dead = [json.loads(m.value) for m in read_topic(kafka_settings, topics.dead_letter)]
    assert [(d["error_kind"], d["partition"]) for d in dead] == [("wrong_partition", chosen)] * 5
    assert ATTACKER_KEY.hex() not in json.dumps(dead)
    assert read_topic(kafka_settings, topics.alerts) == []
    changelog = read_topic(kafka_settings, f"{group_id(kafka_settings)}-devices-changelog")
    assert {m.partition for m in changelog if m.key == VICTIM.encode()} == {home}
    record = table_state(kafka_settings)[VICTIM]
    assert (record.device_key, record.state.last_seq) == (VICTIM_KEY.hex(), 2)
