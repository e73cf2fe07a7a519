"""The ticket commands of ``fleetpulse`` against a real Kafka topic and a SQLite store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from fleetpulse.cli import app
from fleetpulse.config import KafkaSettings
from fleetpulse.contract.codec import encode
from fleetpulse.contract.topics import Topics
from tests.alerts_support import make_alert, make_inventory

pytestmark = pytest.mark.integration


def test_consume_list_transition_export(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    env = {
        "FLEETPULSE_ALERTS__STORE_URL": f"sqlite:///{tmp_path}/tickets.db",
        "FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "FLEETPULSE_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
    }
    runner = CliRunner(env=env)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0

    topics = Topics(prefix=kafka_settings.topic_prefix)
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    producer.send(topics.inventory, key=b"pc-1", value=encode(make_inventory("pc-1")))
    for device in ("pc-1", "pc-2"):
        producer.send(topics.alerts, key=device.encode(), value=encode(make_alert(device)))
    producer.flush()
    producer.close()

    result = runner.invoke(app, ["tickets", "consume", "--until-idle", "2"])
    assert result.exit_code == 0, result.output
    assert "'opened': 2" in result.output

    listed = runner.invoke(app, ["tickets", "list", "--json"])
    tickets = [json.loads(line) for line in listed.output.splitlines()]
    assert sorted(t["device_id"] for t in tickets) == ["pc-1", "pc-2"]

    moved = runner.invoke(app, ["tickets", "transition", "1", "2", "--to", "approved", "--actor", "anna"])
    assert moved.exit_code == 0, moved.output
    refused = runner.invoke(app, ["tickets", "transition", "1", "--to", "done", "--actor", "anna"])
    assert refused.exit_code == 1
    assert "cannot go from 'approved' to 'done'" in refused.output

    out = tmp_path / "tickets.csv"
    assert runner.invoke(app, ["tickets", "export", "--state", "approved", "-o", str(out)]).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["state"] for r in rows} == {"approved"}
    assert len(rows) == 2
    assert runner.invoke(app, ["tickets", "list", "--component", "gpu"]).exit_code == 2
    hashed = runner.invoke(app, ["tickets", "hash-secret"], input="s3cret\ns3cret\n")
    assert hashed.output.strip().splitlines()[-1].startswith("$argon2id$")
