"""The endpoint agent against a real Kafka broker: delivery, a broker outage, and kill -9.

Agents under test run the real ``fleetpulse-agent run`` in a subprocess (outage, kill -9) or the
:class:`Agent` loop in-process (normal delivery); only the light collectors run so tests stay fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from fleetpulse.agents.collectors.config import StabilityConfig, SystemConfig
from fleetpulse.agents.identity import build_identity
from fleetpulse.agents.runner import Agent, build_collectors
from fleetpulse.agents.settings import AgentSettings, DeliverySettings, IdentitySettings
from fleetpulse.agents.spool import Spool
from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceEnrolment, DeviceInventory, HealthReport, Priority, Topics, decode, decode_report
from fleetpulse.contract.auth import ENROLMENT_TYPE, INVENTORY_TYPE, MAC_HEADER, TYPE_HEADER, mac_matches
from fleetpulse.models.registry import ScorerSet
from fleetpulse.streams.processing import Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings
from tests.harness import DedicatedKafka, free_port
from tests.integration.stream_support import read_topic

pytestmark = pytest.mark.integration

FLEET_SECRET = "test-fleet-secret-0f3c"
KAFKA_PASSWORD = "kafka-password-9d1e"
FAST_DELIVERY = DeliverySettings(
    linger_ms=20,
    max_block_ms=2_000,
    delivery_timeout_ms=8_000,
    flush_timeout_s=8.0,
    backoff_initial_s=0.5,
    backoff_max_s=3.0,
)


def consume(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, record_type: bytes | None = None
) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """Every record of ``topic`` of ``record_type`` (``fleetpulse-type`` header; None: reports) from the
    start, until ``expected`` arrived (and a little longer for extras)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        request_timeout_ms=10_000,
    )
    records: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for r in batch:
                    headers = dict(r.headers or [])
                    if headers.get(TYPE_HEADER) == record_type:
                        records.append((r.key, r.value, headers))
            if len(records) >= expected:
                settle_until = settle_until or time.monotonic() + 2.0  # catch duplicates that trail behind
                if time.monotonic() >= settle_until:
                    break
    finally:
        consumer.close()
    return records


def seqs_of(records: list[tuple[bytes, bytes, dict[str, bytes]]]) -> list[int]:
    out = []
    for key, value, headers in records:
        report = decode_report(value)
        assert key == report.device_id.encode()
        assert headers["seq"] == str(report.seq).encode()
        out.append(report.seq)
    return out


def agent_env(tmp_path: Path, kafka: KafkaSettings, interval_s: float) -> dict[str, str]:
    """A config of the real CLI via environment variables only (what a deployment may do too)."""
    env = dict(os.environ)
    env.update(
        FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        FLEETPULSE_AGENT_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        FLEETPULSE_AGENT_KAFKA__REQUEST_TIMEOUT_MS="5000",
        FLEETPULSE_AGENT_INTERVAL_S=str(interval_s),
        FLEETPULSE_AGENT_SPOOL_DIR=str(tmp_path / "spool"),
        FLEETPULSE_AGENT_IDENTITY__SECRET=FLEET_SECRET,
        FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD=KAFKA_PASSWORD,  # unused on PLAINTEXT; must never be logged
        FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE=str(tmp_path / "machine-id"),
        FLEETPULSE_AGENT_DEVICE_KIND="desktop",
        FLEETPULSE_AGENT_COLLECTORS='[{"kind": "system"}, {"kind": "stability", "crash_dirs": []}]',
        FLEETPULSE_AGENT_DELIVERY=FAST_DELIVERY.model_dump_json(),
    )
    (tmp_path / "machine-id").write_text(uuid.uuid4().hex)
    return env


def start_agent(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetpulse.agents.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("agent did not stop on SIGTERM")


def spooled(tmp_path: Path) -> tuple[int, int]:
    """(records waiting, reports produced so far) read from the agent's spool file."""
    with Spool(tmp_path / "spool" / "spool.sqlite3", 10**9) as spool:
        return spool.count(), spool.next_seq - spool.initial_seq


def first_seq(tmp_path: Path) -> int:
    """A new spool numbers from the clock (ms), so tests compare offsets from its first number."""
    with Spool(tmp_path / "spool" / "spool.sqlite3", 10**9) as spool:
        return spool.initial_seq


def test_check_delivers_the_enrolment_and_says_so(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    """What IT runs after installing an agent: one line, the enrolment on the health topic, nothing spooled."""
    env = agent_env(tmp_path, kafka_settings, interval_s=60)
    out = subprocess.run(
        [sys.executable, "-m", "fleetpulse.agents.cli", "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    topic = Topics(prefix=kafka_settings.topic_prefix).health
    assert out.stdout.startswith(f"ok: {kafka_settings.bootstrap_servers} acknowledged the enrolment of d"), out.stdout
    assert out.stdout.rstrip().endswith(f"on {topic} (not encrypted: kafka.security_protocol is PLAINTEXT)")
    device_id = out.stdout.split("enrolment of ")[1].split()[0]
    enrolments = [
        decode(value, DeviceEnrolment)
        for key, value, _ in consume(kafka_settings.bootstrap_servers, topic, 1, record_type=ENROLMENT_TYPE)
        if key == device_id.encode()
    ]
    assert len(enrolments) == 1
    assert not (tmp_path / "spool" / "spool.sqlite3").exists(), "a check spools nothing"
    assert KAFKA_PASSWORD not in out.stdout + out.stderr

    env["FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    down = subprocess.run(
        [sys.executable, "-m", "fleetpulse.agents.cli", "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 1
    assert down.stderr.startswith("error: 127.0.0.1:"), down.stderr
    assert "Traceback" not in down.stderr


def test_agent_delivers_every_report_once_in_order(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    settings = AgentSettings(
        kafka=kafka_settings,
        interval_s=0.2,
        spool_dir=tmp_path / "spool",
        identity=IdentitySettings(device_id="it-agent-1"),
        collectors=[SystemConfig(), StabilityConfig(crash_dirs=[])],
        delivery=FAST_DELIVERY,
    )
    ident = build_identity(settings.identity)
    agent = Agent(settings, ident, build_collectors(settings, ident, tmp_path / "state"))
    agent.run(max_reports=15)

    topics = Topics(prefix=kafka_settings.topic_prefix)
    records = consume(kafka_settings.bootstrap_servers, topics.health, expected=15)
    first = first_seq(tmp_path)
    assert seqs_of(records) == list(range(first, first + 15))
    report = decode_report(records[-1][1])
    assert isinstance(report, HealthReport)
    assert report.system is not None
    assert report.device_id == "it-agent-1"
    inventory = consume(kafka_settings.bootstrap_servers, topics.health, expected=1, record_type=INVENTORY_TYPE)
    assert decode(inventory[0][1], DeviceInventory).device_id == "it-agent-1"
    # every record is MACed with the key the agent created (owner-only) and enrolled on the same topic
    key_file = tmp_path / "spool" / "device.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    enrolments = consume(kafka_settings.bootstrap_servers, topics.health, 2, record_type=ENROLMENT_TYPE)
    assert len(enrolments) == 2  # the delivery session's and the one sent with the (daily) inventory
    assert {decode(value, DeviceEnrolment).key for _, value, _ in enrolments} == {key.hex()}
    # and the worker's processor accepts exactly what the real agent sent, in its order on the partition
    processor = Processor(StreamSettings(), topics, ScorerSet(champions=[]), AlertPolicy())
    wire = read_topic(kafka_settings, topics.health)
    raws = [RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.headers) for m in wire]
    result = processor.process_batch(raws, lambda _i, _d: None, datetime.now(UTC))
    assert not result.dead_letters, [d.reason for d in result.dead_letters]
    assert (result.counts["accepted"], result.counts["inventory"]) == (15, 1)
    assert all(mac_matches(key, value, headers.get(MAC_HEADER)) for _, value, headers in [*records, *inventory])
    assert spooled(tmp_path) == (0, 15), "everything acknowledged leaves the spool"
    stability_state = json.loads((tmp_path / "state" / "stability.json").read_text())
    assert stability_state["clean_stop"] is True, "an orderly stop is remembered (no false unexpected shutdown)"


@pytest.mark.slow
def test_broker_outage_of_60s_loses_and_duplicates_nothing(
    tmp_path: Path, dedicated_kafka: DedicatedKafka, topic_prefix: str
) -> None:
    kafka = KafkaSettings(bootstrap_servers=dedicated_kafka.bootstrap, topic_prefix=topic_prefix)
    topic = Topics(prefix=topic_prefix).health
    log = tmp_path / "agent.log"
    agent = start_agent(agent_env(tmp_path, kafka, interval_s=0.5), log)
    try:
        deadline = time.monotonic() + 60
        while spooled(tmp_path)[1] < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        before_outage = len(consume(dedicated_kafka.bootstrap, topic, expected=3, timeout_s=30))
        assert before_outage >= 3, "agent did not deliver before the outage"

        dedicated_kafka.stop()
        outage_started = time.monotonic()
        seq_at_outage = spooled(tmp_path)[1]
        time.sleep(65)
        waiting, seq_after_outage = spooled(tmp_path)
        produced_during_outage = seq_after_outage - seq_at_outage
        assert produced_during_outage >= 100, "the agent must keep collecting while the broker is down"
        assert waiting >= produced_during_outage
        dedicated_kafka.start()
        outage_s = time.monotonic() - outage_started

        deadline = time.monotonic() + 120
        while spooled(tmp_path)[0] > 0 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        stop_agent(agent)
    waiting, total = spooled(tmp_path)
    assert waiting == 0, f"{waiting} reports still spooled after recovery; log: {log.read_text()[-3000:]}"

    first = first_seq(tmp_path)
    seqs = [s - first for s in seqs_of(consume(dedicated_kafka.bootstrap, topic, expected=total, timeout_s=90))]
    counts = Counter(seqs)
    lost = sorted(set(range(total)) - set(counts))
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    print(
        f"\nOUTAGE {outage_s:.0f}s: produced during outage {produced_during_outage}, total {total}, "
        f"delivered {len(counts)}, lost {len(lost)}, duplicated {len(duplicated)}"
    )
    assert lost == []
    assert duplicated == []
    assert seqs == sorted(seqs), "reports arrive in collection order"


@pytest.mark.slow
def test_kill_9_during_sending_loses_nothing(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    env = agent_env(tmp_path, kafka_settings, interval_s=0.05)
    log = tmp_path / "agent.log"
    for round_ in range(4):
        agent = start_agent(env, log)
        time.sleep(3.0 + round_)  # long enough to be mid-send at a random point
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
    agent = start_agent(env, log)
    deadline = time.monotonic() + 60
    time.sleep(3)
    while spooled(tmp_path)[0] > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop_agent(agent)
    waiting, total = spooled(tmp_path)
    assert waiting == 0

    records = consume(kafka_settings.bootstrap_servers, Topics(prefix=kafka_settings.topic_prefix).health, total, 90)
    first = first_seq(tmp_path)
    by_seq: dict[int, set[bytes]] = {}
    for _, value, _ in records:
        by_seq.setdefault(decode_report(value).seq - first, set()).add(value)
    assert sorted(by_seq) == list(range(total)), "a report was lost across kill -9"
    assert all(len(v) == 1 for v in by_seq.values()), "a duplicate differs from its original: same seq reused"
    stability = [decode_report(value).stability for _, value, _ in records]
    assert not any(s and s.unexpected_shutdowns for s in stability), "killing the agent is not a machine crash"
    logged = log.read_text()
    assert "agent started" in logged
    assert FLEET_SECRET not in logged
    assert KAFKA_PASSWORD not in logged
    duplicates = len(records) - total
    print(f"\nKILL-9: {total} reports over 5 agent lives, delivered all, {duplicates} duplicate deliveries (same seq)")


def test_full_spool_during_outage_keeps_every_event(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    """Broker unreachable until the 64 KiB spool overflows: routine reports go, health events all arrive."""
    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix=kafka_settings.topic_prefix)
    env = agent_env(tmp_path, dead, interval_s=0.05)
    env["FLEETPULSE_AGENT_SPOOL_MAX_BYTES"] = str(64 * 1024)
    env["FLEETPULSE_AGENT_COLLECTORS"] = json.dumps(
        [{"kind": "system"}, {"kind": "stability", "crash_dirs": [str(crash_dir)]}]
    )
    log = tmp_path / "agent.log"
    agent = start_agent(env, log)
    try:
        deadline = time.monotonic() + 60
        while spooled(tmp_path)[1] < 5 and time.monotonic() < deadline:  # collecting (slow start under load)
            time.sleep(0.2)
        for i in range(3):  # three kernel crashes while the broker is unreachable
            (crash_dir / f"dmesg-efi-{i}").write_text("panic")
            time.sleep(1.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with Spool(tmp_path / "spool" / "spool.sqlite3", 10**9) as spool:
                if spool.evicted()[Priority.ROUTINE] > 50:
                    break
            time.sleep(0.5)
    finally:
        stop_agent(agent)

    env["FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS"] = kafka_settings.bootstrap_servers  # the broker is back
    env["FLEETPULSE_AGENT_INTERVAL_S"] = "5"
    agent = start_agent(env, log)
    try:
        deadline = time.monotonic() + 60
        while spooled(tmp_path)[0] > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop_agent(agent)
    with Spool(tmp_path / "spool" / "spool.sqlite3", 10**9) as spool:
        evicted, total, waiting = spool.evicted(), spool.next_seq - spool.initial_seq, spool.count()
    assert waiting == 0
    assert evicted[Priority.EVENT] == 0
    assert evicted[Priority.ROUTINE] > 50

    records = consume(
        kafka_settings.bootstrap_servers,
        Topics(prefix=kafka_settings.topic_prefix).health,
        total - evicted[Priority.ROUTINE],
    )
    reports = [decode_report(value) for _, value, _ in records]
    seqs = [r.seq for r in reports]
    assert seqs == sorted(set(seqs)), "in order, no duplicates"
    # every missing report is accounted for by an eviction (an evicted record may also have been in
    # flight and delivered, so the eviction count can exceed the number actually missing)
    assert total - len(seqs) <= evicted[Priority.ROUTINE]
    assert sum(r.stability.crashes for r in reports if r.stability) == 3, "every crash event survived the overflow"
