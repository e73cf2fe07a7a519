"""The real agent process on a corrupted spool, delivering to a real Kafka broker.

Each test damages the spool file as an attacker (or a failing disk) would, runs ``fleetpulse-agent
run`` on it, and checks that the agent keeps running, quarantines the file, and delivers every
record still readable in it, followed by its own reports numbered above the old ones, the first
of which tells the server what happened.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpulse.agents.spool import PAGE_SIZE, QUARANTINE_DIR
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics, decode_report
from tests.harness import free_port
from tests.integration.agent.test_agent_kafka import agent_env, consume, spooled, start_agent, stop_agent
from tests.unit.agent.test_spool import corrupt, filled_spool, readable_after

pytestmark = pytest.mark.integration

DEVICE = "corrupt-spool-device"
STORED = 300


def wait_for(
    condition: Callable[[], object], timeout_s: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"agent exited {proc.returncode} while waiting for {what}; log: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; log: {log.read_text()[-3000:]}")
        time.sleep(0.3)


def quarantined(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "spool" / QUARANTINE_DIR
    return sorted(folder.glob("*.sqlite3")) if folder.exists() else []


def drained(tmp_path: Path) -> bool:
    waiting, produced = spooled(tmp_path)
    return waiting == 0 and produced >= 2


def deliver_after_repair(tmp_path: Path, env: dict[str, str], log: Path) -> None:
    """Run the agent on the damaged spool until it repaired it and delivered everything, then stop it."""
    agent = start_agent(env, log)
    try:
        wait_for(lambda: quarantined(tmp_path), 60, "the spool to be quarantined", agent, log)
        wait_for(lambda: drained(tmp_path), 90, "salvaged records and two new reports to be delivered", agent, log)
    finally:
        stop_agent(agent)
    assert agent.returncode == 0


def check_delivered(
    kafka: KafkaSettings, values: dict[int, bytes], expected: set[int], maybe: set[int], log: Path
) -> None:
    records = consume(kafka.bootstrap_servers, Topics(prefix=kafka.topic_prefix).health, len(expected) + 2)
    old = {decode_report(value).seq: value for _, value, _ in records if decode_report(value).seq in values}
    new = [decode_report(value) for _, value, _ in records if decode_report(value).seq not in values]
    assert expected <= set(old) <= expected | maybe, "every readable record arrives, and nothing else of the old"
    assert all(values[seq] == value for seq, value in old.items()), "salvaged records arrive byte for byte"
    assert new, "the agent went on reporting"
    assert min(r.seq for r in new) > max(values), "the fresh spool numbers above the old one"
    first = min(new, key=lambda r: r.seq)
    spool_errors = [e.error for e in first.collector_errors if e.collector == "spool"]
    assert spool_errors, "the server learns of the repair from the next report"
    assert "corrupt" in spool_errors[0]
    assert f"{len(old)} records salvaged" in spool_errors[0]
    assert all(not any(e.collector == "spool" for e in r.collector_errors) for r in new if r is not first)
    logged = log.read_text()
    assert '"spool file corrupt: quarantined, readable records salvaged"' in logged


@pytest.mark.parametrize("how", ["header", "truncate", "meta", "random"])
def test_agent_salvages_a_corrupt_spool_and_delivers_every_readable_record(
    tmp_path: Path, kafka_settings: KafkaSettings, how: str
) -> None:
    """Before: exit 1 on every start (header, truncation, zeroed meta page) or a stalled agent (random bytes)."""
    env = agent_env(tmp_path, kafka_settings, interval_s=1.0)
    env["FLEETPULSE_AGENT_IDENTITY__DEVICE_ID"] = DEVICE
    path = tmp_path / "spool" / "spool.sqlite3"
    values = filled_spool(path, STORED, device_id=DEVICE)
    intact = path.read_bytes()
    expected, maybe = readable_after(intact, values, corrupt(path, how))
    found = path.read_bytes()
    log = tmp_path / "agent.log"

    deliver_after_repair(tmp_path, env, log)

    check_delivered(kafka_settings, values, expected, maybe, log)
    (kept,) = quarantined(tmp_path)
    assert kept.read_bytes() == found, "the corrupt file is kept as found, for forensics"


@pytest.mark.slow
def test_spool_damaged_while_running_stops_the_agent_non_zero_and_the_restart_salvages(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    """Before: the delivery thread died on DatabaseError, collection failed forever, the process never exited."""
    env = agent_env(tmp_path, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), interval_s=0.2)
    env["FLEETPULSE_AGENT_IDENTITY__DEVICE_ID"] = DEVICE
    env["FLEETPULSE_AGENT_KAFKA__TOPIC_PREFIX"] = kafka_settings.topic_prefix
    path = tmp_path / "spool" / "spool.sqlite3"
    values = filled_spool(path, STORED, device_id=DEVICE)
    intact = path.read_bytes()
    db = sqlite3.connect(path)
    (oldest_page,) = db.execute(  # the leftmost leaf: where delivery reads the oldest records from
        "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' ORDER BY path LIMIT 1"
    ).fetchone()
    db.close()
    log = tmp_path / "agent.log"
    agent = start_agent(env, log)  # broker unreachable: everything stays spooled, delivery keeps retrying
    try:
        wait_for(
            lambda: "agent started" in log.read_text() and spooled(tmp_path)[1] >= STORED + 3,
            60,
            "the agent to collect into the sound spool",
            agent,
            log,
        )
        damaged = ((oldest_page - 1) * PAGE_SIZE + 1000, (oldest_page - 1) * PAGE_SIZE + 1000 + 8192)
        with path.open("r+b") as fh:  # 8 KiB of random bytes mid-file, where delivery reads next
            fh.seek(damaged[0])
            fh.write(os.urandom(damaged[1] - damaged[0]))
        agent.wait(timeout=60)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        pytest.fail(f"the agent did not stop on its damaged spool; log: {log.read_text()[-3000:]}")
    assert agent.returncode == 1, "a dead thread ends the process non-zero, so the service manager restarts it"
    assert "agent stopping after an unrecoverable error" in log.read_text()

    expected, _ = readable_after(intact, values, damaged)
    env["FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS"] = kafka_settings.bootstrap_servers  # as restarted by systemd
    env["FLEETPULSE_AGENT_INTERVAL_S"] = "1.0"
    deliver_after_repair(tmp_path, env, log)
    records = consume(kafka_settings.bootstrap_servers, Topics(prefix=kafka_settings.topic_prefix).health, STORED)
    delivered = {decode_report(value).seq for _, value, _ in records}
    assert expected <= delivered, "every record readable after the damage arrives"
