"""The Faust wrapper's periodic jobs, on an app that never connects (memory store, no Kafka)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from faust.types import TP

from fleetpulse.compat import UTC
from fleetpulse.contract import Component, RiskScore, encode
from fleetpulse.models.registry import ScorerSet, rule_scorers
from fleetpulse.models.state import DeviceState
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import create_app, serving_policy, serving_summary, tune_gc
from fleetpulse.streams.metrics import PipelineMetrics
from fleetpulse.streams.processing import DeviceRecord
from fleetpulse.streams.sinks import NullSink

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class RecordingBaselines:
    """A scorer that only records what its baseline refit was given."""

    name = "recording"
    version = "1"
    component = Component.DEVICE

    def __init__(self) -> None:
        self.fitted: list[str] = []

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        return []

    def fit_baseline(self, states: Sequence[DeviceState]) -> None:
        self.fitted = [s.device_id for s in states]


def test_baseline_refit_and_drift_read_the_encoded_recent_states(tmp_path: Path) -> None:
    settings = ServerSettings.model_validate(
        {"streams": {"store": "memory", "data_dir": tmp_path, "tsdb": {"kind": "none"}}}
    )
    recording = RecordingBaselines()
    scorers = ScorerSet(champions=[*rule_scorers().champions, recording])
    app = create_app(settings, scorers=scorers, sink=NullSink())
    pipeline = app.fleetpulse  # type: ignore[attr-defined]
    for n in range(3):
        pipeline.recent.append(DeviceRecord(state=DeviceState(device_id=f"dev-{n}")).to_bytes())
    score = RiskScore(
        device_id="dev-0",
        component=Component.DISK,
        risk=0.1,
        model_name="m",
        model_version="1",
        report_seq=0,
        collected_at=NOW,
        scored_at=NOW,
    )
    pipeline.recent_scores.append(encode(score))

    pipeline.refit_baselines()
    asyncio.run(pipeline.report_drift())

    assert recording.fitted == ["dev-0", "dev-1", "dev-2"]


def test_gc_pauses_are_counted_per_generation() -> None:
    metrics = PipelineMetrics()
    metrics.watch_gc()
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(metrics._on_gc)
    assert b'fleetpulse_stream_gc_pause_seconds_total{generation="2"}' in metrics.exposition()


class SuggestingDiskScorer(RecordingBaselines):
    """A champion with a stored operating point, like a trained disk model."""

    component = Component.DISK

    def alert_thresholds(self, cap: str) -> tuple[float, float]:
        return (0.15, 0.075)


def test_the_worker_sets_young_and_middle_collector_thresholds_from_its_settings() -> None:
    streams = ServerSettings().streams
    before = gc.get_threshold()
    try:
        tune_gc(streams)
        assert gc.get_threshold() == (10_000, 1000, before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serving_policy_takes_the_champions_operating_point_unless_configured() -> None:
    scorers = ScorerSet(champions=[SuggestingDiskScorer()])
    served = serving_policy(ServerSettings(), scorers)
    assert served.thresholds(Component.DISK).raise_threshold == 0.15
    assert served.thresholds(Component.BATTERY).raise_threshold == 0.5

    configured = ServerSettings.model_validate(
        {"alerts": {"policy": {"components": {"disk": {"raise_threshold": 0.4, "clear_threshold": 0.2}}}}}
    )
    assert serving_policy(configured, scorers).thresholds(Component.DISK).raise_threshold == 0.4


def test_serving_summary_names_scorers_and_thresholds(tmp_path: Path) -> None:
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path}})
    app = create_app(settings, scorers=ScorerSet(champions=[SuggestingDiskScorer()]), sink=NullSink())
    summary = serving_summary(app.fleetpulse.processor)  # type: ignore[attr-defined]
    assert summary["champions"] == ["recording:1"]
    assert summary["thresholds"]["disk"] == [0.15, 0.075]


class FakeConsumer:
    """Faust's consumer as far as the health check reads it."""

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self._committed_offset: dict[TP, int | None] = {tp: None}

    def assignment(self) -> set[TP]:
        return {self.tp}

    def highwater(self, tp: TP) -> int:
        return 100


class FakeApp:
    rebalancing = False

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


def test_health_reports_a_stall_when_commits_stop_behind_processed_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServerSettings.model_validate(
        {"streams": {"store": "memory", "data_dir": tmp_path, "commit_stall_s": 60}}
    )
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    tp = TP(pipeline.topics.health, 3)
    consumer = FakeConsumer(tp)
    pipeline.app = FakeApp(consumer)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    pipeline.positions[(tp.topic, tp.partition)] = 100
    consumer._committed_offset[tp] = 40
    assert pipeline.health()["status"] == "ok"  # uncommitted work, but the clock only starts now
    clock[0] += 30
    consumer._committed_offset[tp] = 80  # commits advance: not stalled
    assert pipeline.health()["status"] == "ok"
    clock[0] += 59
    assert pipeline.health()["status"] == "ok"
    clock[0] += 2
    health = pipeline.health()
    assert health["status"] == "stalled"
    assert health["uncommitted_partitions"] == [f"{tp.topic}/3"]

    consumer._committed_offset[tp] = 100  # everything committed: healthy again
    assert pipeline.health()["status"] == "ok"


def test_commit_age_is_exported_for_the_commit_stall_alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": tmp_path}})
    pipeline = create_app(settings, scorers=rule_scorers(), sink=NullSink()).fleetpulse  # type: ignore[attr-defined]
    tp = TP(pipeline.topics.health, 0)
    consumer = FakeConsumer(tp)
    pipeline.app = FakeApp(consumer)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def commit_age() -> float | None:
        value: float | None = pipeline.metrics.registry.get_sample_value("fleetpulse_stream_commit_age_seconds")
        return value

    pipeline.positions[(tp.topic, tp.partition)] = 100
    consumer._committed_offset[tp] = 40
    asyncio.run(pipeline.report_stats())
    assert commit_age() == 0.0
    clock[0] += 300
    asyncio.run(pipeline.report_stats())
    assert commit_age() == 300.0
    consumer._committed_offset[tp] = 100
    asyncio.run(pipeline.report_stats())
    assert commit_age() == 0.0


class FailingScorer(RecordingBaselines):
    """A champion raising on every call, as a model that cannot score does."""

    name = "broken"

    def score_batch(self, states: Sequence[DeviceState], now: datetime) -> list[RiskScore]:
        raise ValueError("max() arg is an empty sequence")


def test_a_failing_scorer_is_counted_per_model_for_the_champion_failing_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_stream_partitions import NOW as RUN_NOW
    from tests.unit.test_stream_partitions import VICTIM_KEY, Worker, enrolment, signed

    worker = Worker(monkeypatch)
    scorers = rule_scorers()
    scorers.champions.append(FailingScorer())
    worker.pipeline.processor.scorers = scorers
    worker.send(enrolment(VICTIM_KEY))
    worker.send(signed(1, RUN_NOW, VICTIM_KEY, realloc=50))
    labels = {"component": "device", "role": "champion", "model_name": "broken", "model_version": "1"}
    registry = worker.pipeline.metrics.registry
    assert registry.get_sample_value("fleetpulse_stream_scorer_errors_total", labels) == 1.0
    assert registry.get_sample_value("fleetpulse_stream_scores_total") == len(
        worker.produced[worker.pipeline.topics.scores]
    )
    assert worker.produced[worker.pipeline.topics.scores], "the other scorers' scores are published"
