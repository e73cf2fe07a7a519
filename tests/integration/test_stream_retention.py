"""Retention of silent devices on a real worker: thinned and erased states reach the changelog, and a worker
recovered from the changelog alone holds them so (streams/retention.py)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetpulse.agents.signing import derived_device_key, enrolment_record, signed_report
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceInventory, HealthReport, Topics, encode, report_key
from fleetpulse.streams.processing import DeviceRecord
from tests.integration.stream_support import (
    Record,
    Worker,
    create_topics,
    disk_report,
    produce,
    read_topic,
    table_state,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = datetime.now(UTC).replace(microsecond=0)
SILENT = NOW - timedelta(days=3)


def pc(topics: Topics, device: str, at: datetime, *, registered: bool, seqs: tuple[int, ...] = (1, 2)) -> list[Record]:
    key = derived_device_key(b"retention-test", device)
    records: list[Record] = []
    if registered:
        facts = DeviceInventory(device_id=device, kind="desktop", model="M70q", site="Depot", updated_at=SILENT)
        records.append((topics.inventory, report_key(device), encode(facts), []))
    enrolment = enrolment_record(device, key, at)
    records.append((topics.health, enrolment.key, enrolment.value, enrolment.headers))
    for seq in seqs:
        signed = signed_report(disk_report(device, seq, 0, at + timedelta(minutes=seq)), key)
        records.append((topics.health, signed.key, signed.value, signed.headers))
    return records


def phone(topics: Topics, device: str, at: datetime) -> list[Record]:
    facts = DeviceInventory(device_id=device, kind="phone", model="Pixel 8", updated_at=at)
    report = HealthReport(device_id=device, seq=1, source="mdm", collected_at=at, kind="phone", platform="android")
    return [
        (topics.mobile_inventory, report_key(device), encode(facts), []),
        (topics.mobile, report_key(device), encode(report), []),
    ]


def wait_for_erasure(kafka: KafkaSettings, device: str, timeout: float = 60.0) -> dict[str, DeviceRecord]:
    deadline = time.monotonic() + timeout
    while True:
        state = table_state(kafka)
        if device not in state or time.monotonic() > deadline:
            return state
        time.sleep(1)


def test_silent_devices_are_thinned_or_erased_in_the_changelog_and_stay_so_after_recovery(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    produce(
        kafka_settings,
        [
            *pc(topics, "pc-silent-registered", SILENT, registered=True),
            *pc(topics, "pc-silent-retired", SILENT, registered=False),
            *pc(topics, "pc-live", NOW - timedelta(hours=1), registered=True),
            *phone(topics, "mdm-silent", SILENT),
        ],
    )
    settings = {"state_retention": "P1D", "retention_check_s": 1}
    worker = Worker(kafka_settings, tmp_path / "w1", store="rocksdb", **settings).start()
    try:
        worker.wait_ready()
        wait_caught_up(kafka_settings)
        state = wait_for_erasure(kafka_settings, "pc-silent-retired")
    finally:
        worker.stop()
    applied = [
        json.loads(line) for line in worker.log_path.read_text().splitlines() if "state retention applied" in line
    ]
    assert sum(check.get("erased", 0) for check in applied) == 1  # the phone, silent past the retention, never entered
    assert sum(check.get("thinned", 0) for check in applied) == 1  # once: a thinned state has nothing left to thin
    assert not [check for check in applied if "unreadable" in check]  # Faust's offset key beside them is no device

    assert set(state) == {"pc-silent-registered", "pc-live"}
    thin, live = state["pc-silent-registered"], state["pc-live"]
    assert not thin.state.disks
    assert thin.policies == {}
    assert thin.device_key is not None
    assert (thin.state.site, thin.state.last_seq) == ("Depot", 2)
    assert live.state.disks

    # a worker with no RocksDB of its own rebuilds the table from the changelog, tombstones included: the erased
    # PC's enrolled key is gone, so its next report is refused until its agent enrols again; the thinned PC's is kept
    produce(
        kafka_settings,
        [
            pc(topics, "pc-silent-registered", NOW, registered=False, seqs=(3,))[-1],
            pc(topics, "pc-silent-retired", NOW, registered=False, seqs=(3,))[-1],
        ],
    )
    restarted = Worker(kafka_settings, tmp_path / "w2", store="rocksdb", instance="w2").start()
    try:
        restarted.wait_ready()
        wait_caught_up(kafka_settings)
    finally:
        restarted.stop()
    state = table_state(kafka_settings)
    assert "pc-silent-retired" not in state
    assert state["pc-silent-registered"].state.last_seq == 3
    dead = [json.loads(m.value) for m in read_topic(kafka_settings, topics.dead_letter)]
    assert [(d["key"], d["error_kind"]) for d in dead] == [("pc-silent-retired", "unauthenticated")]
