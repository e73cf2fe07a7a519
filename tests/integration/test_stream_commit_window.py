"""Kill -9 in the window between the worker's state batch writes and its offset commit.

The worker writes a batch's device states (one RocksDB write batch and one changelog batch
per partition) before Faust commits the batch's input offsets. A worker killed inside that
window restarts from the old offsets with the new states: every replayed report must be
recognised as already applied, so the outcome equals one clean run (same table, each
score once, the same alerts).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams.kafka_admin import consumer_lag
from tests.integration.stream_support import (
    Worker,
    create_topics,
    fleet_records,
    group_id,
    produce,
    read_topic,
    replay_from_scratch,
    score_key,
    small_fleet,
    state_differences,
    table_state,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NEVER_COMMIT_S = 3600.0
"""A commit interval longer than the test: every state write happens before any offset commit."""


def test_kill_9_after_state_batches_before_offset_commit_changes_no_outcome(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(prefix=kafka_settings.topic_prefix)
    create_topics(kafka_settings)
    records = fleet_records(small_fleet(devices=60, days=20, seed=13), topics)
    produce(kafka_settings, records)
    replay = replay_from_scratch(kafka_settings)

    worker = Worker(kafka_settings, tmp_path / "w1", commit_interval_s=NEVER_COMMIT_S).start()
    try:
        worker.wait_ready()
        worker.wait_events(len(records))
        deadline = time.monotonic() + 30
        while state_differences(table_state(kafka_settings), replay.records) and time.monotonic() < deadline:
            time.sleep(0.5)  # the last changelog batches are acknowledged after the events are counted
        # inside the window: every state is written (store and changelog), no input offset is committed
        assert not state_differences(table_state(kafka_settings), replay.records)
        assert asyncio.run(consumer_lag(kafka_settings, group_id(kafka_settings))) == len(records)
        worker.kill9()
        restarted = Worker(kafka_settings, tmp_path / "w1", web_port=worker.web_port).start()
        try:
            restarted.wait_ready()
            wait_caught_up(kafka_settings)
            replayed = restarted.health() or {}
        finally:
            restarted.stop()
    finally:
        worker.stop()

    assert int(replayed.get("events_total", 0)) == len(records), "the restart re-read every uncommitted record"
    assert not state_differences(table_state(kafka_settings), replay.records)
    scores = Counter(score_key(json.loads(m.value)) for m in read_topic(kafka_settings, topics.scores))
    assert scores == replay.scores  # each score once: the replayed reports scored nothing again
    alerts = [json.loads(m.value) for m in read_topic(kafka_settings, topics.alerts)]
    assert {a["alert_id"] for a in alerts} == replay.alert_ids
    assert len(alerts) == len(replay.alert_ids)
    dead = Counter(json.loads(m.value)["error_kind"] for m in read_topic(kafka_settings, topics.dead_letter))
    replayed_kinds = {"duplicate", "stale_replay"}
    assert sum(n for kind, n in dead.items() if kind not in replayed_kinds) == replay.dead_letters
