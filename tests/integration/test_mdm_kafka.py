"""``fleetpulse mdm ingest`` publishes mobile reports to the real broker; a replay adds no new (device, seq)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpulse.cli import app
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceInventory, Topics, decode, decode_report
from tests.integration.test_simulator_kafka import _read_all

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mdm"


def test_mdm_ingest_publishes_and_replays_idempotently(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("FLEETPULSE_KAFKA__TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("FLEETPULSE_KAFKA__REQUEST_TIMEOUT_MS", "10000")
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "integration-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "state.sqlite"))
    args = ["mdm", "ingest", str(FIXTURES / "devices.csv"), "--format", "csv", "--to-kafka"]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 3, first.output  # two good rows published, four rejected
    assert "published 0 health, 2 mobile, 2 inventory records" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 3, second.output

    topics = Topics(prefix=kafka_settings.topic_prefix)
    mobile = _read_all(kafka_settings, topics.mobile, 4)
    reports = [decode_report(v) for _, v, _ in mobile]
    assert len(reports) == 4
    assert all(key == r.device_id.encode() for (key, _, _), r in zip(mobile, reports, strict=True))
    assert len({(r.device_id, r.seq) for r in reports}) == 2, "the replay carries the same dedup keys"
    assert len({r.model_dump_json() for r in reports}) == 2, "and byte-identical records"
    inventory = [decode(v, DeviceInventory) for _, v, _ in _read_all(kafka_settings, topics.inventory, 4)]
    assert {i.model for i in inventory} == {"iPhone 13", "Pixel 7a"}
