"""Upgrading the worker in place: a table stored as JSON (version 1) or in version 2 keeps working.

A worker writing a previous table codec fills its RocksDB store and changelog with half of a
fleet's input; the current worker continues on the same data directory, group and changelog
with the rest. It must read every old value, rewrite each device it updates in the current
encoding, and end with the same table, scores and alerts as a clean run of the current code
over all input (the pure processor replayed from scratch).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.models.registry import load_scorers
from fleetpulse.streams.process import WorkerProcess
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings
from tests.integration.stream_support import (
    RULES_ONLY,
    Worker,
    create_topics,
    fleet_records,
    group_id,
    produce,
    read_topic,
    replay_from_scratch,
    small_fleet,
    state_differences,
    table_state,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

JSON_CODEC = '''"""Loaded at start-up of the worker child: the previous version's table codec, JSON (version 1)."""
from fleetpulse.streams.processing import DeviceRecord

DeviceRecord.to_bytes = lambda self: self.model_dump_json().encode()
'''
VERSION_2_CODEC = '''"""Loaded at start-up of the worker child: the version-2 table codec's encoder (each history whole:
days, column ids, dense values, then a presence mask and the present values of each sparse column)."""
import struct
from array import array

from fleetpulse.models.state_codec import COLUMN_ID, HISTORY_FIELDS, series_of
from fleetpulse.streams.processing import DeviceRecord


def pack_series(series, out):
    days, columns = series.days, series.columns
    dense = [name for name, col in columns.items() if all(v == v for v in col)]
    sparse = [name for name in columns if name not in dense]
    out += [struct.pack("<HBB", len(days), len(dense), len(sparse)), days.tobytes()]
    out += [bytes(COLUMN_ID[name] for name in dense), bytes(COLUMN_ID[name] for name in sparse)]
    out += [columns[name].tobytes() for name in dense]
    for name in sparse:
        mask = bytearray((len(days) + 7) // 8)
        for i, v in enumerate(columns[name]):
            if v == v:
                mask[i >> 3] |= 1 << (i & 7)
        out += [bytes(mask), array("d", [v for v in columns[name] if v == v]).tobytes()]


def to_bytes(self):
    header = self.model_dump_json(exclude={"state": HISTORY_FIELDS}).encode()
    series = series_of(self.state)
    out = [struct.pack("<3sBI", b"FPS", 2, len(header)), header, bytes((len(series),))]
    for history in series:
        pack_series(history, out)
    return b"".join(out)


DeviceRecord.to_bytes = to_bytes
'''


def old_codec_worker(kafka: KafkaSettings, data_dir: Path, shim: Path, codec: str) -> WorkerProcess:
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "sitecustomize.py").write_text(codec)
    worker = Worker(kafka, data_dir, store="rocksdb", instance="w1")
    worker.extra_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    return worker


def latest_values(kafka: KafkaSettings) -> dict[str, bytes]:
    return {m.key.decode(): m.value for m in read_topic(kafka, f"{group_id(kafka)}-devices-changelog")}


def score_keys(scores: list[dict[str, object]]) -> set[tuple[object, ...]]:
    return {
        (s["device_id"], s["component"], s["component_id"], s["model_name"], s["report_seq"], s["risk"]) for s in scores
    }


def replayed_scores(kafka: KafkaSettings) -> list[dict[str, object]]:
    """The scores of a clean run: the pure processor over all input, as ``replay_from_scratch`` runs it."""
    topics = Topics(prefix=kafka.topic_prefix)
    processor = Processor(StreamSettings(), topics, load_scorers(RULES_ONLY), AlertPolicy())
    table: dict[str, DeviceRecord] = {}
    raws = [
        RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.headers)
        for name in (topics.inventory, topics.mobile_inventory, topics.control, topics.health, topics.mobile)
        for m in read_topic(kafka, name)
    ]
    scores = []
    for i in range(0, len(raws), 500):
        result = processor.process_batch(
            raws[i : i + 500],
            lambda _i, d: DeviceRecord.from_bytes(table[d].to_bytes()) if d in table else None,
            datetime.now(UTC),
        )
        table.update(result.records)
        scores += [s.model_dump(mode="json") for s in result.scores]
    return scores


@pytest.mark.slow
@pytest.mark.parametrize(("codec", "old_start"), [(JSON_CODEC, b"{"), (VERSION_2_CODEC, b"FPS\x02")], ids=["v1", "v2"])
def test_an_old_table_is_read_and_rewritten_in_version_3_by_the_next_worker(
    kafka_settings: KafkaSettings, tmp_path: Path, codec: str, old_start: bytes
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = fleet_records(small_fleet(devices=40, days=20, seed=13), topics)
    half = len(records) // 2
    produce(kafka_settings, records[:half])

    old = old_codec_worker(kafka_settings, tmp_path / "w1", tmp_path / "old-codec", codec).start()
    try:
        old.wait_ready()
        wait_caught_up(kafka_settings)
    finally:
        old.stop()
    stored = latest_values(kafka_settings)
    assert stored
    assert all(value.startswith(old_start) for value in stored.values())  # the old worker wrote the old codec

    produce(kafka_settings, records[half:])
    new = Worker(kafka_settings, tmp_path / "w1", store="rocksdb", instance="w1").start()  # same store
    try:
        new.wait_ready()
        wait_caught_up(kafka_settings)
        assert "state_reset" not in new.metrics()  # every old value was read, none discarded
    finally:
        new.stop()

    values = latest_values(kafka_settings)
    updated = {k for k, v in values.items() if v != stored.get(k)}
    assert updated
    assert all(values[k].startswith(b"FPS\x03") for k in updated)  # rewritten packed on their next update
    replay = replay_from_scratch(kafka_settings)
    assert not state_differences(table_state(kafka_settings), replay.records)
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert {a["alert_id"] for a in alerts} == replay.alert_ids
    scores = [json.loads(m.value) for m in read_topic(kafka_settings, topics.scores)]
    assert score_keys(scores) == score_keys(replayed_scores(kafka_settings))
