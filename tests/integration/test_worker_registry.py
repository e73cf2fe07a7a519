"""The real worker process started on a registry whose champion's threshold was edited on disk.

It must refuse the artifact, say so in its log, and keep scoring and alerting with the
disk rule as champion (never the edited 1.0 threshold that would turn disk alerts off).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetpulse.agents.signing import derived_device_key, enrolment_record, signed_report
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceInventory, DiskHealth, HealthReport, Topics, encode
from fleetpulse.contract.v1 import ScorerRole
from fleetpulse.models.index import METADATA_FILE
from fleetpulse.models.registry import register_artifact
from tests.integration.stream_support import Record, Worker, create_topics, produce, read_topic, wait_caught_up
from tests.unit.test_models_artifact import artifact_dir

__all__ = ["artifact_dir"]  # fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def one_pc(topics: Topics, disks: list[DiskHealth]) -> list[Record]:
    """pc-1's inventory, its enrolment, then one signed report a day with ``disks[day]``, ending yesterday."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=len(disks) + 1)
    key = derived_device_key(b"registry-test", "pc-1")
    enrolment = enrolment_record("pc-1", key, start)
    inventory = DeviceInventory(device_id="pc-1", kind="desktop", updated_at=start)
    records: list[Record] = [
        (topics.inventory, b"pc-1", encode(inventory), []),
        (topics.health, enrolment.key, enrolment.value, enrolment.headers),
    ]
    for day, disk in enumerate(disks):
        report = HealthReport(
            device_id="pc-1",
            seq=day,
            collected_at=start + timedelta(days=day),
            kind="desktop",
            platform="linux",
            disks=[disk],
        )
        signed = signed_report(report, key)
        records.append((topics.health, signed.key, signed.value, signed.headers))
    return records


def test_worker_refuses_an_edited_threshold_and_alerts_with_the_disk_rule(
    kafka_settings: KafkaSettings, artifact_dir: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(artifact_dir, registry / "disk-gbm-test")
    register_artifact(registry, "disk", "disk-gbm-test", ScorerRole.CHAMPION)
    meta_path = registry / "disk-gbm-test" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 1.0
    meta_path.write_text(json.dumps(meta))

    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    failing = [
        DiskHealth(name="sda", serial_hash="s1", reallocated_sectors=4000 + 100 * d, smart_passed=False)
        for d in range(4)
    ]
    produce(kafka_settings, one_pc(topics, failing))

    worker = Worker(kafka_settings, tmp_path / "w1", store="memory", instance="registry")
    worker.extra_env["FLEETPULSE_MODELS__REGISTRY_DIR"] = str(registry)
    worker.start()
    try:
        assert worker.wait_ready()["status"] == "ok"
        wait_caught_up(kafka_settings)
    finally:
        worker.stop()

    log = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    refused = [entry for entry in log if entry.get("msg") == "model artifact refused: serving without it"]
    assert refused
    assert refused[0]["level"] == "error"
    assert "metadata.json: SHA-256" in refused[0]["error"]
    serving = next(entry for entry in log if entry.get("msg") == "serving")
    assert serving["champions"][0].startswith("disk-rule:")
    assert serving["refused"]
    assert serving["thresholds"].get("disk", serving["thresholds"]["default"])[0] != 1.0

    scores = [json.loads(m.value) for m in read_topic(kafka_settings, topics.scores)]
    disk = [s for s in scores if s["component"] == "disk" and s["role"] == "champion"]
    assert disk
    assert {s["model_name"] for s in disk} == {"disk-rule"}
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert any(a["component"] == "disk" and a["state"] == "raised" for a in alerts)


def test_the_running_worker_serves_a_promoted_champion_without_a_restart(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """`fleetpulse models promote` while the worker runs: its next reports are scored by the new champion."""
    from typer.testing import CliRunner

    from fleetpulse.cli import app as cli_app
    from fleetpulse.models.index import read_registry
    from fleetpulse.models.registry import load_artifact
    from fleetpulse.models.settings import SHIPPED_REGISTRY
    from tests.unit.test_models_fleet import fleet_challenger

    shipped = read_registry(SHIPPED_REGISTRY)
    registry = tmp_path / "models"
    artifact = fleet_challenger(load_artifact(shipped, SHIPPED_REGISTRY, shipped.champions["disk"]), registry, True)
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = one_pc(
        topics, [DiskHealth(name="sda", serial_hash="s1", media_errors=d, reallocated_sectors=10 * d) for d in range(6)]
    )
    produce(kafka_settings, records[:5])  # inventory, enrolment, three reports
    worker = Worker(kafka_settings, tmp_path / "w1", store="memory", instance="reload", registry_poll_s=1)
    worker.extra_env["FLEETPULSE_MODELS__REGISTRY_DIR"] = str(registry)
    worker.start()
    try:
        assert worker.wait_ready()["status"] == "ok"
        wait_caught_up(kafka_settings)
        env = {
            "FLEETPULSE_ALERTS__STORE_URL": f"sqlite:///{tmp_path}/tickets.db",
            "FLEETPULSE_MODELS__REGISTRY_DIR": str(registry),
        }
        promoted = CliRunner().invoke(cli_app, ["models", "promote", artifact], env=env)
        assert promoted.exit_code == 0, promoted.output
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while "serving reloaded models" not in worker.log_path.read_text():
            assert datetime.now(UTC) < deadline, "the worker did not pick up the promoted champion"
            time.sleep(0.5)
        produce(kafka_settings, records[5:])
        wait_caught_up(kafka_settings)
        assert worker.running(), "served by the same process"
    finally:
        worker.stop()

    champion_scores = [
        json.loads(m.value)
        for m in read_topic(kafka_settings, topics.scores)
        if json.loads(m.value)["component"] == "disk" and json.loads(m.value)["role"] == "champion"
    ]
    by_seq = {s["report_seq"]: s["model_name"] for s in champion_scores}
    assert [by_seq[seq] for seq in range(6)] == ["disk-gbm"] * 3 + ["disk-fleet"] * 3
