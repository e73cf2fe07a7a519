"""The worker's HTTP port serves metrics and health only.

Faust's web server also offers its table, router, graph and stats pages. The table pages answer
any device's table value, which holds the device's enrolled report key: whoever reaches the port
(any local user on a host, any pod when bound to the pod address) could forge that device's reports.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams.app import TABLE_NAME
from tests.integration.stream_support import Worker, create_topics, fleet_records, produce, small_fleet, table_state

pytestmark = [pytest.mark.integration]


def status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_attack_the_worker_port_serves_no_table_values(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = fleet_records(small_fleet(devices=10, days=2, seed=3), topics)
    produce(kafka_settings, records)
    worker = Worker(kafka_settings, tmp_path / "w").start()
    try:
        worker.wait_ready()
        worker.wait_events(len(records))
        states = table_state(kafka_settings)
        device_id, record = next((d, r) for d, r in states.items() if r.device_key)
        assert record.device_key is not None
        base = f"http://127.0.0.1:{worker.web_port}"
        for path in (
            "/table/",
            f"/table/{TABLE_NAME}/",
            f"/table/{TABLE_NAME}/{device_id}/",
            "/router/",
            "/graph/",
            "/stats/",
        ):
            code, body = status(base + path)
            assert code == 404, (path, code, body[:200])
            assert record.device_key.encode() not in body
        assert status(base + "/health")[0] == 200
        assert status(base + "/metrics")[0] == 200
    finally:
        worker.stop()
