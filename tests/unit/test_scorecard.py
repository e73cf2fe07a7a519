"""Demo scorecard: caught, missed, false alarms and lead time against ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta

from fleetpulse.compat import UTC
from fleetpulse.contract import Alert, AlertState, Component
from fleetpulse.scorecard import Failure, first_raises, score

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def alert(device: str, component: Component, day: int, state: AlertState = AlertState.RAISED) -> Alert:
    return Alert(
        alert_id=f"{device}:{component}:{day}",
        device_id=device,
        component=component,
        state=state,
        risk=0.9,
        model_name="rule",
        model_version="1",
        at=T0 + timedelta(days=day),
        report_seq=day,
    )


def test_caught_missed_late_and_false_alarms() -> None:
    alerts = [
        alert("a", Component.DISK, 10),
        alert("a", Component.DISK, 12),  # replayed/second raise: the first one counts
        alert("b", Component.DISK, 40),  # after the failure: not caught
        alert("c", Component.DISK, 5),  # never failed
        alert("c", Component.DISK, 6, AlertState.CLEARED),
    ]
    failures = [
        Failure("a", Component.DISK, T0 + timedelta(days=30), predictable=True),
        Failure("b", Component.DISK, T0 + timedelta(days=35), predictable=True),
        Failure("d", Component.DISK, T0 + timedelta(days=20), predictable=False),
    ]
    (row,) = score(failures, first_raises(alerts))
    assert (row.failures, row.predictable_failures, row.caught, row.caught_predictable) == (3, 2, 1, 1)
    assert (row.alerted_components, row.false_alarms) == (3, 1)
    assert row.lead_days == [20.0]
    assert row.recall_predictable == 0.5
    assert row.precision == 2 / 3


def test_components_without_alerts_still_listed() -> None:
    rows = score([Failure("a", Component.THERMAL, T0, predictable=True)], {})
    assert [(r.component, r.caught, r.precision, r.median_lead_days) for r in rows] == [
        (Component.THERMAL, 0, None, None)
    ]
