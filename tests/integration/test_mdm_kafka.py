"""``fleetpulse mdm ingest`` publishes mobile reports and its inventory to the real broker (its inventory on its
own topic, never IT's register); a replay adds no new (device, seq). A leaked bridge certificate's attack on IT's
register, through the real worker and ticket consumer, is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetpulse.alerts.consumer import consume_until_idle
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.cli import app
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import MDM_DEVICE_ID_PREFIX, DeviceInventory, Topics, decode, decode_report, encode
from fleetpulse.streams.settings import StreamSettings
from tests.integration.stream_support import Worker, create_topics, produce, read_topic, table_state, wait_caught_up
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
    inventory = [decode(v, DeviceInventory) for _, v, _ in _read_all(kafka_settings, topics.mobile_inventory, 4)]
    assert {i.model for i in inventory} == {"iPhone 13", "Pixel 7a"}
    assert all(i.device_id.startswith(MDM_DEVICE_ID_PREFIX) for i in inventory)
    assert read_topic(kafka_settings, topics.inventory) == [], "IT's register: the bridge's principal may not write it"


@pytest.mark.slow
def test_a_leaked_mdm_certificate_cannot_rewrite_a_pcs_register_facts(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """What the bridge's principal may write, on the real broker, through the real worker and ticket consumer:
    a PC moved to another site with a new warranty, disguised as a phone, and retired by a tombstone on the
    MDM inventory topic, then a desktop under a bridge id. All are dead-lettered; the phone's facts join."""
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    register = DeviceInventory(
        device_id="pc-1",
        kind="laptop",
        site="Town Hall",
        warranty_end=date(2024, 1, 1),
        updated_at=now - timedelta(hours=2),
    )
    moved = register.model_copy(update={"kind": "desktop", "site": "other", "warranty_end": date(2031, 1, 1)})
    moved = moved.model_copy(update={"updated_at": now - timedelta(hours=1)})
    disguised = moved.model_copy(update={"kind": "phone"})
    desktop = DeviceInventory(device_id="mdm-0a1b", kind="desktop", site="other", updated_at=now - timedelta(hours=1))
    phone = DeviceInventory(device_id="mdm-0c2d", kind="phone", model="iPhone 13", updated_at=now - timedelta(hours=1))
    produce(kafka_settings, [(topics.inventory, b"pc-1", encode(register))])
    attack = [(b"pc-1", encode(moved)), (b"pc-1", encode(disguised)), (b"pc-1", None), (b"mdm-0a1b", encode(desktop))]
    produce(kafka_settings, [(topics.mobile_inventory, key, value) for key, value in attack])
    produce(kafka_settings, [(topics.mobile_inventory, b"mdm-0c2d", encode(phone))])

    worker = Worker(kafka_settings, tmp_path / "w1", store="memory", instance="mdm-inv")
    worker.start()
    try:
        worker.wait_ready()
        wait_caught_up(kafka_settings)
    finally:
        worker.stop()
    table = table_state(kafka_settings)
    assert (table["pc-1"].state.site, table["pc-1"].state.warranty_end) == ("Town Hall", date(2024, 1, 1))
    assert table["pc-1"].inventory_at == register.updated_at
    assert "mdm-0a1b" not in table
    assert table["mdm-0c2d"].state.model == "iPhone 13"

    store_url = f"sqlite:///{tmp_path}/tickets.db"
    stats = consume_until_idle(
        AlertSettings(store_url=store_url), kafka_settings, StreamSettings(), idle_seconds=2, max_seconds=120
    )
    assert stats.results.get("inventory") == 2  # the register's PC and the bridge's phone
    store = TicketStore.open(store_url)
    try:
        pc, forged, joined = (store.get_device(d) for d in ("pc-1", "mdm-0a1b", "mdm-0c2d"))
    finally:
        store.close()
    assert pc is not None
    assert (pc.site, pc.warranty_end, pc.kind) == ("Town Hall", date(2024, 1, 1), "laptop")
    assert forged is None
    assert joined is not None
    assert joined.model == "iPhone 13"

    dead = [json.loads(m.value) for m in read_topic(kafka_settings, topics.dead_letter)]
    assert len(dead) == 8  # each of the four attack records, once by the worker and once by the ticket consumer
    assert {(d["error_kind"], d["source_topic"]) for d in dead} == {("unauthenticated", topics.mobile_inventory)}
    assert sorted(d["key"] for d in dead) == ["mdm-0a1b"] * 2 + ["pc-1"] * 6


def test_hostile_exports_publish_every_good_row_and_dead_letter_the_rest(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MDM attacks end to end: a BOM, a truncated file, a 200 KB CSV field, a 5000-digit number and
    personal data in allow-listed fields cost only their rows; every good row reaches the real broker."""
    monkeypatch.setenv("FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("FLEETPULSE_KAFKA__TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("FLEETPULSE_KAFKA__REQUEST_TIMEOUT_MS", "10000")
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "integration-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "state.sqlite"))

    def phone(intune_id: str, **fields: object) -> dict[str, object]:
        return {
            "id": intune_id,
            "operatingSystem": "iOS",
            "deviceType": "iPhone",
            "lastSyncDateTime": "2025-03-05T07:10:00Z",
            "hardwareInformation": {"batteryHealthPercentage": 88},
            **fields,
        }

    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"value": [phone("bom-1"), phone("bom-2")]}).encode())
    cut = json.dumps({"value": [phone("cut-1"), phone("cut-2")]})
    truncated = tmp_path / "truncated.json"
    truncated.write_text(cut[: cut.index('"cut-2"')])
    absurd = tmp_path / "absurd.json"
    absurd.write_text(
        json.dumps({"value": [phone("big-1", totalStorageSpaceInBytes=1), phone("big-2")]}).replace(
            '"totalStorageSpaceInBytes": 1', '"totalStorageSpaceInBytes": ' + "9" * 5000
        )
    )
    personal = tmp_path / "personal.json"
    personal.write_text(
        json.dumps(
            {
                "value": [
                    phone(
                        "pii-1",
                        operatingSystem="erika.mustermann@city.example",
                        lastSyncDateTime="0001-01-01T00:00:00Z",
                    ),
                    phone("pii-2"),
                ]
            }
        )
    )
    dead = tmp_path / "dead.jsonl"
    args = ["mdm", "ingest", str(bom), str(truncated), str(absurd), str(personal), "--dead-letter", str(dead)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "rows: 8, reports: 5, rejected: 3" in result.output
    assert "published 0 health, 5 mobile, 5 inventory records" in result.output

    header, *rows = (FIXTURES / "devices.csv").read_text().splitlines()
    wide = tmp_path / "wide.csv"
    wide.write_text("\n".join([header, rows[0].replace("iPhone 13", "M" * 200_000), rows[1]]) + "\n")
    csv_run = CliRunner().invoke(app, ["mdm", "ingest", str(wide), "--format", "csv", "--dead-letter", str(dead)])
    assert csv_run.exit_code == 3, csv_run.output
    assert "published 0 health, 1 mobile, 1 inventory records" in csv_run.output

    topics = Topics(prefix=kafka_settings.topic_prefix)
    reports = [decode_report(v) for _, v, _ in _read_all(kafka_settings, topics.mobile, 6)]
    assert len(reports) == 6
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(d["ref"], d["reason"]) for d in letters] == [
        (
            "truncated.json:line 1:page 1:item 1",
            "truncated JSON: the input ends inside a value; rest of the page skipped",
        ),
        ("absurd.json:page 1:item 0", "totalStorageSpace: a number of more than 20 digits"),
        ("personal.json:page 1:item 0", "lastSyncDateTime: device never synced"),
        ("wide.csv:line 2", "line longer than 65536 characters"),
    ]
    assert letters[2]["excerpt"]["withheld"] == {
        "operatingSystem": "value withheld: not a recognised non-personal value"
    }
    assert "mustermann" not in dead.read_text() + result.output


def _write_export(path: Path, size: int) -> int:
    """One Graph page of ``size`` bytes: ~5 KB managedDevice items as the beta endpoint returns them
    (most fields are compliance and configuration details the bridge ignores), every 50th never synced."""
    padding = {f"configurationDetail{n:03d}": "notApplicable" for n in range(150)}
    item = json.dumps(
        {
            "@odata.type": "#microsoft.graph.managedDevice",
            "id": "ID",
            "deviceName": "Phone",
            "operatingSystem": "iOS",
            "deviceType": "iPhone",
            "lastSyncDateTime": "SYNC",
            "manufacturer": "Apple",
            "model": "iPhone 13",
            "totalStorageSpaceInBytes": 127999672320,
            "freeStorageSpaceInBytes": 48318382080,
            "hardwareInformation": {"batteryHealthPercentage": 83, "batteryChargeCycles": 612},
            **padding,
        }
    )
    rows = written = 0
    with path.open("w") as out:
        out.write('{"@odata.context": "https://graph.microsoft.com/beta/$metadata#deviceManagement/managedDevices",')
        out.write(' "value": [\n')
        while written < size:
            chunk = ",\n".join(
                item.replace('"ID"', f'"dev-{n:09d}"').replace(
                    "SYNC", "0001-01-01T00:00:00Z" if n % 50 == 0 else "2025-03-04T07:15:42Z"
                )
                for n in range(rows, rows + 1000)
            )
            out.write(("," if rows else "") + chunk)
            rows += 1000
            written += len(chunk) + 1
        out.write("\n]}\n")
    return rows


@pytest.mark.slow
def test_a_500_mb_export_is_ingested_in_bounded_memory(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """The real CLI, as a subprocess, on one 500 MB Graph page: peak RSS stays under 200 MB."""
    export = tmp_path / "managed_devices.json"
    try:
        rows = _write_export(export, 500 * 1000 * 1000)
        env = {
            **os.environ,
            "FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "FLEETPULSE_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
            "FLEETPULSE_MDM__SECRET": "integration-secret",
            "FLEETPULSE_MDM__STATE_PATH": str(tmp_path / "state.sqlite"),
        }
        # A wrapper reports the peak RSS of its only child, the CLI (ru_maxrss is in KiB on Linux).
        wrapper = (
            "import resource, subprocess, sys\n"
            "code = subprocess.call(sys.argv[1:])\n"
            "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n"
        )
        cli = [sys.executable, "-m", "fleetpulse", "mdm", "ingest", str(export), "--to-kafka"]
        cli += ["--dead-letter", str(tmp_path / "dead.jsonl")]
        done = subprocess.run(
            [sys.executable, "-c", wrapper, *cli], env=env, capture_output=True, text=True, timeout=1800, check=False
        )
    finally:
        export.unlink(missing_ok=True)
    never_synced = (rows + 49) // 50
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"rows: {rows}, reports: {rows - never_synced}, rejected: {never_synced}" in done.stdout
    assert f"published 0 health, {rows - never_synced} mobile" in done.stdout
    peak_mib = int(done.stdout.rsplit("peak_rss_kib", 1)[1].split()[0]) / 1024
    print(f"mdm ingest of a 500 MB export ({rows} rows): peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 200
