"""Feature log: which scores are logged (pure rule), the worker emitting them, the ticket store keeping them."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta

import pytest
from pydantic import ValidationError

from fleetpulse.alerts.fleetlog import ComponentLabel, FleetLog, Outcome, combine, row_label, ticket_fact
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.audit import AuditActor, AuditContext
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    Component,
    FeatureLogReason,
    FeatureLogRecord,
    RiskScore,
    ScorerRole,
    StabilityHealth,
    decode,
    encode,
)
from fleetpulse.contract.v1 import FEATURE_LOG_MAX_FEATURES
from fleetpulse.models.registry import rule_scorers
from fleetpulse.streams.featurelog import log_reason, logged_values
from tests.alerts_support import make_inventory, store, store_url
from tests.unit.test_stream_processing import NOW, Table, inventory_raw, processor, report, report_raw

__all__ = ["store", "store_url"]  # fixtures
DAY0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def score(risk: float = 0.1, role: ScorerRole = ScorerRole.CHAMPION) -> RiskScore:
    return RiskScore(
        device_id="pc-1",
        component=Component.DISK,
        risk=risk,
        model_name="m",
        model_version="1",
        role=role,
        report_seq=1,
        collected_at=DAY0,
        scored_at=DAY0,
    )


@pytest.mark.parametrize(
    ("first", "above", "role", "expected"),
    [
        (True, False, ScorerRole.CHAMPION, FeatureLogReason.DAILY),
        (True, True, ScorerRole.CHAMPION, FeatureLogReason.DAILY),
        (False, True, ScorerRole.CHAMPION, FeatureLogReason.THRESHOLD),
        (False, False, ScorerRole.CHAMPION, None),
        (True, True, ScorerRole.CHALLENGER, None),
    ],
)
def test_log_reason(first: bool, above: bool, role: ScorerRole, expected: FeatureLogReason | None) -> None:
    assert log_reason(score(role=role), first, above) is expected


def record(day: datetime = DAY0, reason: FeatureLogReason = FeatureLogReason.DAILY, **kw: object) -> FeatureLogRecord:
    fields: dict[str, object] = {
        "device_id": "pc-1",
        "component": Component.DISK,
        "component_id": "s1",
        "hardware_model": "T14",
        "day": day.date(),
        "reason": reason,
        "features": {"media_errors": 3.0, "media_errors_delta_7d": 2.0},
        "risk": 0.2,
        "model_name": "m",
        "model_version": "1",
        "collected_at": day,
        "scored_at": day,
        "report_seq": 7,
    }
    return FeatureLogRecord.model_validate(fields | kw)


def test_record_is_bounded_and_finite() -> None:
    assert decode(encode(record()), FeatureLogRecord) == record()
    with pytest.raises(ValidationError):
        record(features={"x": float("nan")})
    with pytest.raises(ValidationError):
        record(features={f"f{i}": 1.0 for i in range(129)})
    with pytest.raises(ValidationError):
        record(features={"Name With Spaces; DROP": 1.0})
    with pytest.raises(ValidationError):
        FeatureLogRecord.model_validate(record().model_dump() | {"day": date(2026, 9, 30)})


def test_worker_logs_once_per_component_and_day_plus_every_threshold_crossing() -> None:
    table = Table("pc-1")
    proc = processor()
    day = NOW - timedelta(days=3)
    batch = [
        report_raw(report("pc-1", 1, realloc=0, at=day), offset=1),
        report_raw(report("pc-1", 2, realloc=0, at=day + timedelta(hours=5)), offset=2),  # event-free rescore later
        report_raw(report("pc-1", 3, realloc=80, at=day + timedelta(hours=6)), offset=3),  # event, above 0.5
        report_raw(report("pc-1", 4, realloc=90, at=day + timedelta(hours=7)), offset=4),  # above again
        report_raw(report("pc-1", 5, realloc=90, at=day + timedelta(days=1)), offset=5),  # next day
    ]
    result = table.run(proc, batch)
    logged = [(r.day, r.reason, r.report_seq) for r in result.features]
    assert logged == [
        (day.date(), FeatureLogReason.DAILY, 1),
        (day.date(), FeatureLogReason.THRESHOLD, 3),
        (day.date(), FeatureLogReason.THRESHOLD, 4),
        ((day + timedelta(days=1)).date(), FeatureLogReason.DAILY, 5),
    ]
    # a replay of the same day from scratch gives the same keys: the store keeps one daily row
    again = Table("pc-1").run(processor(), batch)
    assert [r.log_key() for r in again.features] == [r.log_key() for r in result.features]


def test_logged_features_are_the_scored_components_finite_features() -> None:
    table = Table("pc-1")
    table.run(processor(), [inventory_raw("pc-1")])
    result = table.run(processor(scorers=rule_scorers()), [report_raw(report("pc-1", 1, realloc=5), offset=1)])
    (disk,) = [r for r in result.features if r.component is Component.DISK]
    assert disk.component_id == "s1"
    assert disk.hardware_model == "T14"
    assert disk.features["smart_5"] == 5.0
    assert "media_errors" not in disk.features  # not reported by this drive: absent, not 0


@pytest.mark.parametrize("size", [0, 1, 47, FEATURE_LOG_MAX_FEATURES + 30])
def test_logged_values_are_the_first_finite_features_by_name(size: int) -> None:
    """Whatever order a feature dict comes in, and however often its name set repeats: the finite values as
    floats, sorted by name, at most FEATURE_LOG_MAX_FEATURES of them."""
    rng = random.Random(size)
    for _ in range(3):
        names = [f"f_{rng.randrange(10**6)}" for _ in range(size)]
        raw = {name: rng.choice([math.nan, math.inf, -math.inf, 3, 0.5, rng.random()]) for name in names}
        expected = dict(sorted((n, float(v)) for n, v in raw.items() if math.isfinite(v))[:FEATURE_LOG_MAX_FEATURES])
        for shuffled in (raw, dict(reversed(list(raw.items())))):
            logged = logged_values(shuffled)
            assert list(logged.items()) == list(expected.items())
            assert all(type(v) is float for v in logged.values())


def test_batch_boundaries_do_not_change_the_log() -> None:
    day = NOW - timedelta(days=3)
    reports = [report_raw(report("pc-1", i, realloc=10 * i, at=day + timedelta(hours=13 * i)), i) for i in range(1, 8)]
    whole = Table("pc-1").run(processor(), reports)
    split_table = Table("pc-1")
    parts = [split_table.run(processor(), [r]) for r in reports]
    assert [r.log_key() for r in whole.features] == [r.log_key() for p in parts for r in p.features]


def test_store_keeps_the_first_daily_and_the_first_threshold_row_of_a_day(store: TicketStore) -> None:
    log = FleetLog(store)
    daily = record()
    later_same_day = record(day=DAY0 + timedelta(hours=3), risk=0.3)
    crossing = record(day=DAY0 + timedelta(hours=4), reason=FeatureLogReason.THRESHOLD, risk=0.9)
    crossing_again = record(day=DAY0 + timedelta(hours=5), reason=FeatureLogReason.THRESHOLD, risk=0.95)
    assert log.record_features([daily, later_same_day, crossing, crossing_again]) == 2
    assert log.record_features([daily, crossing]) == 0  # redelivered
    assert log.feature_rows(Component.DISK) == []  # pc-1 is not in IT's register: never trained on
    TicketService(store, AlertSettings()).apply_inventory(make_inventory("pc-1"))
    rows = log.feature_rows(Component.DISK)
    assert [(r.reason, r.risk) for r in rows] == [("daily", 0.2), ("threshold", 0.9)]
    assert rows[0].features == {"media_errors": 3.0, "media_errors_delta_7d": 2.0}
    assert log.prune_features(DAY0 + timedelta(days=731), timedelta(days=730)) == 2
    assert log.feature_rows(Component.DISK) == []


def test_one_pc_scored_above_threshold_every_minute_adds_two_rows_a_day_not_thousands(store: TicketStore) -> None:
    """The attack: an enrolled PC reports an absurd value with a health event every minute, so every report is
    scored at raise level; each score used to be a row of its own (1,440 a day per component, ~3 KB each to
    read back for training)."""
    day = NOW - timedelta(days=2)
    crash = StabilityHealth(crashes=1)  # a health event: scored at once, at most once a minute of its clock
    minutes = [
        report_raw(
            report("pc-1", seq, realloc=90, at=day + timedelta(minutes=seq)).model_copy(update={"stability": crash})
        )
        for seq in range(1, 600)
    ]
    table, proc = Table("pc-1"), processor()
    emitted = [r for i in range(0, len(minutes), 200) for r in table.run(proc, minutes[i : i + 200]).features]
    assert len(emitted) > 500  # the worker still reports each score: the store bounds what is kept
    assert FleetLog(store).record_features(emitted) == 2
    TicketService(store, AlertSettings()).apply_inventory(make_inventory("pc-1"))
    rows = FleetLog(store).feature_rows(Component.DISK)
    assert [(r.reason, r.report_seq) for r in rows] == [("daily", 1), ("threshold", 2)]


def test_failure_report_is_stored_once_and_audited(store: TicketStore) -> None:
    log = FleetLog(store)
    context = AuditContext(AuditActor.local("fm", "fleet_manager"), "req-1", "10.0.0.1")
    args = ("pc-1", Component.DISK, "s1", date(2026, 10, 3), "failed", "died at boot", context, DAY0)
    assert log.record_failure(*args) is True
    assert log.record_failure(*args) is False
    trail = store.audit.records(kind="label.failure_report")
    assert len(trail) == 1
    assert trail[0].payload["device_id"] == "pc-1"
    assert trail[0].actor_name == "fm"
    assert log.outcomes() == [Outcome("pc-1", "disk", "s1", date(2026, 10, 3), "failure")]


def test_ticket_outcomes_map_to_facts() -> None:
    assert ticket_fact("done", "confirmed_fault") == "failure"
    assert ticket_fact("dismissed", "false_alarm") == "healthy"
    assert ticket_fact("done", "no_fault_found") == "healthy"
    assert ticket_fact("open", None) == "open"
    assert ticket_fact("ordered", None) == "open"
    assert ticket_fact("done", None) is None


D = date(2026, 6, 1)


@pytest.mark.parametrize(
    ("day", "label", "retired", "expected"),
    [
        (D, ComponentLabel(failed_on=D + timedelta(days=10)), None, 1.0),  # fails within 30 days
        (D, ComponentLabel(failed_on=D + timedelta(days=40)), None, 0.0),  # fails later: healthy in the window
        (D + timedelta(days=11), ComponentLabel(failed_on=D + timedelta(days=10)), None, None),  # after the failure
        (D, None, None, 0.0),  # nothing recorded: healthy through labelled_through
        (D + timedelta(days=80), None, None, None),  # window runs past labelled_through: censored
        (D, ComponentLabel(censored_on=D + timedelta(days=5)), None, None),  # open ticket: censored
        (D, ComponentLabel(censored_on=D + timedelta(days=5), failed_on=D + timedelta(days=9)), None, 1.0),
        (D, None, D + timedelta(days=20), None),  # retired inside the window: censored, not a failure
        (D, ComponentLabel(failed_on=D + timedelta(days=25)), D + timedelta(days=20), None),  # retired first
    ],
)
def test_row_label_censoring(
    day: date, label: ComponentLabel | None, retired: date | None, expected: float | None
) -> None:
    assert row_label(day, 30, label, retired, labelled_through=D + timedelta(days=90)) == expected


def test_combine_takes_earliest_failure_and_censoring() -> None:
    facts = [
        Outcome("pc-1", "disk", "s1", D + timedelta(days=9), "failure"),
        Outcome("pc-1", "disk", "s1", D + timedelta(days=3), "failure"),
        Outcome("pc-1", "disk", "s1", D + timedelta(days=1), "healthy"),
        Outcome("pc-2", "battery", "", D, "open"),
        Outcome("pc-3", "device", "", D, "retired"),
    ]
    labels, retired = combine(facts)
    assert labels[("pc-1", "disk", "s1")] == ComponentLabel(failed_on=D + timedelta(days=3))
    assert labels[("pc-2", "battery", "")] == ComponentLabel(censored_on=D)
    assert retired == {"pc-3": D}
